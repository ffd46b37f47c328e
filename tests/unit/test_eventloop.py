"""The event loop of the project's processes: uvloop unless COEXISTENCE_ROUTER_LOOP=asyncio."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from worker import eventloop


def test_uvloop_by_default_and_asyncio_on_request() -> None:
    assert eventloop.loop_factory({}) is uvloop.new_event_loop
    assert eventloop.loop_factory({"COEXISTENCE_ROUTER_LOOP": "uvloop"}) is uvloop.new_event_loop
    assert eventloop.loop_factory({"COEXISTENCE_ROUTER_LOOP": " Asyncio "}) is (
        asyncio.new_event_loop
    )


def test_run_returns_the_result_on_the_chosen_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COEXISTENCE_ROUTER_LOOP", raising=False)

    async def which() -> str:
        await asyncio.sleep(0)
        return eventloop.loop_name(asyncio.get_running_loop())

    assert eventloop.run(which()) == "uvloop"


def test_run_on_asyncio_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COEXISTENCE_ROUTER_LOOP", "asyncio")

    async def which() -> str:
        return eventloop.loop_name(asyncio.get_running_loop())

    assert eventloop.run(which()) == "asyncio"


def test_a_subclass_of_uvloop_is_named_uvloop() -> None:
    class Guarded(uvloop.Loop):
        pass

    loop = Guarded()
    try:
        assert eventloop.loop_name(loop) == "uvloop"
    finally:
        loop.close()
    plain = asyncio.new_event_loop()
    try:
        assert eventloop.loop_name(plain) == "asyncio"
    finally:
        plain.close()
