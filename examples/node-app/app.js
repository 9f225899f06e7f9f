// A desktop app's main process in miniature: it runs its dashboard under sidecar-supervisor,
// learns when the dashboard is ready and where (through the control socket, not the log),
// restarts it on demand, and after being killed and launched again gets it back. When it shares
// the daemon with another instance of the app and that instance dies (taking the daemon with
// it), this one launches it again (the client's take-over).
//
//   node app.js [--config supervisor.toml] [--state-dir DIR]
//
// Environment: SUPERVISOR_COMMAND, the supervisor's argv as JSON (default ["supervisor"]).
// Commands on stdin, one per line: "restart", "status", "quit". Everything it learns goes to
// stdout as one JSON object per line.
//
// It uses clients/node (the npm package sidecar-supervisor-client, a `file:` dependency in
// package.json); the relative import lets it run without `npm install`. In your app:
//   import { Supervisor } from 'sidecar-supervisor-client';

import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { Supervisor } from '../../clients/node/index.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DASHBOARD = 'dashboard';

function option(name, fallback) {
  const at = process.argv.indexOf(name);
  return at >= 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

function say(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

// Exit once stdout has taken everything said (pipes are asynchronous on macOS).
function leave(code) {
  process.stdout.write('', () => process.exit(code));
}

async function main() {
  const config = path.resolve(option('--config', path.join(HERE, 'supervisor.toml')));
  const stateDir = path.resolve(option('--state-dir', path.join(HERE, '.state')));
  const command = JSON.parse(process.env.SUPERVISOR_COMMAND || '["supervisor"]');

  // Launches `supervisor run --exit-with-parent`, or attaches to the daemon another instance
  // runs on this state dir (its launch exits 75).
  const sup = await Supervisor.launch({ command, config, stateDir });
  sup.on('event', (event) => {
    if (event.sidecar === DASHBOARD && (event.event === 'failed' || event.event === 'waiting')) {
      say({ app: 'dashboard-trouble', event });
    }
  });
  sup.on('daemon', ({ pid, launched }) => say({ app: 'daemon-back', daemon: pid, launched }));
  sup.on('close', (err) => {
    say({ app: 'supervisor-gone', message: err?.message ?? null });
    leave(1);
  });
  const [dashboard] = await sup.wait(DASHBOARD);
  say({
    app: 'ready',
    url: dashboard.url,
    pid: dashboard.pid,
    daemon: sup.daemon.pid,
    launched: sup.launched,
  });

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    switch (line.trim()) {
      case 'restart': {
        const before = sup.states.get(DASHBOARD).pid;
        await sup.restart(DASHBOARD);
        const [again] = await sup.wait(DASHBOARD, { notPid: before });
        say({ app: 'restarted', url: again.url, pid: again.pid, was: before });
        break;
      }
      case 'status':
        say({ app: 'status', status: await sup.status() });
        break;
      case 'quit':
        await quit(sup);
        return;
      default:
        say({ app: 'unknown-command', line });
    }
  }
  await quit(sup); // stdin closed
}

async function quit(sup) {
  sup.removeAllListeners('close');
  // A daemon of ours is stopped (and so the dashboard) and waited for; were we killed instead,
  // it would notice (--exit-with-parent) and do the same. One we attached to is left running.
  await sup.close();
  say({ app: 'bye' });
}

main()
  .then(() => leave(0)) // stdin may still be open: it must not keep us
  .catch((err) => {
    say({ app: 'error', code: err.code, message: err.message });
    leave(2);
  });
