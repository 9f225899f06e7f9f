"""Pure sidecar lifecycle: states, the transition table, the restart decision and backoff."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from supervisor.config.schema import RestartConfig, RestartPolicy


class State(StrEnum):
    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"
    WAITING = "waiting"
    FAILED = "failed"
    EXITED = "exited"
    COMPLETED = "completed"  # exited 0 and the policy says don't restart: a one-shot task done
    STOPPING = "stopping"
    STOPPED = "stopped"


class Event(StrEnum):
    LAUNCH = "launch"  # preflight + spawn begins
    READY = "ready"  # readiness confirmed
    WAIT = "wait"  # port held by a holder we won't or may not kill
    RETRY = "retry"  # exited or failed to start; a restart is scheduled
    GIVE_UP = "give_up"  # budget exhausted, or a foreign holder with foreign = "fail"
    FINISH = "finish"  # exited and the policy says don't restart
    COMPLETE = "complete"  # exited 0 and the policy says don't restart
    DEPEND = "depend"  # a dependency's condition does not hold (yet): wait for it
    STOP = "stop"  # stop requested
    STOPPED = "stopped"  # stop completed


_RUNNING_EXITS = {
    Event.RETRY: State.BACKOFF,
    Event.GIVE_UP: State.FAILED,
    Event.FINISH: State.EXITED,
    Event.COMPLETE: State.COMPLETED,
}
# Before each launch, the sidecar waits for its dependencies (waiting -> waiting: the blocking
# dependency or its state changed).
_AT_REST = {Event.LAUNCH: State.STARTING, Event.DEPEND: State.WAITING, Event.STOP: State.STOPPING}

TRANSITIONS: Mapping[State, Mapping[Event, State]] = MappingProxyType(
    {
        State.STOPPED: {Event.LAUNCH: State.STARTING, Event.DEPEND: State.WAITING},
        State.STARTING: {
            Event.READY: State.READY,
            Event.WAIT: State.WAITING,
            **_RUNNING_EXITS,
            Event.STOP: State.STOPPING,
        },
        State.READY: {**_RUNNING_EXITS, Event.STOP: State.STOPPING},
        State.BACKOFF: _AT_REST,
        State.WAITING: _AT_REST,
        State.FAILED: _AT_REST,
        State.EXITED: _AT_REST,
        State.COMPLETED: _AT_REST,
        State.STOPPING: {Event.STOPPED: State.STOPPED},
    }
)


class InvalidTransition(RuntimeError):
    """A bug: the shell fed an event the current state does not accept."""


def next_state(state: State, event: Event) -> State:
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise InvalidTransition(f"{event} is not valid in state {state}") from None


def backoff_delay_s(restart_number: int, base_delay_s: float, max_delay_s: float) -> float:
    """Restart n (n = 1, 2, ...) waits min(base_delay * 2**(n-1), max_delay)."""
    if restart_number < 1:
        raise ValueError(f"restart numbers start at 1, got {restart_number}")
    if restart_number > 64:  # 2**63 * anything positive is past any sane max_delay
        return max_delay_s if base_delay_s > 0 else 0.0
    return min(base_delay_s * 2.0 ** (restart_number - 1), max_delay_s)


@dataclass(frozen=True)
class ExitInfo:
    """How a child ended: `code` for a normal exit, `signal` when a signal killed it."""

    code: int | None
    signal: int | None
    failed_start: bool  # never became ready (exited early, timed out, or could not spawn)
    daemonized: bool = False  # it exited and left a process of its own serving the port
    unhealthy: bool = False  # stopped by us: `health.failures` consecutive checks failed
    # The program cannot be executed at all (not found, not executable, no cwd): no retry
    # would change that, so the sidecar fails at once with the reason instead of backing off.
    unstartable: bool = False

    @property
    def clean(self) -> bool:
        """A success for `on-failure`: exit 0 after readiness. A failed start never is, whatever
        its code (a child stopped for missing `ready.timeout` may well exit 0 on SIGTERM), and
        neither is an unhealthy child we stopped: a hung server is a failure, like a crash, so
        `always` and `on-failure` restart it and `never` leaves it exited."""
        return (
            self.code == 0 and self.signal is None and not self.failed_start and not self.unhealthy
        )


@dataclass(frozen=True)
class Decision:
    event: Event  # RETRY, GIVE_UP or FINISH
    attempts: int  # the consecutive-restart count after this decision
    delay_s: float  # wait before the next launch (RETRY only)


def decide_after_exit(restart: RestartConfig, attempts: int, exit_info: ExitInfo) -> Decision:
    """What to do when a child exits (or fails to start) while the sidecar should run."""
    if exit_info.daemonized or exit_info.unstartable:
        # Every restart would daemonize again and fight the server it left, or fail to exec
        # the same way: give up, say why.
        return Decision(Event.GIVE_UP, attempts, 0.0)
    match restart.policy:
        case RestartPolicy.NEVER:
            return Decision(Event.FINISH, attempts, 0.0)
        case RestartPolicy.ON_FAILURE if exit_info.clean:
            return Decision(Event.FINISH, attempts, 0.0)
        case RestartPolicy.ALWAYS | RestartPolicy.ON_FAILURE:
            pass
    if attempts >= restart.max_attempts:
        return Decision(Event.GIVE_UP, attempts, 0.0)
    restart_number = attempts + 1
    delay = backoff_delay_s(restart_number, restart.base_delay_s, restart.max_delay_s)
    return Decision(Event.RETRY, restart_number, delay)


def finish_event(exit_info: ExitInfo) -> Event:
    """The policy says don't restart: a clean exit (0) completed the task, anything else exited."""
    return Event.COMPLETE if exit_info.clean else Event.FINISH


def probe_delay_s(elapsed_s: float, interval_s: float) -> float:
    """The pause before the next readiness probe.

    Proportional to the time already spent starting (10 %), so readiness is noticed within ~10 %
    of a child's own start-up time, from 2 ms early on up to `interval_s`.
    """
    return min(interval_s, max(0.002, elapsed_s * 0.1))
