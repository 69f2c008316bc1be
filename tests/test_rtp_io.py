"""The asyncio RTP relay over real UDP on 127.0.0.1: two phones (plain datagram endpoints)
talk through `RtpRelay` on the default loop and on uvloop."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
import uvloop

from edge.io.rtp_relay import RtpRelay
from edge.rtp.ports import PortAllocator, PortsExhausted

pytestmark = pytest.mark.timeout(20)

LOCAL = "127.0.0.1"
Address = tuple[str, int]

OPEN_PHONES: list[Phone] = []
OPEN_RELAYS: list[RtpRelay] = []

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def run(request: pytest.FixtureRequest) -> Callable[[Callable[[], Awaitable[None]]], None]:
    factory = LOOPS[request.param]

    def runner(scenario: Callable[[], Awaitable[None]]) -> None:
        async def main() -> None:
            try:
                await asyncio.wait_for(scenario(), 10)
            finally:
                # uvloop hangs in loop.close() on transports left open: close everything here.
                for relay in OPEN_RELAYS:
                    relay.close()
                for sock in OPEN_PHONES:
                    if sock.transport is not None:
                        sock.transport.close()
                OPEN_RELAYS.clear()
                OPEN_PHONES.clear()
                await asyncio.sleep(0.01)

        with asyncio.Runner(loop_factory=factory) as r:
            r.run(main())

    return runner


def free_range(pairs: int) -> int:
    """An even port whose next `2 * pairs` ports are bindable on 127.0.0.1 right now."""
    for _ in range(50):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((LOCAL, 0))
        base: int = probe.getsockname()[1] & ~1
        probe.close()
        if base + 2 * pairs > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for port in range(base, base + 2 * pairs):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind((LOCAL, port))
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
        return base
    raise RuntimeError("no free port range on 127.0.0.1")


def rtp(pt: int, seq: int, *, marker: bool = False, payload: bytes = b"\xd5" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, seq * 160,
                       0x1234) + payload


def rtcp_rr() -> bytes:
    # RFC 3550 §6.4.2: an RR with no report blocks, PT 201, length 1 (two 32-bit words).
    return struct.pack("!BBHI", 0x80, 201, 1, 0x1234)


class Phone(asyncio.DatagramProtocol):
    """One UDP socket of a phone: remembers what arrived and from where."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, (addr[0], addr[1])))

    @property
    def address(self) -> Address:
        assert self.transport is not None
        name: Any = self.transport.get_extra_info("sockname")
        return (name[0], name[1])

    def send(self, data: bytes, dest: Address) -> None:
        assert self.transport is not None
        self.transport.sendto(data, dest)

    async def recv(self) -> tuple[bytes, Address]:
        return await asyncio.wait_for(self.queue.get(), 2.0)

    async def nothing(self, wait: float = 0.15) -> None:
        await asyncio.sleep(wait)
        assert self.queue.empty(), self.queue.get_nowait()


async def phone(port: int = 0) -> Phone:
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Phone, local_addr=(LOCAL, port)
    )
    OPEN_PHONES.append(protocol)
    return protocol


async def phone_pair() -> tuple[Phone, Phone]:
    """An RTP socket on an even port and its RTCP socket on RTP + 1 (RFC 3550 §11)."""
    base = free_range(1)
    return await phone(base), await phone(base + 1)


def new_relay(pairs: int = 4) -> RtpRelay:
    base = free_range(pairs)
    relay = RtpRelay(LOCAL, base, base + 2 * pairs - 1)
    OPEN_RELAYS.append(relay)
    return relay


# --- the allocator (sans-IO) -------------------------------------------------------------------


def test_allocator_hands_out_even_pairs_in_range_once() -> None:
    ports = PortAllocator(20001, 20008)
    got = [ports.allocate() for _ in range(3)]
    assert got == [20002, 20004, 20006]  # 20008 has no RTCP port 20009 in range
    with pytest.raises(PortsExhausted):
        ports.allocate()
    ports.release(20004)
    assert ports.allocate() == 20004
    with pytest.raises(ValueError, match="not allocated"):
        ports.release(30000)


def test_allocator_reuses_released_pairs_last_and_retries_refused_last() -> None:
    ports = PortAllocator(1000, 1005)
    first = ports.allocate()
    ports.refuse(first)
    assert [ports.allocate() for _ in range(3)] == [1002, 1004, 1000]
    assert ports.free_count == 0 and ports.in_use_count == 3 and ports.capacity == 3


