"""The console format for a person at a terminal: one short, aligned line per event that matters.

Pure: an event dict (as structlog hands it to its renderer) becomes one line, or nothing for the
daemon's own bookkeeping (shown only at debug). `Summary` watches the first launches and says once
how they settled (`3/3 ready`, or what is not and why), then what to do next. JSON stays the
format for machines (off a TTY, for apps); this module is only ever used on a TTY.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

MAX_WIDTH = 160  # a line never grows past this, whatever the terminal says
NAME_WIDTH = 10  # the sidecar column; longer names are cut
WHAT_WIDTH = 12  # the "what happened" column
FACT_WIDTH = 72  # one fact (a reason, a command) is cut past this
DAEMON = "supervisor"  # the name column of the daemon's own events

# The daemon's bookkeeping: true and useful when debugging, noise for a person.
BOOKKEEPING = frozenset(
    {
        "pidfile_written",
        "pidfile_removed",
        "control_listening",
        "reconcile_port_free",
        "sidecar_wait_polled",
        "status_dumped",
        "control_request",
        "control_request_rejected",
        "socket_closed",
        "sidecar_stopping",
    }
)

_LEVEL_COLOURS = {"warning": "\x1b[33m", "error": "\x1b[31m", "critical": "\x1b[31m"}
_BOLD, _DIM, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[0m"
# Per-sidecar colours (also used by `supervisor logs`): readable on dark and light backgrounds.
PALETTE = ("\x1b[36m", "\x1b[35m", "\x1b[32m", "\x1b[34m", "\x1b[33m", "\x1b[96m", "\x1b[95m")


def colour_wanted(tty: bool, environ: Mapping[str, str]) -> bool:
    """NO_COLOR (https://no-color.org) turns colour off, FORCE_COLOR on, TERM=dumb off;
    otherwise only on a TTY. Non-empty values count, as no-color.org says."""
    if environ.get("NO_COLOR"):
        return False
    if environ.get("FORCE_COLOR"):
        return True
    if environ.get("TERM") == "dumb":
        return False
    return tty


def colour_of(name: str, names: Sequence[str] = ()) -> str:
    """A stable colour per sidecar: its place in `names`, else a hash of the name."""
    index = names.index(name) if name in names else sum(name.encode()) % len(PALETTE)
    return PALETTE[index % len(PALETTE)]


def cut(text: str, width: int) -> str:
    """`text` on one line, at most `width` characters (an ellipsis marks the cut)."""
    flat = "".join(c if c.isprintable() else " " for c in text)
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def _ms(value: object) -> str:
    return f"{value:.0f} ms" if isinstance(value, int | float) else ""


def _pid(event: Mapping[str, object]) -> str:
    return f"pid {event['pid']}" if event.get("pid") is not None else ""


def _facts(event: Mapping[str, object]) -> list[str]:
    """What an event says beyond its name, in the words a person would use."""
    match event.get("event"):
        case "daemon_started":
            names = event.get("sidecars")
            count = len(names) if isinstance(names, list) else 0
            return [f"{count} sidecar{'s' if count != 1 else ''}", f"pid {event.get('pid')}"]
        case "sidecar_spawned":
            attempt = event.get("attempt")
            again = f"attempt {attempt}" if isinstance(attempt, int) and attempt > 0 else ""
            return [_pid(event), again]
        case "sidecar_ready":
            elapsed = _ms(event.get("elapsed_ms"))
            return [str(event.get("url") or ""), f"({elapsed})" if elapsed else ""]
        case "sidecar_exited":
            if event.get("signal"):
                return [f"killed by {event['signal']}", _pid(event)]
            return [f"exit code {event.get('code')}", _pid(event)]
        case "sidecar_stopped":
            return [_pid(event), "(had to SIGKILL)" if event.get("escalated") else ""]
        case "restart_scheduled":
            delay = event.get("delay_s")
            when = f"in {delay:g} s" if isinstance(delay, int | float) else ""
            return [when, f"(attempt {event.get('attempt')} of {event.get('max_attempts')})"]
        case "restart_budget_exhausted":
            return [f"after {event.get('attempts')} attempts; not restarting"]
        case "sidecar_waiting":
            holder = f"holder pid {event['holder_pid']}" if event.get("holder_pid") else ""
            return [str(event.get("reason") or ""), holder]
        case "reconcile_holder_found":
            return [
                f"port {event.get('port')}",
                f"pid {event.get('pid')}",
                str(event.get("user") or ""),
                str(event.get("verdict") or ""),
                str(event.get("command") or ""),
            ]
        case "orphan_killed" | "live_holder_killed":
            return [f"port {event.get('port')}" if event.get("port") else "", _pid(event)]
        case "live_holder_left" | "foreign_holder_left" | "kill_aborted":
            return [
                f"port {event.get('port')}",
                _pid(event),
                str(event.get("user") or ""),
                str(event.get("reason") or ""),
            ]
        case "reconcile_failed":
            return [f"port {event.get('port')}", str(event.get("error") or "")]
        case "sidecar_wait_owner_exited":
            return [f"its owner (pid {event.get('owner_pid')}) is gone: looking again"]
        case "sidecar_daemonized":
            return [str(event.get("reason") or "")]
        case "log_lines_dropped" | "output_lines_dropped":
            return [f"{event.get('count')} lines lost", str(event.get("error") or "")]
        case "consent_requested":
            return [f"port {event.get('port')} held by pid {event.get('pid')}", "answer below"]
        case "consent_granted" | "consent_declined":
            return [str(event.get("detail") or "")]
        case "health_check_failed":
            return [str(event.get("reason") or ""), f"({event.get('failures')} in a row)"]
        case "daemon_stopping":
            return [str(event.get("reason") or "")]
        case "daemon_stopped":
            return [_pid(event)]
        case "config_reloaded":
            return [
                f"{key} {', '.join(map(str, value))}"
                for key in ("added", "removed", "changed")
                if isinstance(value := event.get(key), list) and value
            ] or ["nothing changed"]
    return [f"{key}={value}" for key, value in _extra(event).items()]


# What each event is called on the console (the event name otherwise, underscores as spaces).
_WHAT = {
    "daemon_started": "started",
    "daemon_stopping": "stopping",
    "daemon_stopped": "stopped",
    "sidecar_spawned": "started",
    "sidecar_ready": "ready",
    "sidecar_exited": "exited",
    "sidecar_stopped": "stopped",
    "sidecar_start_failed": "failed",
    "sidecar_waiting": "waiting",
    "sidecar_unhealthy": "unhealthy",
    "restart_scheduled": "restarting",
    "restart_budget_exhausted": "gave up",
    "reconcile_holder_found": "port held",
    "orphan_killed": "killed orphan",
    "live_holder_killed": "killed old",
    "consent_requested": "asking",
    "consent_granted": "consent yes",
    "consent_declined": "consent no",
    "health_check_failed": "health check",
    "config_reloaded": "reloaded",
    "config_invalid": "bad config",
    "live_holder_left": "left running",
    "foreign_holder_left": "not ours",
    "kill_aborted": "kill aborted",
    "reconcile_failed": "lookup failed",
    "sidecar_wait_owner_exited": "owner gone",
    "sidecar_daemonized": "daemonized",
    "log_lines_dropped": "lost lines",
    "output_lines_dropped": "lost lines",
}

_HIDDEN = frozenset({"event", "level", "timestamp", "sidecar", "logger", "stream", "line"})


def _extra(event: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in event.items() if k not in _HIDDEN and v is not None and v != ""}


def render(
    event: Mapping[str, object],
    *,
    colours: bool = False,
    width: int = MAX_WIDTH,
    names: Sequence[str] = (),
) -> str:
    """One line for one event: `time  name  what  facts` (child output: `time  name | line`)."""
    width = max(40, min(width, MAX_WIDTH))
    stamp = str(event.get("timestamp") or "")[:8]
    name = str(event.get("sidecar") or DAEMON)
    level = str(event.get("level") or "info")
    column = cut(name, NAME_WIDTH).ljust(NAME_WIDTH)
    if colours:
        column = colour_of(name, names) + column + _RESET
        stamp = _DIM + stamp + _RESET
    if event.get("event") == "child_output":
        # The child's own words: never cut (they may be what the person needs), only flattened.
        bar = "!" if event.get("stream") == "stderr" else "|"
        return f"{stamp}  {column}  {bar} {cut(str(event.get('line') or ''), 1 << 16)}"
    kind = str(event.get("event") or "")
    what = _WHAT.get(kind, kind.replace("_", " "))
    if kind in ("sidecar_start_failed", "sidecar_unhealthy", "config_invalid"):
        facts = [str(event.get("reason") or event.get("error") or "")]
    else:
        facts = _facts(event)
    text = "  ".join(cut(f, FACT_WIDTH) for f in facts if f and "None" not in f.split())
    # Our words fit the column; an event without words keeps its whole (greppable) name.
    what_text = (cut(what, WHAT_WIDTH) if kind in _WHAT else cut(what, 40)).ljust(WHAT_WIDTH)
    room = width - 8 - 2 - NAME_WIDTH - 2 - len(what_text) - 2
    if colours and level in _LEVEL_COLOURS:
        what_text = _LEVEL_COLOURS[level] + what_text + _RESET
    elif colours and kind == "sidecar_ready":
        what_text = _BOLD + what_text + _RESET
    return f"{stamp}  {column}  {what_text}  {cut(text, room)}".rstrip()


def shown(event: Mapping[str, object], *, debug: bool) -> bool:
    """Whether the console shows this event: the bookkeeping only at debug."""
    return debug or event.get("event") not in BOOKKEEPING


def next_steps(config: str) -> list[str]:
    """What to do next, said once per run after the summary (one command a line)."""
    import shlex

    flag = f" -c {shlex.quote(config)}" if config else ""
    return [
        f"next: supervisor status{flag}     (in another terminal)",
        f"      supervisor logs{flag} -f    every sidecar's output",
        f"      supervisor top{flag}        a live view; Ctrl-C here stops them all",
    ]


# --- the first launches' summary -------------------------------------------------------------


class Summary:
    """Watches events until every sidecar's first launch settled; then says how, once.

    (A plain class: the daemon imports this module at start, and a dataclass costs its import.)
    """

    def __init__(self, hint: Callable[[str], list[str]] = next_steps) -> None:
        self.hint = hint
        self._names: list[str] = []
        self._settled: dict[str, str] = {}  # name -> "" (ready) or why not
        self._config = ""
        self._done = True

    def feed(self, event: Mapping[str, object]) -> list[str]:
        """The lines to print after this event (the summary and the hint, once)."""
        kind = event.get("event")
        if kind == "daemon_stopping":
            self._done = True  # a shutdown before the launches settled: nothing to sum up
            return []
        if kind == "daemon_started":
            names = event.get("sidecars")
            self._names = [str(n) for n in names] if isinstance(names, list) else []
            self._settled, self._config, self._done = {}, str(event.get("config") or ""), False
            return self._finish() if not self._names else []
        name = str(event.get("sidecar") or "")
        if self._done or name not in self._names or name in self._settled:
            return []
        match kind:
            case "sidecar_ready":
                self._settled[name] = ""
            case "sidecar_start_failed" | "sidecar_waiting":
                self._settled[name] = f"{kind.removeprefix('sidecar_').replace('_', ' ')}: " + str(
                    event.get("reason") or ""
                )
            case "sidecar_exited":
                how = f"signal {event['signal']}" if event.get("signal") else event.get("code")
                self._settled[name] = f"exited ({how}) before it was ready"
            case "sidecar_stopped":
                self._settled[name] = "stopped"
            case _:
                return []
        return self._finish() if len(self._settled) == len(self._names) else []

    def _finish(self) -> list[str]:
        self._done = True
        ready = sum(1 for why in self._settled.values() if not why)
        lines = [f"{ready}/{len(self._names)} ready"]
        lines += [f"  {name}: {cut(why, FACT_WIDTH)}" for name, why in self._settled.items() if why]
        return lines + self.hint(self._config)
