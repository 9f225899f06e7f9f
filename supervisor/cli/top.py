"""`supervisor top`: a live full-screen view of a running daemon's sidecars, with keys to act.

stdlib curses, imported only by this command: nothing to install, and the daemon never pays
for it. The screen redraws when the control socket reports an event (a thread blocks on the
subscription and wakes the loop through a pipe) or a key is pressed; the one timer refreshes
CPU and memory (a rate needs two readings), every REFRESH_S. `rows`/`render` are pure.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.core import console, status

if TYPE_CHECKING:
    import curses

    from supervisor import control
    from supervisor.config import SidecarConfig
    from supervisor.system import procs

REFRESH_S = 2.0  # CPU and memory; everything else redraws on events
KEYS = "↑/↓ select  r restart  s stop  a start  l follow logs  q quit"
STAMP_AND_STREAM = len("2026-01-01T00:00:00.000Z stdout ")


@dataclass(frozen=True)
class Row:
    name: str
    state: str
    pid: str
    url: str
    restarts: str
    uptime: str
    cpu: str
    memory: str
    detail: str  # why it waits or failed, else its last output line


def rows(
    doc: Mapping[str, object],
    usage: Mapping[int, procs.Usage],
    last_lines: Mapping[str, str],
    now_s: float,
) -> list[Row]:
    """The table's rows from a status document, the sampled usage and each last output line."""
    found = []
    sidecars = doc.get("sidecars")
    for entry in sidecars if isinstance(sidecars, list) else []:
        if not isinstance(entry, Mapping):
            continue
        name = str(entry.get("name"))
        pid = entry.get("pid")
        used = usage.get(pid) if isinstance(pid, int) else None
        since = status.parse_iso(entry.get("since"))
        state = str(entry.get("state"))
        up = "-"
        if state == "ready" and since is not None:
            up = status.render_duration(now_s - since)
        cpu = entry.get("cpu_percent", used.cpu_percent if used else None)
        memory = entry.get("memory_bytes", used.memory_bytes if used else None)
        reason = str(entry.get("reason") or "")
        last = last_lines.get(name, "")
        found.append(
            Row(
                name=name,
                state=state,
                pid=str(pid) if isinstance(pid, int) else "-",
                url=str(entry.get("url") or "-"),
                restarts=str(entry.get("restarts", 0)),
                uptime=up,
                cpu=status.cpu_text(cpu),
                memory=status.memory_text(memory),
                detail=f"why: {reason}" if reason else (f"last: {last}" if last else ""),
            )
        )
    return found


HEADER = ("NAME", "STATE", "PID", "URL", "RESTARTS", "UPTIME", "CPU", "MEM")


