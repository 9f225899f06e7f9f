'use strict';
// A zero-dependency client of sidecar-supervisor's control socket (<state dir>/control.sock).
//
// Copy this file into an Electron, Tauri (sidecar) or plain Node.js app. It speaks the JSON-lines
// protocol of docs/control.md: one request per line {"id", "cmd", "names"}, one reply per line
// {"id", "ok", "result" | "error"}, and after "subscribe" the events {"event", "sidecar", ...}.
//
//   const { startSupervisor } = require('./supervisor-client');
//   const sup = await startSupervisor({ config, stateDir });   // launches or attaches
//   const dashboard = await sup.waitReady('dashboard');         // { url, pid, ... }
//   await sup.restart(['dashboard']);
//
// Unix sockets: the path must be shorter than 104 (macOS) / 108 (Linux) bytes, so give the
// daemon a state dir with a short path.

const fs = require('fs');
const net = require('net');
const path = require('path');
const { spawn } = require('child_process');
const { EventEmitter } = require('events');

const EXIT_LOCKED = 75; // another daemon holds this state dir

class SupervisorError extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.name = 'SupervisorError';
    this.code = code; // e.g. "unknown_sidecar", "shutting_down", "closed", "timeout", "failed"
    Object.assign(this, details);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class SupervisorClient extends EventEmitter {
  // Connect, retrying while the socket is not there yet (the daemon is starting) and
  // `keepTrying()` says so, until `deadline` (a Date.now() instant).
  static async connect(socketPath, { deadline = Date.now() + 10000, keepTrying = () => true } = {}) {
    let delay = 5;
    for (;;) {
      try {
        return await new Promise((resolve, reject) => {
          const socket = net.createConnection(socketPath);
          socket.once('connect', () => {
            socket.removeListener('error', reject);
            resolve(new SupervisorClient(socket));
          });
          socket.once('error', reject);
        });
      } catch (err) {
        const retriable = err.code === 'ENOENT' || err.code === 'ECONNREFUSED';
        if (!retriable || !keepTrying() || Date.now() >= deadline) throw err;
        await sleep(delay);
        delay = Math.min(delay * 2, 100);
      }
    }
  }

  constructor(socket) {
    super();
    this.socket = socket;
    this.states = new Map(); // sidecar name -> its record, kept current once subscribed
    this.daemon = null; // the "supervisor" part of the last status
    this.closed = false;
    this._pending = new Map();
    this._nextId = 1;
    this._buffer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => this._data(chunk));
    socket.on('error', () => {}); // 'close' follows and says it all
    socket.on('close', () => {
      this.closed = true;
      for (const { reject } of this._pending.values()) {
        reject(new SupervisorError('closed', 'the supervisor closed the connection'));
      }
      this._pending.clear();
      this.emit('close');
    });
  }

  _data(chunk) {
    this._buffer += chunk;
    let newline;
    while ((newline = this._buffer.indexOf('\n')) >= 0) {
      const line = this._buffer.slice(0, newline);
      this._buffer = this._buffer.slice(newline + 1);
      let message;
      try {
        message = JSON.parse(line);
      } catch {
        continue;
      }
      if ('id' in message && this._pending.has(message.id)) {
        const { resolve, reject } = this._pending.get(message.id);
        this._pending.delete(message.id);
        if (message.ok) resolve(message.result);
        else {
          const { code, message: text, ...details } = message.error || {};
          reject(new SupervisorError(code, text, details));
        }
      } else if ('event' in message) {
        this._event(message);
      }
    }
  }

  _event(event) {
    if (event.sidecar) {
      const known = this.states.get(event.sidecar) || { name: event.sidecar };
      const update = { state: event.state, pid: event.pid };
      for (const key of ['url', 'reason']) if (key in event) update[key] = event[key];
      this.states.set(event.sidecar, { ...known, ...update });
    }
    this.emit('event', event);
  }

  _remember(doc) {
    this.daemon = doc.supervisor;
    for (const sidecar of doc.sidecars) this.states.set(sidecar.name, sidecar);
    return doc;
  }

  request(cmd, names = []) {
    if (this.closed) return Promise.reject(new SupervisorError('closed', 'not connected'));
    const id = this._nextId++;
    const message = names.length ? { id, cmd, names } : { id, cmd };
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject });
      this.socket.write(JSON.stringify(message) + '\n');
    });
  }

  async status(names = []) {
    return this._remember(await this.request('status', names));
  }

  // Every later state change arrives as an 'event' (and keeps `states` current).
  async subscribe(names = []) {
    return this._remember(await this.request('subscribe', names));
  }

  start(names) {
    return this.request('start', names);
  }

  stop(names) {
    return this.request('stop', names);
  }

  restart(names) {
    return this.request('restart', names);
  }

  // Resolve with the sidecar's record once it is ready (and, with `notPid`, is another process
  // than that one); reject when it is failed or exited, or after `timeoutMs`. Subscribe first.
  waitReady(name, { timeoutMs = 60000, notPid = null } = {}) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const record = this.states.get(name);
        if (!record) return finish(new SupervisorError('unknown_sidecar', `no sidecar ${name}`));
        if (record.state === 'ready' && record.pid !== notPid) return finish(null, record);
        if (record.state === 'failed' || record.state === 'exited') {
          return finish(new SupervisorError('failed', `${name} is ${record.state}: ${record.reason}`));
        }
        return undefined;
      };
      const onClose = () => finish(new SupervisorError('closed', 'the supervisor went away'));
      const timer = setTimeout(
        () => finish(new SupervisorError('timeout', `${name} not ready after ${timeoutMs} ms`)),
        timeoutMs,
      );
      const finish = (err, record) => {
        clearTimeout(timer);
        this.removeListener('event', check);
        this.removeListener('close', onClose);
        if (err) reject(err);
        else resolve(record);
        return true;
      };
      this.on('event', check);
      this.on('close', onClose);
      check();
    });
  }

  close() {
    this.socket.end();
  }
}

