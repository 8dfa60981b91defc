"""Small asyncio helpers."""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` have passed; True when it was set.

    For the loops that run until cancelled (at shutdown). ``asyncio.wait_for`` on Python 3.11
    loses a cancellation that arrives just as the awaited event is set: the loop then goes
    round again and whoever awaits its end waits for ever. ``asyncio.timeout`` keeps count of
    cancellations and loses none.
    """
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
