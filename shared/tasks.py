"""Background tasks that stop when asked, even when a library loses the cancellation.

On Python 3.11, ``asyncio.wait_for`` (used inside nats-py's requests and fetches) can
swallow a cancellation that arrives together with the awaited result; a loop that
catches the error that follows would then run on, and a plain ``await task`` after
``task.cancel()`` would wait forever. Loops check :func:`cancel_requested`, and
:func:`stop_task` cancels again until the task has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


def cancel_requested() -> bool:
    """True when the running task has been asked to stop (even if a library ate the signal)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def stop_task(task: asyncio.Task[Any] | None, *, patience: float = 1.0) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again as often as needed."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=patience)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
