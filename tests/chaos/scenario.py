"""A seeded, randomized fault-injection scenario against a real daemon, and its invariants.

The driver injects one fault per step (SIGKILL of a sidecar, a grandchild or the daemon itself,
SIGSTOP/SIGCONT, ports grabbed by foreign and live holders and by a tagged orphan sharing its
socket with a foreign co-holder, SIGHUP with valid and invalid configs (among them two sidecars
on one port), SIGUSR1 storms, SIGTERM during startup), then waits until the daemon settles - by
SIGUSR2 handshakes, never by sleeping - and checks the invariants listed in docs/reliability.md.
Every step is written to an event log that is printed with the seed when anything fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.support import (
    Daemon,
    Holder,
    LogTimeout,
    SharedHolder,
    demo_sidecar,
    free_port,
    gone_owner_tag,
    live_tags,
    render_config,
    wait_until,
)

NAMES = ("alpha", "beta", "gamma", "delta")
GRANDCHILD_SIDECAR = "gamma"  # runs the demo with --fork-grandchild
OPTIONAL_SIDECAR = "delta"  # reloads add and remove it
SETTLE_TIMEOUT_S = 30.0
HANDSHAKE_TIMEOUT_S = 10.0
WARMUP_CHECKS = 3
FD_TOLERANCE = 4
RSS_TOLERANCE_BYTES = 12 * 1024 * 1024
INVALID_CONFIGS = (
    "[[sidecar]\nname = 'broken\n",  # not TOML
    "[[sidecar]]\nname = 'alpha'\ncommand = ['true']\nportt = 1\n",  # unknown key
    "[[sidecar]]\nname = 'alpha'\ncommand = []\n",  # empty argv
    "[[sidecar]]\nname = 'alpha'\ncommand = ['true']\n[sidecar.restart]\nmax_attempts = -1\n",
    "[[sidecar]]\nname = 'Bad Name'\ncommand = ['true']\n",
)


class InvariantViolation(AssertionError):
    pass


@dataclass
class Grab:
    """A port of one sidecar held by processes the scenario started (foreign, live, shared)."""

    holder: Holder | SharedHolder
    sidecar: str
    kind: str  # "foreign" | "live" | "shared" (a tagged orphan and a foreign co-holder)
    release_at_step: int

    @property
    def waits_on(self) -> int:
        """The pid a waiting sidecar names: the foreign co-holder of a shared socket."""
        if isinstance(self.holder, SharedHolder):
            return self.holder.coholder_pid
        return self.holder.pid

    def expected_verdicts(self) -> dict[int, str]:
        if isinstance(self.holder, SharedHolder):
            return {self.holder.pid: "orphan", self.holder.coholder_pid: "foreign"}
        return {self.holder.pid: self.kind}


@dataclass
class Incarnation:
    """One `supervisor run` process over the scenario's state dir."""

    daemon: Daemon
    checks: int = 0
    baseline: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    first: tuple[int, int] | None = None  # (fds, rss) at the first post-warm-up check
    last: tuple[int, int] | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    @property
    def pid(self) -> int:
        return self.daemon.pid


@dataclass
class Stats:
    steps: int = 0
    sidecar_kills: int = 0
    grandchild_kills: int = 0
    daemon_kills: int = 0
    daemon_terms: int = 0
    stops: int = 0
    foreign_grabs: int = 0
    live_grabs: int = 0
    shared_grabs: int = 0
    grabs_lost: int = 0
    reloads_valid: int = 0
    reloads_invalid: int = 0
    reloads_duplicate_port: int = 0
    usr1_storms: int = 0
    usr1_sent: int = 0
    invariant_checks: int = 0
    handshakes: int = 0
    samples: int = 0
    orphans_reclaimed: int = 0
    strays_cleaned: int = 0
    incarnations: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _environ(proc: psutil.Process) -> dict[str, str]:
    try:
        return proc.environ()
    except psutil.Error:
        return {}


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _owner_pid(env: dict[str, str]) -> int | None:
    tag = env.get("SUPERVISOR_OWNER")
    if not tag:
        return None
    try:
        return int(tag.split(":", 1)[0])
    except ValueError:
        return None


