// Compile-only check of index.d.ts (strict): `tsc -p test-support/tsconfig.json` with
// typescript and @types/node installed. It uses every declared name the way an app would.
import {
  Connection,
  EXIT_LOCKED,
  Supervisor,
  SupervisorError,
  attach,
  launch,
  type ActionResult,
  type SidecarRecord,
  type StatusDocument,
  type SupervisorEvent,
} from 'sidecar-supervisor-client';

async function main(): Promise<void> {
  const sup: Supervisor = await launch({ command: ['supervisor'], config: 'supervisor.toml', stateDir: '/tmp/s' });
  const [dashboard]: SidecarRecord[] = await sup.wait('dashboard', { timeoutMs: 30000 });
  const url: string | null = sup.url('dashboard') ?? dashboard.url ?? null;
  const status: StatusDocument = await sup.status();
  const results: ActionResult[] = await sup.restart(['dashboard']);
  sup.on('event', (event: SupervisorEvent) => console.log(event.event, event.sidecar, event.pid));
  sup.on('daemon', ({ pid, launched }) => console.log(pid, launched));
  sup.on('close', (err?: SupervisorError) => console.log(err?.code));
  for await (const event of sup.events({ signal: AbortSignal.timeout(1000) })) console.log(event.at);
  const other = await attach({ stateDir: '/tmp/s' });
  const conn: Connection = await Connection.connect('/tmp/s/control.sock');
  await conn.subscribe();
  const code: 75 = EXIT_LOCKED;
  try {
    await Supervisor.launch({ stateDir: '/tmp/s', takeOver: false, exitWithParent: true });
  } catch (err) {
    if (err instanceof SupervisorError && err.code === 'unknown_sidecar') console.log(err.names, err.known);
  }
  console.log(url, status.supervisor.pid, results[0].action, code, sup.launched, sup.child?.pid);
  await other.close({ stopDaemon: false });
  await sup.close();
}

void main();