def test_allocator_rejects_a_range_without_a_pair() -> None:
    with pytest.raises(ValueError, match="no even/odd pair"):
        PortAllocator(3000, 3000)


# --- the relay over real UDP ----------------------------------------------------------------


def test_rtp_and_rtcp_flow_and_latch_to_the_nat_source(run: Any) -> None:
    async def scenario() -> None:
        relay = new_relay()
        a_sdp_rtp, a_sdp_rtcp = await phone_pair()  # what A's SDP says: never used to send
        a_nat_rtp, a_nat_rtcp = await phone(), await phone()  # where A's packets really come from
        b_rtp, b_rtcp = await phone_pair()
        call = await relay.open_session(a_sdp_rtp.address, b_rtp.address)
        a_rtp_port, a_rtcp_port = call.a_ports
        b_rtp_port, b_rtcp_port = call.b_ports
        assert a_rtp_port % 2 == 0 and a_rtcp_port == a_rtp_port + 1
        assert b_rtcp_port == b_rtp_port + 1 and b_rtp_port != a_rtp_port

        # Before A has sent anything, media towards A goes to its SDP address.
        b_rtp.send(rtp(0, 1), (LOCAL, b_rtp_port))
        data, source = await a_sdp_rtp.recv()
        assert data == rtp(0, 1) and source == (LOCAL, a_rtp_port)

        # A sends from behind a NAT: B gets it from our b-side RTP port...
        a_nat_rtp.send(rtp(0, 7), (LOCAL, a_rtp_port))
        data, source = await b_rtp.recv()
        assert data == rtp(0, 7) and source == (LOCAL, b_rtp_port)
        # ...and media towards A now follows the latched source, not the SDP.
        b_rtp.send(rtp(0, 2), (LOCAL, b_rtp_port))
        data, source = await a_nat_rtp.recv()
        assert data == rtp(0, 2) and source == (LOCAL, a_rtp_port)
        await a_sdp_rtp.nothing(0.05)

        # RTCP uses the odd ports on both sides and latches on its own.
        a_nat_rtcp.send(rtcp_rr(), (LOCAL, a_rtcp_port))
        data, source = await b_rtcp.recv()
        assert data == rtcp_rr() and source == (LOCAL, b_rtcp_port)
        b_rtcp.send(rtcp_rr(), (LOCAL, b_rtcp_port))
        data, source = await a_nat_rtcp.recv()
        assert source == (LOCAL, a_rtcp_port)
        await a_sdp_rtcp.nothing(0.05)

        assert call.session.a.rtp_source == a_nat_rtp.address
        assert relay.packets_relayed == 5
        assert relay.packets_dropped == 0
        relay.close()

    run(scenario)


def test_payload_type_mapping_and_mute(run: Any) -> None:
    async def scenario() -> None:
        relay = new_relay()
        a_rtp, a_rtcp = await phone_pair()
        b_rtp, b_rtcp = await phone_pair()
        call = await relay.open_session(a_rtp.address, b_rtp.address, a_pt_map={96: 101})
        a_port, b_port = call.a_ports[0], call.b_ports[0]

        a_rtp.send(rtp(96, 1, marker=True), (LOCAL, a_port))
        data, _ = await b_rtp.recv()
        assert data[1] == 0x80 | 101  # marker kept, PT rewritten
        assert data[2:] == rtp(96, 1, marker=True)[2:]
        b_rtp.send(rtp(96, 1), (LOCAL, b_port))  # b's map is empty: untouched
        data, _ = await a_rtp.recv()
        assert data[1] == 96

        call.session.b.muted = True
        a_rtp.send(rtp(96, 2), (LOCAL, a_port))
        await b_rtp.nothing()
        a_rtcp.send(rtcp_rr(), (LOCAL, call.a_ports[1]))  # mute stops media, never RTCP
        data, _ = await b_rtcp.recv()
        assert data == rtcp_rr()
        call.session.b.muted = False
        a_rtp.send(rtp(96, 3), (LOCAL, a_port))
        data, _ = await b_rtp.recv()
        assert data[2:4] == b"\x00\x03"
        relay.close()

    run(scenario)


