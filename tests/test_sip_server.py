"""edge.io.sip_server: the asyncio adapter of the SIP endpoint, on real 127.0.0.1 sockets."""

from __future__ import annotations

import asyncio
import socket

from edge.config import Config
from edge.io.sip_server import SipServer
from edge.metrics import Metrics
from edge.sip.endpoint import EndpointConfig, SipEndpoint
from edge.sip.message import Response, parse_message
from tests.sipmsg import request


def test_transaction_ends_are_handled_in_batches_on_a_10_ms_grid(port0_config: Config) -> None:
    """OPTIONS answered by the endpoint leave non-INVITE server transactions waiting for
    Timer J (64*T1: 0.32 s with T1 = 5 ms). Their ends, spread over a few ms, are handled by
    a few timer wake-ups on the 10 ms grid, never before their deadline."""

    async def scenario() -> None:
        endpoint = SipEndpoint(EndpointConfig(t1=0.005, t2=0.005), token=lambda: "tag")
        server = SipServer(endpoint, Metrics("test"))
        server._config = port0_config.proxy
        await server.listen()
        fired: list[tuple[float, float | None]] = []  # (loop time, earliest deadline then)
        fire = server._fire_timer

        def counting_fire() -> None:
            fired.append((server._loop.time(), server.endpoint.get_timer()))
            fire()

        server._fire_timer = counting_fire  # type: ignore[method-assign]
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            for n in range(40):
                data = request("OPTIONS", branch=f"z9hG4bK-grid-{n}", call_id=f"grid-{n}")
                await loop.sock_sendto(client, data, server.udp_address)
                answer = parse_message(await loop.sock_recv(client, 65535))
                assert isinstance(answer, Response) and answer.status == 200
            assert server.endpoint.transaction_counts()["server"] == 40
            armed = server._timer_at
            # On the grid (to float precision: a loop clock of hours has few decimals left).
            assert armed is not None and abs(armed * 100 - round(armed * 100)) < 1e-6
            for _ in range(100):  # J is 0.32 s: all gone well within 5 s
                if not server.endpoint.transaction_counts()["server"]:
                    break
                await asyncio.sleep(0.05)
            assert server.endpoint.transaction_counts()["server"] == 0
            assert fired and all(deadline is None or deadline <= at for at, deadline in fired)
            # 40 ends in the few tens of ms the requests took: a handful of wake-ups, not 40.
            assert len(fired) <= 10, fired
        finally:
            client.close()
            await server.close()

    asyncio.run(asyncio.wait_for(scenario(), 15))
