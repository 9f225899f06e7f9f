// sidecar-supervisor-client: launch, attach to and control a sidecar-supervisor daemon.
//
// It speaks the JSON-lines protocol of the daemon's control socket (<state dir>/control.sock,
// see docs/control.md): one request per line {"id", "cmd", "names"}, one reply per line
// {"id", "ok", "result" | "error"}, and after "subscribe" the events {"event", "sidecar", ...}.
// Zero dependencies; Node >= 18.
//
// Unix socket paths are limited (107 bytes on Linux, 103 on macOS): give the daemon a state dir
// with a short path.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { EventEmitter, on } from 'node:events';

export const EXIT_LOCKED = 75; // `supervisor run`: another daemon holds this state dir
export const SOCKET_NAME = 'control.sock';
const PID_NAME = 'supervisor.pid';
const NO_PID_FILE_GRACE_MS = 1000; // a daemon that just took the lock writes its PID file soon

export class SupervisorError extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.name = 'SupervisorError';
    // The daemon's error codes (unknown_sidecar, bad_request, shutting_down, busy, forbidden,
    // internal, ...) and ours: closed, timeout, failed, launch_failed.
    this.code = code;
    Object.assign(this, details);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const asNames = (names) => (names == null ? [] : typeof names === 'string' ? [names] : [...names]);

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

function readPid(stateDir) {
  try {
    const record = JSON.parse(fs.readFileSync(path.join(stateDir, PID_NAME), 'utf8'));
    return Number.isInteger(record.pid) ? record.pid : null;
  } catch {
    return null;
  }
}

function lastLine(file) {
  try {
    const lines = fs.readFileSync(file, 'utf8').trimEnd().split('\n');
    return lines[lines.length - 1] || '';
  } catch {
    return '';
  }
}

// One connection to a daemon's control socket. Keeps `states` (sidecar name -> record) current
// once subscribed; emits 'event' for each event and 'close' when the connection ends.
export class Connection extends EventEmitter {
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
            resolve(new Connection(socket));
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
    this.states = new Map();
    this.daemon = null; // the "supervisor" part of the last status document
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
      if (message === null || typeof message !== 'object') continue;
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
    const list = asNames(names);
    const message = list.length ? { id, cmd, names: list } : { id, cmd };
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

  close() {
    this.socket.end();
  }
}

// Resolve once every one of `names` is ready on `source` (a Connection or a Supervisor: it has
// `states` and emits 'event'); with `notPid`, ready as another process than that one.
function waitReady(source, names, { timeoutMs = 60000, notPid = null, survives = false } = {}) {
  return new Promise((resolve, reject) => {
    const wanted = () => (names.length ? names : [...source.states.keys()]);
    const check = () => {
      const records = [];
      for (const name of wanted()) {
        const record = source.states.get(name);
        if (!record) {
          const known = [...source.states.keys()];
          return finish(
            new SupervisorError('unknown_sidecar', `no sidecar named ${name}`, { names: [name], known }),
          );
        }
        if (record.state === 'failed' || record.state === 'exited') {
          return finish(
            new SupervisorError('failed', `${name} is ${record.state}: ${record.reason}`, {
              sidecar: name,
              state: record.state,
              reason: record.reason ?? null,
            }),
          );
        }
        if (record.state !== 'ready' || record.pid === notPid) return undefined;
        records.push(record);
      }
      return finish(null, records);
    };
    // A Supervisor that takes over survives a lost daemon: only its final 'close' ends the wait.
    const onClose = () => finish(new SupervisorError('closed', 'the supervisor went away'));
    const timer = setTimeout(() => {
      const pending = wanted().filter((n) => source.states.get(n)?.state !== 'ready');
      finish(new SupervisorError('timeout', `not ready after ${timeoutMs} ms: ${pending.join(', ')}`, { pending }));
    }, timeoutMs);
    const finish = (err, records) => {
      clearTimeout(timer);
      source.removeListener('event', check);
      source.removeListener('daemon', check);
      source.removeListener('close', onClose);
      if (err) reject(err);
      else resolve(records);
      return true;
    };
    source.on('event', check);
    if (survives) source.on('daemon', check);
    source.on('close', onClose);
    check();
  });
}