def render(
    table: Sequence[Row], title: str, width: int, selected: int, message: str = ""
) -> list[str]:
    """The screen as lines (each cut to `width`): title, header, two lines per sidecar, keys."""
    cells = [HEADER] + [
        (r.name, r.state, r.pid, r.url, r.restarts, r.uptime, r.cpu, r.memory) for r in table
    ]
    widths = [min(max(len(c[i]) for c in cells), 40) for i in range(len(HEADER))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(console.cut(v, w).ljust(w) for v, w in zip(values, widths, strict=True))

    lines = [console.cut(title, width), "", console.cut("  " + line(HEADER), width)]
    for index, (row, values) in enumerate(zip(table, cells[1:], strict=True)):
        mark = ">" if index == selected else " "
        lines.append(console.cut(f"{mark} {line(values)}".rstrip(), width))
        lines.append(console.cut(f"    {row.detail}", width) if row.detail else "")
    if not table:
        lines.append("  no sidecars configured")
    lines += ["", console.cut(message or KEYS, width)]
    return lines


def title_of(doc: Mapping[str, object], now_s: float) -> str:
    daemon = doc.get("supervisor")
    daemon = daemon if isinstance(daemon, Mapping) else {}
    sidecars = doc.get("sidecars")
    entries = [s for s in sidecars if isinstance(s, Mapping)] if isinstance(sidecars, list) else []
    ready = sum(1 for s in entries if s.get("state") == "ready")
    started = status.parse_iso(daemon.get("started_at"))
    up = status.render_duration(now_s - started) if started is not None else "?"
    clock = time.strftime("%H:%M:%S", time.localtime(now_s))
    return (
        f"supervisor pid {daemon.get('pid')}  up {up}  {ready}/{len(entries)} ready  "
        f"config {daemon.get('config')}  {clock}"
    )


# --- the I/O shell -----------------------------------------------------------------------------


class Top:
    """The live view of one daemon (curses)."""

    def __init__(
        self, daemon: control.RunningDaemon, configured: Sequence[SidecarConfig], state_dir: Path
    ) -> None:
        from supervisor.system import procs

        self.daemon = daemon
        self.configured = configured
        self.state_dir = state_dir
        self.sampler = procs.UsageSampler()
        self.usage: dict[int, procs.Usage] = {}
        self.selected = 0
        self.message = ""
        self.names: list[str] = []
        self._wake_r, self._wake_w = os.pipe()
        self._gone = threading.Event()

    def run(self) -> bool:
        """Show the view until `q`; False when it ended because the daemon went away."""
        import curses

        try:
            curses.wrapper(self._main)
        finally:
            os.close(self._wake_r)
            os.close(self._wake_w)
        return not self._gone.is_set()

    # -- the loop -----------------------------------------------------------------------------

    def _main(self, screen: curses.window) -> None:
        import curses

        from supervisor import control

        with contextlib.suppress(curses.error):
            curses.curs_set(0)
        screen.keypad(True)
        threading.Thread(target=self._follow_events, daemon=True).start()
        from supervisor.errors import SupervisorError

        with contextlib.suppress(SupervisorError), control.Connection.open(self.daemon) as conn:
            next_sample = 0.0
            while not self._gone.is_set():
                now = time.monotonic()
                doc = self._status(conn)
                if now >= next_sample:
                    pids = [p for s in _entries(doc) if isinstance(p := s.get("pid"), int)]
                    self.usage = self.sampler.sample(pids)
                    next_sample = now + REFRESH_S
                self._draw(screen, doc)
                readable, _, _ = select.select([0, self._wake_r], [], [], next_sample - now)
                if self._wake_r in readable:
                    os.read(self._wake_r, 4096)  # events arrived: redraw
                if 0 in readable and not self._key(screen, screen.getch()):
                    return
        self._gone.set()  # the daemon went away (events ended, or a request found it gone)

    def _status(self, conn: control.Connection) -> dict[str, object]:
        from supervisor import control

        doc = conn.request(control.Command.STATUS, (), control.REPLY_TIMEOUT_S)
        return doc if isinstance(doc, dict) else {}

    def _draw(self, screen: curses.window, doc: Mapping[str, object]) -> None:
        import curses

        now = time.time()
        self.names = [str(s.get("name")) for s in _entries(doc)]
        self.selected = max(0, min(self.selected, len(self.names) - 1))
        table = rows(doc, self.usage, self._last_lines(), now)
        height, width = screen.getmaxyx()
        lines = render(table, title_of(doc, now), width - 1, self.selected, self.message)
        screen.erase()
        for y, text in enumerate(lines[: height - 1]):
            with contextlib.suppress(curses.error):
                screen.addstr(y, 0, text, self._attr(y, len(table)))
        screen.refresh()

    def _attr(self, y: int, count: int) -> int:
        import curses

        if y == 0:
            return curses.A_REVERSE
        if y == 2:
            return curses.A_BOLD
        index, detail = divmod(y - 3, 2)
        if y < 3 or index >= count:
            return curses.A_NORMAL
        if detail:
            return curses.A_DIM
        return curses.A_REVERSE if index == self.selected else curses.A_NORMAL

    def _last_lines(self) -> dict[str, str]:
        from supervisor.sidecar import tail

        found = {}
        for name in self.names:
            try:
                reader = tail.OutputReader(self.state_dir, name)
                try:
                    last = reader.last(1)
                finally:
                    reader.close()
            except Exception:  # unreadable output: no last line, never a crash of the view
                continue
            if last:
                text = last[-1].decode("utf-8", "replace").rstrip("\n")
                found[name] = text[STAMP_AND_STREAM:]
        return found

    def _key(self, screen: curses.window, key: int) -> bool:
        """Act on one key; False to quit."""
        import curses

        from supervisor import control

        name = self.names[self.selected] if self.names else None
        match key:
            case _ if key in (ord("q"), 27):
                return False
            case curses.KEY_UP | 107:  # k
                self.selected = max(0, self.selected - 1)
            case curses.KEY_DOWN | 106:  # j
                self.selected = min(len(self.names) - 1, self.selected + 1)
            case _ if name is None:
                pass
            case 114:  # r
                self._act(control.Command.RESTART, name, "restarting")
            case 115:  # s
                self._act(control.Command.STOP, name, "stopping")
            case 97:  # a
                self._act(control.Command.START, name, "starting")
            case 108:  # l
                self._follow_logs(screen, name)
        return True

    def _act(self, cmd: control.Command, name: str, doing: str) -> None:
        """Send the request from a thread (a stop may take its stop.timeout); say the result."""
        from supervisor import control

        self.message = f"{doing} {name}…"

        def send() -> None:
            try:
                with control.Connection.open(self.daemon) as conn:
                    results = conn.request(cmd, [name], None)
                result = results[0] if isinstance(results, list) and results else {}
                state = result.get("state") if isinstance(result, dict) else None
                self.message = f"{name}: {cmd.value} done (now {state})"
            except Exception as exc:  # shown, never raised into the view
                self.message = f"{name}: {cmd.value} failed: {exc}"
            self._wake()

        threading.Thread(target=send, daemon=True).start()

    def _follow_logs(self, screen: curses.window, name: str) -> None:
        """Leave the full screen, follow `name`'s output until Ctrl-C, then come back."""
        import curses
        import sys

        from supervisor.sidecar import tail

        curses.def_prog_mode()
        curses.endwin()
        out = sys.stdout.buffer
        out.write(f"--- {name}: its output.log; Ctrl-C returns to top ---\n".encode())
        try:
            reader = tail.OutputReader.open(self.state_dir, name, self.configured)
            try:
                out.write(b"".join(reader.last(20)))
                out.flush()
                while True:
                    data = reader.follow()
                    if data:
                        out.write(data)
                        out.flush()
                    else:
                        time.sleep(tail.POLL_S)
            finally:
                reader.close()
        except KeyboardInterrupt:
            pass
        except Exception as exc:
            self.message = f"{name}: cannot follow its logs: {exc}"
        curses.reset_prog_mode()
        screen.clear()

    def _follow_events(self) -> None:
        """A thread: block on the event subscription; wake the loop at each event."""
        from supervisor import control

        try:
            with control.Connection.open(self.daemon) as conn:
                conn.request(control.Command.SUBSCRIBE, (), control.REPLY_TIMEOUT_S)
                for _event in conn.events():
                    self._wake()
        except Exception:  # the daemon went away, or the connection failed
            pass
        self._gone.set()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b".")


def _entries(doc: Mapping[str, object]) -> list[Mapping[str, object]]:
    sidecars = doc.get("sidecars")
    return [s for s in sidecars if isinstance(s, Mapping)] if isinstance(sidecars, list) else []
