'use strict';
// A desktop app's main process in miniature: it runs its dashboard under sidecar-supervisor,
// learns when the dashboard is ready and where (through the control socket, not the log),
// restarts it on demand, and after being killed and launched again gets it back.
//
//   node app.js [--config supervisor.toml] [--state-dir DIR]
//
// Environment: SUPERVISOR_COMMAND, the supervisor's argv as JSON (default ["supervisor"]).
// Commands on stdin, one per line: "restart", "status", "quit". Everything it learns goes to
// stdout as one JSON object per line.

const path = require('path');
const readline = require('readline');
const { startSupervisor } = require('./supervisor-client');

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
  const config = path.resolve(option('--config', path.join(__dirname, 'supervisor.toml')));
  const stateDir = path.resolve(option('--state-dir', path.join(__dirname, '.state')));
  const command = JSON.parse(process.env.SUPERVISOR_COMMAND || '["supervisor"]');

  const sup = await startSupervisor({ command, config, stateDir });
  sup.on('event', (event) => {
    if (event.sidecar === DASHBOARD && (event.event === 'failed' || event.event === 'waiting')) {
      say({ app: 'dashboard-trouble', event });
    }
  });
  sup.on('close', () => {
    say({ app: 'supervisor-gone' });
    leave(1);
  });
  const dashboard = await sup.waitReady(DASHBOARD);
  say({
    app: 'ready',
    url: dashboard.url,
    pid: dashboard.pid,
    daemon: sup.daemon.pid,
    launched: sup.child !== null,
  });

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    switch (line.trim()) {
      case 'restart': {
        const before = sup.states.get(DASHBOARD).pid;
        await sup.restart([DASHBOARD]);
        const again = await sup.waitReady(DASHBOARD, { notPid: before });
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
  if (sup.child) {
    // Ours: stop it (and so the dashboard) and wait. Were we killed instead, it would notice
    // (--exit-with-parent) and do the same.
    const gone = new Promise((resolve) => sup.child.once('exit', resolve));
    sup.child.kill('SIGTERM');
    await gone;
  }
  sup.close();
  say({ app: 'bye' });
}

main()
  .then(() => leave(0)) // stdin may still be open: it must not keep us
  .catch((err) => {
    say({ app: 'error', code: err.code, message: err.message });
    leave(2);
  });