def test_rtcp_mux_leg_gets_rtcp_from_our_rtp_port(run: Any) -> None:
    async def scenario() -> None:
        relay = new_relay()
        a_rtp, a_rtcp = await phone_pair()
        b_rtp = await phone()
        call = await relay.open_session(a_rtp.address, b_rtp.address, b_rtcp_mux=True)
        a_rtcp.send(rtcp_rr(), (LOCAL, call.a_ports[1]))
        data, source = await b_rtp.recv()
        assert data == rtcp_rr() and source == (LOCAL, call.b_ports[0])
        relay.close()

    run(scenario)


def test_garbage_is_dropped_and_counted_without_closing_the_socket(run: Any) -> None:
    async def scenario() -> None:
        relay = new_relay()
        a_rtp, _ = await phone_pair()
        b_rtp, _ = await phone_pair()
        call = await relay.open_session(a_rtp.address, b_rtp.address)
        a_rtp.send(b"\x00junk", (LOCAL, call.a_ports[0]))
        a_rtp.send(b"\x80\x00\x00", (LOCAL, call.a_ports[0]))  # version 2, too short
        await b_rtp.nothing()
        assert relay.packets_dropped == 2
        a_rtp.send(rtp(0, 1), (LOCAL, call.a_ports[0]))
        data, _ = await b_rtp.recv()
        assert data == rtp(0, 1)
        assert relay.packets_relayed == 1
        relay.close()

    run(scenario)


def test_close_releases_ports_for_reuse_and_keeps_counters(run: Any) -> None:
    async def scenario() -> None:
        relay = new_relay(pairs=2)  # room for exactly one session
        a_rtp, _ = await phone_pair()
        b_rtp, _ = await phone_pair()
        call = await relay.open_session(a_rtp.address, b_rtp.address)
        with pytest.raises(PortsExhausted):
            await relay.open_session(a_rtp.address, b_rtp.address)
        assert relay.ports.in_use_count == 2
        a_rtp.send(rtp(0, 1), (LOCAL, call.a_ports[0]))
        await b_rtp.recv()
        relay.close_session(call)
        relay.close_session(call)  # idempotent
        assert relay.ports.in_use_count == 0 and relay.sessions == []
        assert relay.packets_relayed == 1
        await asyncio.sleep(0.05)  # the transports close their sockets on a later loop pass

        again = await relay.open_session(a_rtp.address, b_rtp.address)
        assert {again.a_ports, again.b_ports} == {call.a_ports, call.b_ports}
        assert relay.bind_failures == 0
        a_rtp.send(rtp(0, 2), (LOCAL, again.a_ports[0]))
        data, _ = await b_rtp.recv()
        assert data == rtp(0, 2)
        assert relay.packets_relayed == 2
        relay.close()

    run(scenario)


def test_a_port_held_by_someone_else_is_skipped(run: Any) -> None:
    async def scenario() -> None:
        base = free_range(3)
        squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        squatter.bind((LOCAL, base + 1))  # only the RTCP port of the first pair
        try:
            relay = RtpRelay(LOCAL, base, base + 5)
            OPEN_RELAYS.append(relay)
            a_rtp, _ = await phone_pair()
            b_rtp, _ = await phone_pair()
            call = await relay.open_session(a_rtp.address, b_rtp.address)
            assert call.a_ports == (base + 2, base + 3)
            assert call.b_ports == (base + 4, base + 5)
            assert relay.bind_failures == 1
            assert relay.ports.free_count == 1  # the refused pair, kept for later
            with pytest.raises(PortsExhausted):
                await relay.open_session(a_rtp.address, b_rtp.address)
            assert relay.ports.free_count == 1 and relay.ports.in_use_count == 2
            relay.close()
        finally:
            squatter.close()

    run(scenario)


def test_inactive_sessions_are_reported(run: Any) -> None:
    async def scenario() -> None:
        relay = new_relay()
        a_rtp, a_rtcp = await phone_pair()
        b_rtp, _ = await phone_pair()
        quiet = await relay.open_session(a_rtp.address, b_rtp.address)
        talking = await relay.open_session(a_rtp.address, b_rtp.address)
        await asyncio.sleep(0.2)
        a_rtcp.send(rtcp_rr(), (LOCAL, talking.a_ports[1]))  # RTCP alone keeps a call alive
        await asyncio.sleep(0.05)
        now = relay.now()
        assert relay.timed_out_sessions(now, 0.15) == [quiet]
        assert relay.timed_out_sessions(now, 5.0) == []
        assert set(map(id, relay.timed_out_sessions(now + 1.0, 0.5))) == {id(quiet), id(talking)}
        relay.close()

    run(scenario)
