"""agora.aio.wait_set: the loops that run until shutdown never lose their cancellation."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import pytest

from agora.aio import wait_set


async def _old_wait(event: asyncio.Event, seconds: float) -> bool:
    """What the loops did before: asyncio.wait_for around the event."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def _loop_until_cancelled(wait: Callable[[asyncio.Event, float], Awaitable[bool]]) -> bool:
    """A reconcile-style loop, woken and cancelled in the same moment (as at shutdown, right
    after a change woke it); True when the cancellation ended it."""
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await wait(event, 30)
            event.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.01)  # the loop waits on the event
    event.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    if not done:
        task.cancel()  # a second cancel ends the leftover loop
        with pytest.raises(asyncio.CancelledError):
            await task
        return False
    return task.cancelled()


def test_a_cancellation_as_the_event_is_set_ends_the_loop() -> None:
    assert asyncio.run(_loop_until_cancelled(wait_set))


def test_wait_set_answers_whether_the_event_was_set() -> None:
    async def both() -> tuple[bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_set(event, 0.01)
        asyncio.get_running_loop().call_later(0.01, event.set)
        return timed_out, await wait_set(event, 5)

    assert asyncio.run(both()) == (False, True)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="Python 3.12's wait_for keeps it")
def test_wait_for_lost_that_cancellation() -> None:
    """Why wait_set exists: on this Python, wait_for swallows it and the loop goes on."""
    assert not asyncio.run(_loop_until_cancelled(_old_wait))