function supervisorArgs({ command, config, stateDir, exitWithParent, args }) {
  const run = ['run', '--state-dir', stateDir, '--log-format', 'json'];
  if (config) run.push('-c', config);
  if (exitWithParent) run.push('--exit-with-parent');
  return [...command.slice(1), ...run, ...args];
}

// Launch `supervisor run` for this state dir, or attach to the daemon that holds it (our launch
// exits 75). Resolves { connection, child } with a subscribed connection; child is null when
// attached.
async function launchOrAttach(options, deadline) {
  const { command, stateDir, logFile, env } = options;
  const socketPath = path.join(stateDir, SOCKET_NAME);
  while (Date.now() < deadline) {
    fs.mkdirSync(path.dirname(logFile), { recursive: true });
    const log = fs.openSync(logFile, 'a');
    const child = spawn(command[0], supervisorArgs(options), { stdio: ['ignore', 'ignore', log], env });
    fs.closeSync(log);
    let exitCode = null;
    const exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve((exitCode = code === null ? signal : code)));
      child.once('error', (err) => resolve((exitCode = err.code)));
    });
    // Until our daemon answers on the socket, or exits.
    while (exitCode === null && Date.now() < deadline) {
      let connection;
      try {
        connection = await Connection.connect(socketPath, { deadline, keepTrying: () => exitCode === null });
      } catch (err) {
        if (exitCode !== null) break;
        child.kill('SIGTERM');
        throw new SupervisorError('timeout', `supervisor run (pid ${child.pid}) does not listen: ${err.message}`);
      }
      const doc = await connection.subscribe().catch(() => null);
      if (doc && doc.supervisor.pid === child.pid) return { connection, child };
      connection.close(); // a previous daemon's socket: ours is not listening yet
      await sleep(20);
    }
    await exited;
    if (exitCode !== EXIT_LOCKED) {
      const last = lastLine(logFile);
      throw new SupervisorError('launch_failed', `supervisor run exited with ${exitCode}; see ${logFile}: ${last}`, {
        exitCode,
        logFile,
      });
    }
    // Another daemon holds the state dir: use it, unless it is on its way out (the daemon of an
    // instance that was killed), in which case launch again once it is gone.
    const holder = readPid(stateDir);
    const since = Date.now();
    const keepTrying = () => (holder !== null ? alive(holder) : Date.now() - since < NO_PID_FILE_GRACE_MS);
    const other = await Connection.connect(socketPath, { deadline, keepTrying }).catch(() => null);
    if (other) {
      const doc = await other.subscribe().catch(() => null);
      if (doc && !doc.supervisor.shutting_down) return { connection: other, child: null };
      if (!other.closed) await new Promise((resolve) => other.once('close', resolve));
    } else {
      await sleep(20);
    }
  }
  throw new SupervisorError('timeout', `no supervisor for ${stateDir} within the time allowed`);
}

// An app's handle on its daemon: launched or attached, and with `takeOver` (the default) kept
// alive: when the daemon goes away (the instance that launched it died, and with it, by
// --exit-with-parent, the daemon), this instance launches it again. When several instances
// survive, one launch wins the state dir's lock and the others exit 75 and attach to it.
//
// Events: 'event' (every daemon event), 'daemon' ({ pid, launched, takeOver }: a daemon was
// attached or launched after a loss), 'close' (err or undefined: no daemon any more, for good).
export class Supervisor extends EventEmitter {
  static async launch({
    command = ['supervisor'],
    config = null,
    stateDir,
    logFile = stateDir ? path.join(path.dirname(stateDir), 'supervisor.log') : undefined,
    args = [],
    env = process.env,
    exitWithParent = true,
    takeOver = true,
    timeoutMs = 60000,
  } = {}) {
    if (!stateDir) throw new SupervisorError('bad_request', 'stateDir is required');
    const options = {
      command,
      config: config && path.resolve(config),
      stateDir: path.resolve(stateDir),
      logFile: path.resolve(logFile),
      args,
      env,
      exitWithParent,
      takeOver,
      timeoutMs,
    };
    const { connection, child } = await launchOrAttach(options, Date.now() + timeoutMs);
    return new Supervisor(options, connection, child);
  }

