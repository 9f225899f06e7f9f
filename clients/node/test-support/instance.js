// An app instance for the take-over test: launches or attaches, reports its dashboard, and after
// each lost daemon reports it back. Environment: CONFIG, STATE_DIR, LOG_FILE, SUPERVISOR_COMMAND.

import readline from 'node:readline';
import { Supervisor } from '../index.js';

const say = (message) => process.stdout.write(JSON.stringify(message) + '\n');

const sup = await Supervisor.launch({
  command: JSON.parse(process.env.SUPERVISOR_COMMAND),
  config: process.env.CONFIG,
  stateDir: process.env.STATE_DIR,
  logFile: process.env.LOG_FILE,
});
const report = async (app) => {
  const [dashboard] = await sup.wait('dashboard');
  say({ app, daemon: sup.daemon.pid, launched: sup.launched, url: dashboard.url, pid: dashboard.pid, at: Date.now() });
};
sup.on('daemon', () => report('back').catch((err) => say({ app: 'error', message: err.message })));
sup.on('close', (err) => say({ app: 'closed', message: err?.message ?? null }));
await report('ready');

for await (const line of readline.createInterface({ input: process.stdin })) {
  if (line.trim() === 'quit') break;
}
await sup.close();
say({ app: 'bye' });
process.exit(0);
