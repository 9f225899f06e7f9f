// Type declarations of sidecar-supervisor-client (hand-written; see index.js).

import { EventEmitter } from 'node:events';
import { ChildProcess } from 'node:child_process';

export declare const EXIT_LOCKED: 75;
export declare const SOCKET_NAME: 'control.sock';

export type SidecarState =
  | 'starting'
  | 'ready'
  | 'waiting'
  | 'backoff'
  | 'failed'
  | 'exited'
  | 'stopping'
  | 'stopped'
  | (string & {});

export type ErrorCode =
  | 'bad_request'
  | 'too_large'
  | 'unknown_command'
  | 'unknown_sidecar'
  | 'shutting_down'
  | 'busy'
  | 'forbidden'
  | 'internal'
  | 'closed'
  | 'timeout'
  | 'failed'
  | 'launch_failed'
  | 'not_running'
  | (string & {});

export declare class SupervisorError extends Error {
  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>);
  readonly name: 'SupervisorError';
  readonly code: ErrorCode;
  /** unknown_sidecar: the names that are not configured, and the configured ones. */
  readonly names?: string[];
  readonly known?: string[];
  /** failed: the sidecar, its state and why. */
  readonly sidecar?: string;
  readonly state?: string;
  readonly reason?: string | null;
  /** timeout (wait): the sidecars not ready yet. */
  readonly pending?: string[];
  /** launch_failed: how `supervisor run` exited, and where its log is. */
  readonly exitCode?: number | string | null;
  readonly logFile?: string;
  [field: string]: unknown;
}

export interface LastExit {
  code: number | null;
  signal: string | null;
  at: string;
}

/** One sidecar in a status document (status.json's, live). */
export interface SidecarRecord {
  name: string;
  state: SidecarState;
  pid: number | null;
  create_time?: number | null;
  port?: number | null;
  url?: string | null;
  attempts?: number;
  restarts?: number;
  since?: string;
  last_exit?: LastExit | null;
  reason?: string | null;
  [field: string]: unknown;
}

export interface DaemonRecord {
  pid: number;
  create_time: number;
  started_at?: string;
  config?: string;
  state_dir?: string;
  shutting_down?: boolean;
  clients?: number;
  [field: string]: unknown;
}

export interface StatusDocument {
  supervisor: DaemonRecord;
  sidecars: SidecarRecord[];
}

export interface ActionResult {
  name: string;
  action: 'started' | 'stopped' | 'restarted' | 'unchanged' | (string & {});
  was: SidecarState;
  state: SidecarState;
  pid: number | null;
}

/** A state change (docs/control.md, "Events"). */
export interface SupervisorEvent {
  event:
    | 'starting'
    | 'spawned'
    | 'ready'
    | 'waiting'
    | 'backoff'
    | 'failed'
    | 'exited'
    | 'stopping'
    | 'stopped'
    | 'daemon_stopping'
    | (string & {});
  /** null for daemon_stopping */
  sidecar: string | null;
  state: SidecarState | null;
  pid: number | null;
  /** ISO 8601 UTC, milliseconds */
  at: string;
  url?: string | null;
  reason?: string | null;
  [field: string]: unknown;
}

export type Names = string | readonly string[];

export interface ConnectOptions {
  /** a Date.now() instant */
  deadline?: number;
  /** keep retrying ENOENT / ECONNREFUSED while this says so */
  keepTrying?: () => boolean;
}

/** One connection to a daemon's control socket. */
export declare class Connection extends EventEmitter {
  static connect(socketPath: string, options?: ConnectOptions): Promise<Connection>;
  readonly states: Map<string, SidecarRecord>;
  readonly daemon: DaemonRecord | null;
  readonly closed: boolean;
  request(cmd: 'status' | 'subscribe' | 'start' | 'stop' | 'restart', names?: Names): Promise<unknown>;
  status(names?: Names): Promise<StatusDocument>;
  subscribe(names?: Names): Promise<StatusDocument>;
  start(names: Names): Promise<ActionResult[]>;
  stop(names: Names): Promise<ActionResult[]>;
  restart(names: Names): Promise<ActionResult[]>;
  close(): void;
  on(event: 'event', listener: (event: SupervisorEvent) => void): this;
  on(event: 'close', listener: () => void): this;
  once(event: 'event', listener: (event: SupervisorEvent) => void): this;
  once(event: 'close', listener: () => void): this;
}

export interface LaunchOptions {
  /** argv of the supervisor executable (default ["supervisor"]), e.g. ["python3", "-m", "supervisor"] */
  command?: readonly string[];
  /** the config file (default: the supervisor's own default) */
  config?: string | null;
  /** the state dir: one daemon per state dir */
  stateDir: string;
  /** where the daemon's log (JSON lines) goes; default <dirname(stateDir)>/supervisor.log */
  logFile?: string;
  /** more arguments of `supervisor run` */
  args?: readonly string[];
  env?: NodeJS.ProcessEnv;
  /** `--exit-with-parent`: the daemon (and its sidecars) stop when this process exits (default true) */
  exitWithParent?: boolean;
  /** relaunch (or re-attach) when the daemon goes away (default true) */
  takeOver?: boolean;
  /** for the launch, and for each take-over (default 60000) */
  timeoutMs?: number;
}

export interface AttachOptions {
  stateDir: string;
  timeoutMs?: number;
}

export interface WaitOptions {
  timeoutMs?: number;
  /** ready as another process than this one (after a restart) */
  notPid?: number | null;
}

export interface DaemonChange {
  pid: number;
  /** this instance launched it (else it attached to another instance's launch) */
  launched: boolean;
  takeOver: true;
}

/** An app's handle on its daemon: launched or attached, kept alive by take-over. */
export declare class Supervisor extends EventEmitter {
  static launch(options: LaunchOptions): Promise<Supervisor>;
  static attach(options: AttachOptions): Promise<Supervisor>;
  readonly connection: Connection;
  /** the daemon process when this instance launched it, else null */
  readonly child: ChildProcess | null;
  readonly launched: boolean;
  readonly closed: boolean;
  readonly states: Map<string, SidecarRecord>;
  readonly daemon: DaemonRecord;
  status(names?: Names): Promise<StatusDocument>;
  start(names: Names): Promise<ActionResult[]>;
  stop(names: Names): Promise<ActionResult[]>;
  restart(names: Names): Promise<ActionResult[]>;
  wait(names?: Names, options?: WaitOptions): Promise<SidecarRecord[]>;
  url(name: string): string | null;
  events(options?: { signal?: AbortSignal }): AsyncGenerator<SupervisorEvent, void, undefined>;
  close(options?: { stopDaemon?: boolean }): Promise<void>;
  on(event: 'event', listener: (event: SupervisorEvent) => void): this;
  on(event: 'daemon', listener: (change: DaemonChange) => void): this;
  on(event: 'close', listener: (error?: SupervisorError) => void): this;
  once(event: 'event', listener: (event: SupervisorEvent) => void): this;
  once(event: 'daemon', listener: (change: DaemonChange) => void): this;
  once(event: 'close', listener: (error?: SupervisorError) => void): this;
}

export declare function launch(options: LaunchOptions): Promise<Supervisor>;
export declare function attach(options: AttachOptions): Promise<Supervisor>;