class Scenario:
    def __init__(self, workdir: Path, seed: int, duration_s: float) -> None:
        self.workdir = workdir
        self.seed = seed
        self.rng = random.Random(seed)
        self.duration_s = duration_s
        self.config = workdir / "supervisor.toml"
        self.state_dir = workdir / "state"
        self.ports = {name: free_port() for name in NAMES}
        self.present = set(NAMES)
        self.generation = dict.fromkeys(NAMES, 0)
        self.grabs: dict[str, Grab] = {}
        self.all_holders: list[Grab] = []
        self.stopped: list[psutil.Process] = []  # SIGSTOPped children awaiting SIGCONT
        self.managed: set[int] = set()  # pids whose Popen reaps them
        self.incarnations: list[Incarnation] = []
        self.current: Incarnation | None = None
        self.stats = Stats()
        self.events: list[str] = []
        self.t0 = time.monotonic()
        self._sampler_stop = threading.Event()
        self._sampler_violations: list[str] = []
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    # -- reporting ------------------------------------------------------------------------------

    def note(self, message: str) -> None:
        self.events.append(f"{time.monotonic() - self.t0:8.3f}s  {message}")

    def report(self) -> str:
        tail = self.current.daemon.tail(60) if self.current else "(no daemon)"
        return (
            f"chaos seed: {self.seed}  (replay: SUPERVISOR_CHAOS_SEED={self.seed})\n"
            f"ports: {self.ports}\nstats: {self.stats.as_dict()}\n"
            f"--- scenario steps (last 80) ---\n" + "\n".join(self.events[-80:]) + "\n"
            "--- daemon log tail ---\n" + tail
        )

    def summary(self) -> dict[str, Any]:
        """Figures for docs/reliability.md: counters and fd/RSS start -> end per incarnation."""
        resources = [
            {
                "pid": inc.pid,
                "lifetime_s": round((inc.ended or time.monotonic()) - inc.started, 1),
                "checks": inc.checks,
                "fds": [inc.first[0], inc.last[0]] if inc.first and inc.last else None,
                "rss_mib": [round(inc.first[1] / 2**20, 1), round(inc.last[1] / 2**20, 1)]
                if inc.first and inc.last
                else None,
            }
            for inc in self.incarnations
        ]
        return {"seed": self.seed, "stats": self.stats.as_dict(), "daemons": resources}

    def fail(self, message: str) -> None:
        self.note(f"VIOLATION: {message}")
        raise InvariantViolation(message)

    # -- configs and daemons --------------------------------------------------------------------

    def entries(self) -> list[dict[str, object]]:
        result = []
        for name in NAMES:
            if name not in self.present:
                continue
            port = self.ports[name]
            extra = ("--fork-grandchild",) if name == GRANDCHILD_SIDECAR else ()
            result.append(
                demo_sidecar(
                    name,
                    port,
                    *extra,
                    marker=f"--port {port}",
                    env={"CHAOS_GENERATION": str(self.generation[name])},
                    restart={
                        "base_delay": 0.05,
                        "max_delay": 0.2,
                        "max_attempts": 100000,
                        "reset_after": 1.0,
                    },
                    stop={"timeout": 0.5},
                    ready={"timeout": 15.0},
                )
            )
        return result

    def write_config(self) -> None:
        text = render_config(self.entries(), {"shutdown_timeout": 15.0})
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config)

    def spawn_daemon(self, *, wait_started: bool = True) -> Incarnation:
        daemon = Daemon(self.config, self.state_dir)
        self.managed.add(daemon.pid)
        inc = Incarnation(daemon)
        self.incarnations.append(inc)
        self.stats.incarnations += 1
        self.note(f"daemon started pid {daemon.pid}")
        if wait_started:
            # Signals sent before the handlers are installed take their default action (USR2,
            # HUP: terminate), so every other step starts from `daemon_started`.
            daemon.wait_for("daemon_started", timeout=HANDSHAKE_TIMEOUT_S)
        return inc

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> None:
        self.write_config()
        self.current = self.spawn_daemon()
        self._sampler.start()
        try:
            self.settle_and_check("boot")
            deadline = self.t0 + self.duration_s
            while time.monotonic() < deadline:
                self.stats.steps += 1
                self.step(self.stats.steps)
                self.after_step(self.stats.steps)
            self.note("end: releasing holders, final check, clean shutdown")
            self.cont_stopped()
            for name in list(self.grabs):
                self.release(name)
            self.settle_and_check("final")
            self.clean_shutdown(self.current)
            self.current = None
            self.check_holders()
            self.check_sampler()
        finally:
            self._sampler_stop.set()
            self._sampler.join(5)
            self.teardown()

    def step(self, n: int) -> None:
        actions = [
            (self.kill_sidecar, 20),
            (self.kill_grandchild, 6),
            (self.stop_cont, 8),
            (self.grab_port, 12),
            (self.reload_valid, 8),
            (self.reload_invalid, 5),
            (self.usr1_storm, 6),
            (self.kill_daemon, 5),
            (self.term_during_startup, 3),
            (self.pause, 5),
        ]
        action = self.rng.choices([a for a, _ in actions], [w for _, w in actions])[0]
        self.note(f"step {n}: {action.__name__}")
        action()

    def after_step(self, n: int) -> None:
        self.reap_strays()
        if self.stopped and self.rng.random() < 0.7:
            self.cont_stopped()
        for name, grab in list(self.grabs.items()):
            if grab.release_at_step <= n:
                self.release(name)
        self.settle_and_check(f"after step {n}")

    # -- faults ---------------------------------------------------------------------------------

    def pause(self) -> None:
        time.sleep(self.rng.uniform(0.0, 0.4))

    def pick_running(self, *, exclude_grabbed: bool = True) -> tuple[str, psutil.Process] | None:
        names = sorted(self.present - (set(self.grabs) if exclude_grabbed else set()))
        self.rng.shuffle(names)
        children = self.sidecar_children()
        for name in names:
            procs = children.get(name, [])
            if procs:
                return name, procs[0]
        return None

    def kill_sidecar(self) -> None:
        picked = self.pick_running()
        if picked is None:
            self.note("  no running sidecar to kill")
            return
        name, proc = picked
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
        self.stats.sidecar_kills += 1
        self.note(f"  SIGKILL {name} pid {proc.pid}")
        if self.rng.random() < 0.4:
            # Grab the port in the window between the exit and the restart (or in the backoff).
            time.sleep(self.rng.choice([0.0, 0.0, 0.02, 0.05, 0.1]))
            self.grab(name)

    def kill_grandchild(self) -> None:
        procs = self.sidecar_children().get(GRANDCHILD_SIDECAR, [])
        grandchildren = []
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                grandchildren += [g for g in proc.children() if _alive(g)]
        if not grandchildren:
            self.note("  no grandchild running")
            return
        victim = self.rng.choice(grandchildren)
        with contextlib.suppress(psutil.Error):
            victim.send_signal(signal.SIGKILL)
        self.stats.grandchild_kills += 1
        self.note(f"  SIGKILL grandchild pid {victim.pid}")

    def stop_cont(self) -> None:
        picked = self.pick_running(exclude_grabbed=False)
        if picked is None:
            return
        name, proc = picked
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGSTOP)
            self.stopped.append(proc)
            self.stats.stops += 1
            self.note(f"  SIGSTOP {name} pid {proc.pid}")
        time.sleep(self.rng.uniform(0.0, 0.3))
        if self.rng.random() < 0.5:
            self.cont_stopped()

    def cont_stopped(self) -> None:
        for proc in self.stopped:
            # psutil re-checks the create time: a recycled pid is never signalled.
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGCONT)
                self.note(f"  SIGCONT pid {proc.pid}")
        self.stopped.clear()

    def grab_port(self) -> None:
        """Free a port by killing its sidecar and grab it at once."""
        picked = self.pick_running()
        if picked is None:
            return
        name, proc = picked
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
        self.stats.sidecar_kills += 1
        self.note(f"  SIGKILL {name} pid {proc.pid} to grab its port")
        self.grab(name)

    def grab(self, name: str) -> None:
        if name in self.grabs:
            return
        kind = self.rng.choice(["foreign", "live", "shared"])
        port = self.ports[name]
        flags = ("-", f"--port {port}") if kind == "live" else ()
        holder: Holder | SharedHolder
        try:
            if kind == "shared":
                # Reclaimable alone (tagged, its daemon gone), but its socket is shared with a
                # foreign program: nobody may be killed, the sidecar waits.
                env = {"SUPERVISOR_SIDECAR": name, "SUPERVISOR_OWNER": gone_owner_tag()}
                holder = SharedHolder(port, env=env)
            else:
                # A live instance: tagged by a supervisor that runs (this test stands in for
                # it). The marker alone would make it `unproven` (issue 24).
                tags = live_tags(name) if kind == "live" else {}
                holder = Holder(port, "127.0.0.1", *flags, env=tags)
        except RuntimeError:
            self.stats.grabs_lost += 1
            self.note(f"  {kind} holder lost the race for {name}'s port {port}")
            return
        self.managed.add(holder.proc.pid)
        grab = Grab(holder, name, kind, self.stats.steps + self.rng.randint(1, 3))
        self.grabs[name] = grab
        self.all_holders.append(grab)
        if kind == "live":
            self.stats.live_grabs += 1
        elif kind == "shared":
            self.stats.shared_grabs += 1
        else:
            self.stats.foreign_grabs += 1
        self.note(
            f"  {kind} holder pid {holder.pid} (waited on: {grab.waits_on}) "
            f"holds {name}'s port {port}"
        )

    def release(self, name: str) -> None:
        grab = self.grabs.pop(name)
        if not grab.holder.untouched():
            self.fail(f"{grab.kind} holder pid {grab.holder.pid} of {name} was signalled")
        grab.holder.stop()
        self.note(f"  released {grab.kind} holder pid {grab.holder.pid} ({name})")

    def reload_valid(self) -> None:
        daemon = self.require_daemon()
        if self.rng.random() < 0.3:
            self.present ^= {OPTIONAL_SIDECAR}
        for name in NAMES:
            if self.rng.random() < 0.3:
                self.generation[name] += 1
        self.write_config()
        before = len(daemon.find("config_reloaded"))
        daemon.signal(signal.SIGHUP)
        self.stats.reloads_valid += 1
        self.note(f"  SIGHUP valid: present {sorted(self.present)}, generations {self.generation}")
        daemon.wait_for("config_reloaded", count=before + 1, timeout=SETTLE_TIMEOUT_S)

    def duplicate_port_config(self) -> str:
        """The running config with a second sidecar moved onto the first one's port."""
        entries = self.entries()
        entries[-1]["port"] = entries[0]["port"]
        return render_config(entries, {"shutdown_timeout": 15.0})

    def reload_invalid(self) -> None:
        inc = self.require_incarnation()
        before_doc = self.handshake(inc)
        before = len(inc.daemon.find("config_invalid"))
        # Every other invalid reload (the first one included) puts two sidecars on one port.
        duplicate = self.stats.reloads_invalid % 2 == 0
        text = self.duplicate_port_config() if duplicate else self.rng.choice(INVALID_CONFIGS)
        self.config.write_text(text)
        inc.daemon.signal(signal.SIGHUP)
        self.stats.reloads_invalid += 1
        self.stats.reloads_duplicate_port += duplicate
        self.note(f"  SIGHUP with an invalid config{' (duplicate port)' if duplicate else ''}")
        event = inc.daemon.wait_for("config_invalid", count=before + 1, timeout=HANDSHAKE_TIMEOUT_S)
        if duplicate and "is already used by sidecar" not in json.dumps(event):
            self.fail(f"a duplicate port was rejected for another reason: {event}")
        after_doc = self.handshake(inc)
        self.write_config()
        if _ready_pids(before_doc) != _ready_pids(after_doc):
            self.fail(
                f"an invalid config changed running sidecars: {_ready_pids(before_doc)} -> "
                f"{_ready_pids(after_doc)}"
            )

    def usr1_storm(self) -> None:
        daemon = self.require_daemon()
        count = self.rng.randint(2, 6)
        for _ in range(count):
            daemon.signal(signal.SIGUSR1)
            time.sleep(self.rng.uniform(0.0, 0.03))
        self.stats.usr1_storms += 1
        self.stats.usr1_sent += count
        self.note(f"  {count} x SIGUSR1")

    def kill_daemon(self) -> None:
        inc = self.require_incarnation()
        if self.rng.random() < 0.4:
            inc.daemon.signal(signal.SIGUSR1)  # die in the middle of a restart-all
            self.note("  SIGUSR1 just before the kill")
            time.sleep(self.rng.uniform(0.0, 0.3))
        inc.daemon.kill()
        inc.ended = time.monotonic()
        self.stats.daemon_kills += 1
        self.note(f"  SIGKILL daemon pid {inc.pid}")
        self.current = self.spawn_daemon()
        self.settle_and_check("fresh daemon after SIGKILL")
        self.check_orphans_reclaimed(inc.pid)

    def term_during_startup(self) -> None:
        self.clean_shutdown(self.require_incarnation())
        self.current = None
        inc = self.spawn_daemon(wait_started=False)
        if self.rng.random() < 0.5:
            delay = self.rng.uniform(0.0, 0.8)
            time.sleep(delay)
            self.note(f"  SIGTERM {delay:.3f}s into startup")
        else:
            k = self.rng.randint(1, len(self.present))
            with contextlib.suppress(LogTimeout):
                inc.daemon.wait_for("sidecar_spawned", count=k, timeout=HANDSHAKE_TIMEOUT_S)
            self.note(f"  SIGTERM after spawn #{k}")
        inc.daemon.signal(signal.SIGTERM)
        self.stats.daemon_terms += 1
        try:
            code = inc.daemon.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.fail(f"daemon pid {inc.pid} did not exit within 30s of SIGTERM during startup")
        inc.daemon.kill()  # joins the reader
        inc.ended = time.monotonic()
        if code == -signal.SIGTERM:
            # Killed before its signal handlers were installed: it must not have spawned yet.
            if inc.daemon.find("sidecar_spawned"):
                self.fail("the daemon died of SIGTERM after it had spawned sidecars")
        elif code != 0:
            self.fail(f"SIGTERM during startup: exit code {code}\n{inc.daemon.tail()}")
        self.note(f"  daemon pid {inc.pid} exited {code}")
        self.check_no_survivors(inc.pid)
        self.current = self.spawn_daemon()

    # -- handshakes and settling ----------------------------------------------------------------

    def require_incarnation(self) -> Incarnation:
        if self.current is None:
            raise RuntimeError("no daemon running")
        return self.current

    def require_daemon(self) -> Daemon:
        return self.require_incarnation().daemon

    def handshake(self, inc: Incarnation) -> dict[str, Any]:
        """SIGUSR2, then the status it logged (`status_dumped`)."""
        before = len(inc.daemon.find("status_dumped"))
        inc.daemon.signal(signal.SIGUSR2)
        event = inc.daemon.wait_for("status_dumped", count=before + 1, timeout=HANDSHAKE_TIMEOUT_S)
        self.stats.handshakes += 1
        doc: dict[str, Any] = event["status"]
        return doc

    def expected_state(self, name: str) -> str:
        return "waiting" if name in self.grabs else "ready"

    def settled(self, doc: dict[str, Any]) -> bool:
        sidecars = {s["name"]: s for s in doc["sidecars"]}
        if set(sidecars) != self.present:
            return False
        for name, record in sidecars.items():
            if record["state"] != self.expected_state(name):
                return False
            if record["state"] == "ready" and record["pid"] is None:
                # Its child was just reaped; the daemon is finishing that attempt (output
                # drain, cgroup emptied) and has not scheduled the restart yet: a few ms in
                # which status says `ready` with no pid. Moving, not settled.
                return False
            grab = self.grabs.get(name)
            if grab is not None and not re.search(rf"pid {grab.waits_on}\b", str(record["reason"])):
                return False
        return True

    def settle(self, inc: Incarnation) -> dict[str, Any]:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        delay = 0.02
        while True:
            doc = self.handshake(inc)
            if self.settled(doc):
                return doc
            if time.monotonic() > deadline:
                states = {s["name"]: (s["state"], s["reason"]) for s in doc["sidecars"]}
                self.fail(
                    f"not settled within {SETTLE_TIMEOUT_S}s: {states}; expected "
                    f"{ {n: self.expected_state(n) for n in sorted(self.present)} }"
                )
            # Polling the daemon's own answer (a handshake), not sleeping in place of one.
            time.sleep(delay)
            delay = min(delay * 2, 0.3)

    def settle_and_check(self, when: str) -> None:
        inc = self.require_incarnation()
        self.cont_stopped_if_needed()
        self.settle(inc)
        for _ in range(5):
            first = self.handshake(inc)
            observed = self.observe(inc)
            second = self.handshake(inc)
            if _key(first) == _key(second) and self.settled(second):
                self.check(inc, second, observed, when)
                return
            self.note(f"  {when}: state moved during the check; again")
            self.settle(inc)
        self.fail(f"{when}: the state never held still for a check")

    def cont_stopped_if_needed(self) -> None:
        # A sidecar stopped while its restart is due would never become ready: always continue
        # pending ones before settling (leaving some stopped across a step is part of the mix).
        if self.stopped:
            self.cont_stopped()

    # -- observation and invariants -------------------------------------------------------------

    def sidecar_children(self, daemon_pid: int | None = None) -> dict[str, list[psutil.Process]]:
        """Live (non-zombie) children of the daemon, by their SUPERVISOR_SIDECAR tag."""
        pid = daemon_pid if daemon_pid is not None else self.require_incarnation().pid
        result: dict[str, list[psutil.Process]] = {}
        try:
            children = psutil.Process(pid).children()
        except psutil.Error:
            return result
        for child in children:
            if not _alive(child):
                continue
            name = _environ(child).get("SUPERVISOR_SIDECAR")
            if name:
                result.setdefault(name, []).append(child)
        return result

    def zombies(self, daemon_pid: int) -> list[int]:
        try:
            children = psutil.Process(daemon_pid).children()
        except psutil.Error:
            return []
        return [c.pid for c in children if not _alive(c) and psutil.pid_exists(c.pid)]

    def tagged(self) -> Iterator[tuple[psutil.Process, int]]:
        """Every live process under us that carries a daemon's owner tag, with that daemon's pid."""
        for proc in psutil.Process().children(recursive=True):
            if not _alive(proc):
                continue
            owner = _owner_pid(_environ(proc))
            if owner is not None:
                yield proc, owner

    def observe(self, inc: Incarnation) -> dict[str, Any]:
        pidfiles: dict[str, Any] = {}
        for name in NAMES:
            path = self.state_dir / name / "sidecar.pid"
            if path.is_symlink() or path.exists():
                try:
                    pidfiles[name] = json.loads(path.read_text())
                except (OSError, ValueError) as exc:
                    pidfiles[name] = f"unparsable: {exc}"
        try:
            status_text = (self.state_dir / "status.json").read_text()
        except OSError as exc:
            status_text = f"unreadable: {exc}"
        children = {
            name: [(p.pid, p.create_time()) for p in procs]
            for name, procs in self.sidecar_children(inc.pid).items()
        }
        groups = {}
        for proc, owner in self.tagged():
            with contextlib.suppress(psutil.Error, OSError):
                groups[proc.pid] = (owner, os.getpgid(proc.pid))
        return {
            "pidfiles": pidfiles,
            "status_text": status_text,
            "children": children,
            "tagged": groups,
            "zombies": self.zombies(inc.pid),
            "fds": _fd_count(inc.pid),
            "rss": psutil.Process(inc.pid).memory_info().rss,
        }

    def check(self, inc: Incarnation, doc: dict[str, Any], seen: dict[str, Any], when: str) -> None:
        self.stats.invariant_checks += 1
        inc.checks += 1
        self.check_holders()
        self.check_sampler()
        # 4. status.json parses and matches the dump and the processes.
        try:
            on_disk = json.loads(seen["status_text"])
        except ValueError:
            self.fail(f"{when}: status.json does not parse: {seen['status_text'][:200]!r}")
        if _key(on_disk) != _key(doc) or on_disk["supervisor"]["pid"] != inc.pid:
            self.fail(f"{when}: status.json {_key(on_disk)} != dump {_key(doc)}")
        ready: dict[str, int] = {}
        for record in doc["sidecars"]:
            name = record["name"]
            kids = seen["children"].get(name, [])
            # 2. at most one child per sidecar, and exactly the one the status names.
            if len(kids) > 1:
                self.fail(f"{when}: {name} has {len(kids)} children: {kids}")
            if record["state"] == "ready":
                if [pid for pid, _ in kids] != [record["pid"]]:
                    self.fail(f"{when}: {name} ready with pid {record['pid']}; children {kids}")
                ready[name] = record["pid"]
                # 3. the PID file names the current ready child, pid and create time.
                pidfile = seen["pidfiles"].get(name)
                created = kids[0][1]
                if not isinstance(pidfile, dict):
                    self.fail(f"{when}: {name} is ready but its PID file is {pidfile!r}")
                if pidfile["pid"] != record["pid"] or abs(pidfile["create_time"] - created) > 0.01:
                    self.fail(f"{when}: {name} PID file {pidfile} != child {kids[0]}")
                if pidfile["supervisor_pid"] != inc.pid:
                    self.fail(f"{when}: {name} PID file names daemon {pidfile['supervisor_pid']}")
            else:
                if kids or record["pid"] is not None:
                    self.fail(f"{when}: {name} is {record['state']} but has children {kids}")
                pidfile = seen["pidfiles"].get(name)
                # A record left by a SIGKILLed daemon may linger until the next ready; one of
                # this daemon's would be a lie.
                if isinstance(pidfile, dict) and pidfile.get("supervisor_pid") == inc.pid:
                    self.fail(f"{when}: {name} is {record['state']} but has PID file {pidfile}")
                if pidfile is not None and not isinstance(pidfile, dict):
                    self.fail(f"{when}: {name} PID file does not parse: {pidfile!r}")
        for name, pidfile in seen["pidfiles"].items():
            mine = isinstance(pidfile, dict) and pidfile.get("supervisor_pid") == inc.pid
            if name not in self.present and mine:
                self.fail(f"{when}: removed sidecar {name} left PID file {pidfile}")
        extra = set(seen["children"]) - self.present
        if extra:
            self.fail(f"{when}: children of removed sidecars survive: {extra}")
        if seen["zombies"]:
            self.fail(f"{when}: zombies under the daemon: {seen['zombies']}")
        # Everything carrying this daemon's tag belongs to a ready child's process group.
        for pid, (owner, pgid) in seen["tagged"].items():
            if owner == inc.pid and pgid not in ready.values():
                self.fail(f"{when}: pid {pid} of daemon {owner} is outside every live group")
        self.check_resources(inc, seen, len(ready))

    def check_resources(self, inc: Incarnation, seen: dict[str, Any], n_ready: int) -> None:
        """5. fd count and RSS do not grow (per shape: the number of ready and present sidecars)."""
        fds, rss = seen["fds"], seen["rss"]
        if inc.checks <= WARMUP_CHECKS:
            return
        if inc.first is None:
            inc.first = (fds, rss)
        inc.last = (fds, rss)
        shape = (n_ready, len(self.present))
        base = inc.baseline.setdefault(shape, (fds, rss))
        if fds > base[0] + FD_TOLERANCE:
            self.fail(f"daemon fd count grew {base[0]} -> {fds} (shape {shape})")
        if rss > base[1] + RSS_TOLERANCE_BYTES:
            self.fail(f"daemon RSS grew {base[1] / 2**20:.1f} -> {rss / 2**20:.1f} MiB")

    def check_holders(self) -> None:
        """1. no process outside a sidecar's own current child tree is ever signalled: no
        foreign, live or shared-socket holder (both processes), and each was classified as
        such (a shared socket: the tagged leader an orphan, its co-holder foreign)."""
        daemon = self.current.daemon if self.current else None
        for grab in self.grabs.values():
            if not grab.holder.untouched():
                self.fail(f"{grab.kind} holder pid {grab.holder.pid} ({grab.sidecar}) signalled")
            for pid, expected in grab.expected_verdicts().items():
                found = daemon.find("reconcile_holder_found", pid=pid) if daemon else []
                verdicts = {event["verdict"] for event in found}
                if verdicts - {expected}:
                    self.fail(f"{grab.kind} holder pid {pid} classified {verdicts}")
            if daemon is not None and grab.kind == "shared":
                for event in daemon.find("orphan_killed", pid=grab.holder.pid):
                    self.fail(f"the tagged co-holder pid {grab.holder.pid} was killed: {event}")

    def check_sampler(self) -> None:
        if self._sampler_violations:
            self.fail("sampler: " + "; ".join(self._sampler_violations[:5]))

    def check_orphans_reclaimed(self, old_pid: int) -> None:
        """6. after a daemon SIGKILL, the fresh daemon reclaimed every port-holding orphan."""
        ports = {self.ports[name] for name in NAMES}
        self.stats.orphans_reclaimed += len(self.require_daemon().find("orphan_killed"))
        for proc, owner in list(self.tagged()):
            if owner != old_pid:
                continue
            with contextlib.suppress(psutil.Error):
                held = {c.laddr.port for c in proc.net_connections("tcp") if c.status == "LISTEN"}
                if held & ports:
                    self.fail(f"orphan pid {proc.pid} of daemon {old_pid} holds {held & ports}")

        def leaders_gone() -> bool:
            # An orphan killed while still starting never bound its port: it fails to bind now
            # that the fresh daemon's child holds it, and exits by itself.
            return not any(
                owner == old_pid and _leads_group(proc.pid) for proc, owner in self.tagged()
            )

        try:
            wait_until(leaders_gone, 5.0, f"orphan group leaders of daemon {old_pid} gone")
        except AssertionError:
            left = [p.pid for p, o in self.tagged() if o == old_pid and _leads_group(p.pid)]
            self.fail(f"orphans of daemon {old_pid} survive without holding a port: {left}")
        for proc, owner in list(self.tagged()):
            if owner != old_pid:
                continue
            # A grandchild whose leader died on its own (it lost the port race) holds no port:
            # the reconcile finds holders by port (SPEC 5.1), so nothing reclaims it. Counted
            # and cleaned up here; see docs/reliability.md.
            self.stats.strays_cleaned += 1
            self.note(f"  stray pid {proc.pid} of daemon {old_pid} (leader gone, no port): killed")
            with contextlib.suppress(psutil.Error):
                proc.kill()

    def check_no_survivors(self, daemon_pid: int) -> None:
        def gone() -> bool:
            return not any(owner == daemon_pid for _, owner in self.tagged())

        try:
            wait_until(gone, 3.0, f"every child of daemon {daemon_pid} gone")
        except AssertionError:
            left = [p.pid for p, owner in self.tagged() if owner == daemon_pid]
            self.fail(f"processes of daemon {daemon_pid} outlived its clean shutdown: {left}")
        for name in NAMES:
            path = self.state_dir / name / "sidecar.pid"
            if path.exists():
                self.fail(f"clean shutdown left {path}: {path.read_text()!r}")

    def clean_shutdown(self, inc: Incarnation) -> None:
        self.cont_stopped()
        code = inc.daemon.stop(30)
        inc.ended = time.monotonic()
        self.note(f"  daemon pid {inc.pid} stopped: exit {code}")
        if code != 0:
            self.fail(f"clean shutdown of daemon {inc.pid} exited {code}")
        self.check_no_survivors(inc.pid)
        if (self.state_dir / "supervisor.pid").exists():
            self.fail("clean shutdown left supervisor.pid")
        doc = json.loads((self.state_dir / "status.json").read_text())
        if any(s["state"] != "stopped" for s in doc["sidecars"]):
            self.fail(f"status.json after shutdown: {_key(doc)}")

    # -- the sampler ----------------------------------------------------------------------------

    def _sample(self) -> None:
        """2. at most one live child per sidecar at any time, sampled between the checks."""
        while not self._sampler_stop.wait(0.1):
            inc = self.current
            if inc is None:
                continue
            for name, procs in self.sidecar_children(inc.pid).items():
                live = [p.pid for p in procs if _alive(p)]
                if len(live) > 1:
                    self._sampler_violations.append(f"{name}: children {live} at once")
            self.stats.samples += 1

    # -- cleanup --------------------------------------------------------------------------------

    def teardown(self) -> None:
        self.cont_stopped()
        for inc in self.incarnations:
            if inc.daemon.proc.poll() is None:
                with contextlib.suppress(Exception):
                    inc.daemon.stop(20)
        for grab in self.all_holders:
            grab.holder.stop()
        for proc, _ in list(self.tagged()):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self.reap_strays()

    def reap_strays(self) -> None:
        """Reap orphans reparented to us (we are a subreaper) that no Popen object owns."""
        for child in psutil.Process().children():
            if child.pid in self.managed:
                continue
            with contextlib.suppress(psutil.Error, ChildProcessError, OSError):
                if child.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(child.pid, os.WNOHANG)


def _key(doc: dict[str, Any]) -> list[tuple[str, str, int | None]]:
    return [(s["name"], s["state"], s["pid"]) for s in doc["sidecars"]]


def _ready_pids(doc: dict[str, Any]) -> dict[str, int]:
    return {s["name"]: s["pid"] for s in doc["sidecars"] if s["state"] == "ready"}