// Launch `supervisor run --exit-with-parent` for this app (or attach to the daemon another
// instance of the app already runs on the same state dir) and return a subscribed client.
//
//   command  argv of the supervisor executable (default ["supervisor"])
//   config, stateDir   its config file and state dir
//   logFile  where the daemon's own log (JSON lines) goes; a file, so that it is always drained
//
// The client's `child` is the daemon process when this app launched it, else null.
async function startSupervisor({
  command = ['supervisor'],
  config,
  stateDir,
  logFile = path.join(path.dirname(stateDir), 'supervisor.log'),
  timeoutMs = 60000,
  env = process.env,
} = {}) {
  const socketPath = path.join(stateDir, 'control.sock');
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const log = fs.openSync(logFile, 'a');
    const args = ['run', '--exit-with-parent', '-c', config, '--state-dir', stateDir];
    const child = spawn(command[0], [...command.slice(1), ...args, '--log-format', 'json'], {
      stdio: ['ignore', 'ignore', log],
      env,
    });
    fs.closeSync(log);
    let exitCode = null;
    const exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve((exitCode = code === null ? signal : code)));
      child.once('error', (err) => resolve((exitCode = err.code)));
    });
    // Until our daemon answers on the socket, or exits.
    let client = null;
    while (exitCode === null && Date.now() < deadline) {
      try {
        client = await SupervisorClient.connect(socketPath, {
          deadline,
          keepTrying: () => exitCode === null,
        });
      } catch (err) {
        if (exitCode !== null) break;
        throw err;
      }
      const doc = await client.subscribe().catch(() => null);
      if (doc && doc.supervisor.pid === child.pid) {
        client.child = child;
        return client;
      }
      client.close(); // a previous daemon's socket: ours is not listening yet
      client = null;
      await sleep(20);
    }
    await exited;
    if (exitCode !== EXIT_LOCKED) {
      throw new SupervisorError('exited', `supervisor run exited with ${exitCode}; see ${logFile}`);
    }
    // Another daemon holds the state dir: use it, unless it is on its way out (the daemon of
    // an instance of ours that was killed), in which case launch again once it is gone.
    const other = await SupervisorClient.connect(socketPath, { deadline }).catch(() => null);
    if (other) {
      const doc = await other.subscribe().catch(() => null);
      if (doc && !doc.supervisor.shutting_down) {
        other.child = null;
        return other;
      }
      if (!other.closed) await new Promise((resolve) => other.once('close', resolve));
    } else {
      await sleep(50);
    }
  }
  throw new SupervisorError('timeout', `no supervisor for ${stateDir} within ${timeoutMs} ms`);
}

module.exports = { SupervisorClient, SupervisorError, startSupervisor, EXIT_LOCKED };
