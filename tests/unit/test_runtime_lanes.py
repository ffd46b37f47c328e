"""Per-sender lanes: one sender in order, senders concurrently, abandon on demand."""

from __future__ import annotations

import asyncio

from worker.runtime.lanes import SenderLanes


async def test_one_sender_in_order_different_senders_at_once() -> None:
    gates = {name: asyncio.Event() for name in ("a1", "a2", "b1")}
    started: list[str] = []
    finished: list[str] = []

    async def handle(item: str) -> None:
        started.append(item)
        await gates[item].wait()
        finished.append(item)

    lanes: SenderLanes[str] = SenderLanes(handle)
    lanes.submit("a", "a1")
    lanes.submit("a", "a2")
    lanes.submit("b", "b1")
    await asyncio.sleep(0)
    assert started == ["a1", "b1"]  # b does not wait for a; a2 waits for a1
    gates["a2"].set()
    gates["b1"].set()
    await asyncio.sleep(0)
    assert "a2" not in started
    gates["a1"].set()
    assert await lanes.wait_idle(1)
    assert finished.index("a1") < finished.index("a2")
    assert not lanes.busy("a")


async def test_abandon_cancels_running_and_queued_items() -> None:
    never = asyncio.Event()
    handled: list[str] = []

    async def handle(item: str) -> None:
        await never.wait()
        handled.append(item)

    lanes: SenderLanes[str] = SenderLanes(handle)
    lanes.submit("a", "a1")
    lanes.submit("a", "a2")
    assert not await lanes.wait_idle(0.01)
    await lanes.abandon()
    assert handled == []
    assert not lanes.busy("a")