  // Attach to the daemon of `stateDir`, which must be running (no launch, no take-over).
  static async attach({ stateDir, timeoutMs = 10000 } = {}) {
    const socketPath = path.join(path.resolve(stateDir), SOCKET_NAME);
    const holder = readPid(stateDir);
    const connection = await Connection.connect(socketPath, {
      deadline: Date.now() + timeoutMs,
      keepTrying: () => holder !== null && alive(holder),
    }).catch((err) => {
      throw new SupervisorError('not_running', `no supervisor is running for ${stateDir} (${err.code})`);
    });
    await connection.subscribe();
    return new Supervisor({ stateDir, takeOver: false }, connection, null);
  }

  constructor(options, connection, child) {
    super();
    this.options = options;
    this.closed = false;
    this._takingOver = null; // the promise of a take-over under way
    this._use(connection, child);
  }

  _use(connection, child) {
    this.connection = connection;
    this.child = child; // the daemon process when this instance launched it, else null
    connection.on('event', (event) => this.emit('event', event));
    connection.once('close', () => this._lost(connection));
  }

  _lost(connection) {
    if (connection !== this.connection || this.closed) return;
    if (!this.options.takeOver) {
      this.closed = true;
      this.emit('close');
      return;
    }
    this._takingOver = launchOrAttach(this.options, Date.now() + this.options.timeoutMs).then(
      ({ connection: next, child }) => {
        this._takingOver = null;
        if (this.closed) {
          next.close();
          if (child) child.kill('SIGTERM');
          return;
        }
        this._use(next, child);
        this.emit('daemon', { pid: this.daemon.pid, launched: child !== null, takeOver: true });
      },
      (err) => {
        this._takingOver = null;
        this.closed = true;
        this.emit('close', err);
      },
    );
  }

  get states() {
    return this.connection.states;
  }

  // The daemon's record: { pid, state_dir, config, shutting_down, ... }.
  get daemon() {
    return this.connection.daemon;
  }

  get launched() {
    return this.child !== null;
  }

  async _current() {
    if (this._takingOver) await this._takingOver;
    if (this.closed) throw new SupervisorError('closed', 'the supervisor handle is closed');
    return this.connection;
  }

  async status(names = []) {
    return (await this._current()).status(asNames(names));
  }

  async start(names) {
    return (await this._current()).start(asNames(names));
  }

  async stop(names) {
    return (await this._current()).stop(asNames(names));
  }

  async restart(names) {
    return (await this._current()).restart(asNames(names));
  }

  // Resolve with the records of `names` (default: every sidecar) once all are ready; reject with
  // code 'failed' when one is failed or exited, 'timeout' after timeoutMs, 'unknown_sidecar'.
  // With `notPid`: ready as another process than that one (after a restart).
  async wait(names = [], { timeoutMs = 60000, notPid = null } = {}) {
    await this._current();
    return waitReady(this, asNames(names), { timeoutMs, notPid, survives: this.options.takeOver });
  }

  // The URL of a sidecar as last known (http://host:port/path, tcp://host:port), or null.
  url(name) {
    return this.states.get(name)?.url ?? null;
  }

  // Every event, as an async iterator (until `signal` aborts or the handle closes).
  async *events({ signal } = {}) {
    const controller = new AbortController();
    const stop = () => controller.abort();
    signal?.addEventListener('abort', stop, { once: true });
    this.once('close', stop);
    try {
      for await (const [event] of on(this, 'event', { signal: controller.signal })) yield event;
    } catch (err) {
      if (err.name !== 'AbortError') throw err;
    } finally {
      signal?.removeEventListener('abort', stop);
      this.removeListener('close', stop);
    }
  }

  // Close this handle (no more take-overs). With stopDaemon (the default), a daemon this
  // instance launched is stopped (SIGTERM, and its sidecars with it) and waited for.
  async close({ stopDaemon = true } = {}) {
    if (this.closed) return;
    this.closed = true;
    const child = this.child;
    this.connection.close();
    if (stopDaemon && child && child.exitCode === null && child.signalCode === null) {
      const gone = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await gone;
    }
    this.emit('close');
  }
}

export function launch(options) {
  return Supervisor.launch(options);
}

export function attach(options) {
  return Supervisor.attach(options);
}
