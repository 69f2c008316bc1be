"""Free local ports for the external clients the tests run (SIPp, sipsak, baresip's control
listener): programs that must be told a port rather than bind port 0 themselves.

The ports come from 10000-19999: below Linux's ephemeral range (32768-60999), where the OS puts
every `bind(0)` and outgoing connection, and below the edge's default RTP range (20000-30000).
A port checked free there stays free until the client binds it unless another test picked the
same one, so the race that `bind(0)`, close, hand over has (the OS reusing the port for the next
ephemeral socket) is gone.
"""

from __future__ import annotations

import random
import socket

_PORTS = range(10000, 20000)


def free_port(*kinds: socket.SocketKind) -> int:
    """A port of 127.0.0.1 free right now for every socket kind in `kinds` (default UDP)."""
    for _ in range(500):
        port = random.choice(_PORTS)
        if all(_bindable(port, kind) for kind in kinds or (socket.SOCK_DGRAM,)):
            return port
    raise OSError("no free port in 10000-19999 on 127.0.0.1")


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def free_media_port() -> int:
    """An even UDP port for SIPp's `-mp`, free with the three above it: SIPp binds the audio
    port and, two above, a video one (with RTCP beside each); a busy video port fails the
    whole client ("Unable to bind video RTP socket")."""
    for _ in range(500):
        port = random.choice(_PORTS) & ~1
        if all(_bindable(port + n, socket.SOCK_DGRAM) for n in range(4)):
            return port
    raise OSError("no four free UDP ports in 10000-19999 on 127.0.0.1")


def free_tcp_port() -> int:
    return free_port(socket.SOCK_STREAM)


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
