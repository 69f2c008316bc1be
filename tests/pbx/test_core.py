"""PbxCore: handlers start eagerly, continue in a task after their first wait, fail safely."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edge.pbx.core import PbxCore
from edge.sip.events import Peer, RequestReceived
from edge.sip.message import Request, Response, parse_message
from tests.sipmsg import request

PEER = Peer(transport="UDP", address=("127.0.0.1", 5070))


class Transport:
    def __init__(self) -> None:
        self.responses: list[tuple[int, int]] = []
        self.dropped: list[int] = []

    def respond(self, transaction_id: int, response: Response) -> None:
        self.responses.append((transaction_id, response.status))

    def drop(self, transaction_id: int) -> None:
        self.dropped.append(transaction_id)

    def send_request(self, request: Request, peer: Peer) -> int:
        raise AssertionError("not used")

    def send_stateless(self, message: Request | Response, peer: Peer) -> None:
        raise AssertionError("not used")

    def now(self) -> float:
        return 0.0


def event(transaction_id: int = 7) -> RequestReceived:
    message = parse_message(request("REGISTER"))
    assert isinstance(message, Request)
    return RequestReceived(request=message, peer=PEER, transaction_id=transaction_id)


class Handler:
    def __init__(self, transport: Transport, gate: asyncio.Future[int] | None = None,
                 fail: str = "") -> None:
        self.transport = transport
        self.gate = gate
        self.fail = fail
        self.cleaned_up = False

    async def handle(self, event: RequestReceived) -> None:
        assert event.transaction_id is not None
        if self.fail == "before":
            raise RuntimeError("boom")
        try:
            status = 200 if self.gate is None else await self.gate
            await asyncio.sleep(0)
        finally:
            self.cleaned_up = True
        if self.fail == "after":
            raise RuntimeError("boom")
        self.transport.respond(event.transaction_id, Response(status, "X"))


def run(body: Any) -> None:
    asyncio.run(body())


def test_a_handler_without_waits_finishes_inside_on_event() -> None:
    async def body() -> None:
        transport = Transport()

        class Sync:
            async def handle(self, event: RequestReceived) -> None:
                assert event.transaction_id is not None
                transport.respond(event.transaction_id, Response(401, "Unauthorized"))

        core = PbxCore(transport, {"REGISTER": Sync()})
        core.on_event(event())
        assert transport.responses == [(7, 401)]  # answered before on_event returned
        assert not core._tasks

    run(body)


def test_a_waiting_handler_resumes_with_the_awaited_value() -> None:
    async def body() -> None:
        transport = Transport()
        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        core = PbxCore(transport, {"REGISTER": Handler(transport, gate)})
        core.on_event(event())
        assert transport.responses == [] and len(core._tasks) == 1
        gate.set_result(202)
        for _ in range(5):
            await asyncio.sleep(0)
        assert transport.responses == [(7, 202)]
        assert not core._tasks

    run(body)


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_failing_handler_gets_500(when: str) -> None:
    async def body() -> None:
        transport = Transport()
        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        gate.set_result(200)
        core = PbxCore(transport, {"REGISTER": Handler(transport, gate, fail=when)})
        core.on_event(event())
        for _ in range(5):
            await asyncio.sleep(0)
        assert transport.responses == [(7, 500)]

    run(body)


def test_an_awaited_error_is_thrown_into_the_handler() -> None:
    async def body() -> None:
        transport = Transport()
        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        handler = Handler(transport, gate)
        core = PbxCore(transport, {"REGISTER": handler})
        core.on_event(event())
        gate.set_exception(ValueError("store down"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert transport.responses == [(7, 500)]
        assert handler.cleaned_up

    run(body)


def test_close_cancels_a_waiting_handler_and_runs_its_cleanup() -> None:
    async def body() -> None:
        transport = Transport()
        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        handler = Handler(transport, gate)
        core = PbxCore(transport, {"REGISTER": handler})
        core.on_event(event())
        await core.close()
        assert handler.cleaned_up
        assert transport.responses == []

    run(body)
