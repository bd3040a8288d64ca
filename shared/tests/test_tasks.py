"""Background tasks stop when asked, even after a library swallowed the cancellation."""

from __future__ import annotations

import asyncio

from shared.tasks import cancel_requested, stop_task


async def test_a_task_that_lost_a_cancellation_is_still_stopped() -> None:
    lost = 0

    async def stubborn_loop() -> None:
        nonlocal lost
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost += 1  # what asyncio.wait_for does on 3.11 when the reply and the cancel meet

    task = asyncio.create_task(stubborn_loop())
    await asyncio.sleep(0.02)
    await asyncio.wait_for(stop_task(task, patience=0.1), 5)
    assert task.cancelled() and lost == 1


async def test_a_loop_checking_cancel_requested_ends_after_an_eaten_cancellation() -> None:
    rounds_after_cancel = 0

    async def kit_style_loop() -> None:
        nonlocal rounds_after_cancel
        while not cancel_requested():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                rounds_after_cancel += 1  # swallowed, as a library might
            except Exception:
                continue

    task = asyncio.create_task(kit_style_loop())
    await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.wait_for(asyncio.wait({task}), 5)
    assert task.done() and rounds_after_cancel == 1


async def test_stopping_nothing_or_a_finished_task_is_fine() -> None:
    await stop_task(None)
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await stop_task(done)
