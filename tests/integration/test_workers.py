"""The daemon's worker threads: a small pool, and a way around it for a wait that may last."""

from __future__ import annotations

import threading

import anyio
import pytest

from supervisor.system import workers

WAIT_S = 10.0


@pytest.mark.anyio
async def test_the_pool_is_bounded_and_a_long_wait_takes_its_own_thread() -> None:
    limiter = anyio.to_thread.current_default_thread_limiter()
    before = limiter.total_tokens
    workers.limit_threads(2)
    release = threading.Event()
    entered = threading.Semaphore(0)

    def hold() -> None:
        entered.release()
        release.wait(WAIT_S)

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(workers.run_sync, hold)
            for _ in range(2):  # two of the three run (bounded: a stuck pool fails the test)
                assert await workers.run_sync(entered.acquire, True, WAIT_S, own_thread=True)
            with anyio.fail_after(WAIT_S):
                await anyio.wait_all_tasks_blocked()
            # The third is queued on the limiter: no thread for it.
            assert limiter.statistics().tasks_waiting == 1
            assert limiter.borrowed_tokens == 2
            # Outside the limit: it runs while the pool is full.
            assert await workers.run_sync(threading.get_ident, own_thread=True) not in (
                threading.get_ident(),
            )
            release.set()
    finally:
        release.set()
        limiter.total_tokens = before
    assert entered.acquire(timeout=0)  # the third ran once a thread was free
