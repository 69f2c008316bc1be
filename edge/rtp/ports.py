"""The relay's local port pairs: even RTP ports with RTCP on the next odd port, handed out from
`[proxy] rtp_start_port..rtp_end_port` in O(1). Sans-IO: binding is the adapter's job, which
reports a pair the OS refused with `refuse()`."""

from __future__ import annotations

from collections import deque


class PortsExhausted(Exception):
    """Every port pair of the range is in use: no more relayed calls until one is released."""


class PortAllocator:
    """Even RTP ports in `[start, end]` whose RTCP port (RTP + 1, RFC 3550 §11) is also in range.

    Free pairs sit in a FIFO: a released pair goes to the back, so a port is reused as late as
    possible and stray packets of the old call rarely reach the new one."""

    __slots__ = ("_free", "_in_use", "end", "start")

    def __init__(self, start: int, end: int) -> None:
        # RFC 3550 §11: the RTP port SHOULD be even and RTCP uses the next higher (odd) port.
        first = start + (start & 1)
        if not 0 < first < end <= 65535:
            raise ValueError(f"RTP port range {start}-{end} holds no even/odd pair")
        self.start = start
        self.end = end
        self._free: deque[int] = deque(range(first, end, 2))
        self._in_use: set[int] = set()

    @property
    def capacity(self) -> int:
        """How many pairs the range holds."""
        return len(self._free) + len(self._in_use)

    @property
    def free_count(self) -> int:
        return len(self._free)

    @property
    def in_use_count(self) -> int:
        return len(self._in_use)

    def allocate(self) -> int:
        """Take a free pair; return its (even) RTP port. Raises `PortsExhausted`."""
        try:
            port = self._free.popleft()
        except IndexError:
            raise PortsExhausted(
                f"all {self.capacity} RTP port pairs of {self.start}-{self.end} are in use"
            ) from None
        self._in_use.add(port)
        return port

    def release(self, rtp_port: int) -> None:
        """Give a pair back; releasing a pair that is not allocated is a bug in the caller."""
        try:
            self._in_use.remove(rtp_port)
        except KeyError:
            raise ValueError(f"RTP port {rtp_port} is not allocated") from None
        self._free.append(rtp_port)

    def refuse(self, rtp_port: int) -> None:
        """The OS would not bind this allocated pair (another program holds a port): put it at
        the back of the queue, so every other pair is tried before it is tried again."""
        self.release(rtp_port)
