// Test helpers: the real daemon, free ports, short temporary state dirs, instance processes.
//
// SUPERVISOR_COMMAND (JSON argv) says how to run `supervisor`; by default the repository's
// .venv, else `python3 -m supervisor`. The demo sidecar runs with the same Python.

import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..', '..');
const FORBIDDEN_PORT = 4820;

function defaultCommand() {
  const venv = path.join(ROOT, '.venv', 'bin', 'python');
  return [fs.existsSync(venv) ? venv : 'python3', '-m', 'supervisor'];
}

export const COMMAND = process.env.SUPERVISOR_COMMAND
  ? JSON.parse(process.env.SUPERVISOR_COMMAND)
  : defaultCommand();
export const PYTHON = path.basename(COMMAND[0]).startsWith('python') ? COMMAND[0] : 'python3';

// A registry of running daemons of our own: a developer's daemon is never found, nor ours by them.
if (!process.env.SUPERVISOR_RUNTIME_DIR) {
  process.env.SUPERVISOR_RUNTIME_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'ssc-runtime-'));
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => (port === FORBIDDEN_PORT ? freePort().then(resolve, reject) : resolve(port)));
    });
  });
}

// A short temporary folder (Unix socket paths are limited) with a config of one demo dashboard.
// `defer(fn)` registers a clean-up: they run last-in first-out, and the folder is removed only
// after all of them (a daemon still running would write into it as it is removed).
export async function setup(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ssc-'));
  const cleanups = [];
  t.after(async () => {
    try {
      for (const cleanup of cleanups.reverse()) await cleanup();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
    }
  });
  const port = await freePort();
  const config = path.join(dir, 'supervisor.toml');
  fs.writeFileSync(
    config,
    [
      '[[sidecar]]',
      'name = "dashboard"',
      `command = ${JSON.stringify([PYTHON, '-m', 'supervisor.demo', '--port', String(port)])}`,
      `port = ${port}`,
      `marker = "supervisor.demo --port ${port}"`,
      '[sidecar.ready]',
      'probe = "http"',
      'path = "/health"',
      'timeout = 30.0',
      '',
    ].join('\n'),
  );
  const defer = (cleanup) => cleanups.push(cleanup);
  return { dir, config, stateDir: path.join(dir, 'state'), port, logFile: path.join(dir, 'supervisor.log'), defer };
}

export function healthy(url) {
  return new Promise((resolve) => {
    http
      .get(url, { timeout: 5000 }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      })
      .on('error', () => resolve(false));
  });
}

export function gone(pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return err.code === 'ESRCH';
  }
  try {
    // A zombie (a dead child not reaped yet) counts as gone.
    return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z') ?? false;
  } catch {
    return true;
  }
}

// Poll the outside world (a process gone), bounded.
export async function waitUntil(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let delay = 5;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 100);
  }
}

// The `supervisor run` processes of this state dir.
export function daemonsOf(stateDir) {
  const listing = execFileSync('ps', ['-axo', 'pid=,args='], { encoding: 'utf8' });
  return listing
    .split('\n')
    .filter((line) => / run /.test(line) && line.includes(`--state-dir ${stateDir} `))
    .map((line) => Number(line.trim().split(/\s+/)[0]));
}

// `node instance.js`: an app instance in a process of its own, talking JSON lines on stdout.
export class Instance {
  constructor(env) {
    this.proc = spawn(process.execPath, [path.join(HERE, 'instance.js')], {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: { ...process.env, ...env, SUPERVISOR_COMMAND: JSON.stringify(COMMAND) },
    });
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve(code ?? signal)));
    this._lines = readline.createInterface({ input: this.proc.stdout })[Symbol.asyncIterator]();
  }

  // Its next message, bounded.
  async said(timeoutMs = 60000) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`instance ${this.proc.pid} said nothing in ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const { value, done } = await Promise.race([this._lines.next(), timeout]);
      if (done) throw new Error(`instance ${this.proc.pid} exited`);
      const message = JSON.parse(value);
      if (message.app === 'error') throw new Error(`instance error: ${JSON.stringify(message)}`);
      return message;
    } finally {
      clearTimeout(timer);
    }
  }

  tell(line) {
    this.proc.stdin.write(line + '\n');
  }

  async quit() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.tell('quit');
    await this.exited;
  }

  kill() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    return this.exited;
  }
}
