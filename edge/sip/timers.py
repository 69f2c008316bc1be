"""The transaction timers of RFC 3261 §17 (Table 4) and RFC 6026, and their values, as data.

A timer's first interval comes from `TimerConfig` (T1, T2, T4); the transport decides whether it
runs at all. Retransmission timers (A, E, G) exist only because UDP loses datagrams, so they do
not run on reliable transports; the timers that only wait to absorb retransmissions (D, I, J, K)
are zero there (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2). How a retransmission timer backs off
depends on the transaction state, so that part lives with the state tables in `transaction.py`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class TimerConfig:
    """The base timer values (RFC 3261 §17.1.1.1 and Table 4), in seconds.

    `timer_d` is Timer D on unreliable transports ("at least 32 seconds", §17.1.1.2), and
    `trying_delay` is how long an INVITE server transaction waits for the TU's own provisional
    response before sending 100 Trying itself (§17.2.1: "within 200 ms").
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0
    trying_delay: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise ValueError("timer config: need 0 < T1 <= T2")
        if self.t4 <= 0 or self.timer_d < 0 or self.trying_delay < 0:
            raise ValueError("timer config: T4 must be positive, Timer D and the 100 delay >= 0")


class Timer(enum.Enum):
    """The transaction timers (RFC 3261 Table 4; L and M from RFC 6026 §8.11)."""

    # Members are singletons: hash them by identity, in C (Enum.__hash__ is Python code
    # and these are dict keys on every transition).
    __hash__ = object.__hash__

    A = "A"  # INVITE client: request retransmission (UDP)
    B = "B"  # INVITE client: transaction timeout
    D = "D"  # INVITE client: wait for response retransmissions in Completed
    E = "E"  # non-INVITE client: request retransmission (UDP)
    F = "F"  # non-INVITE client: transaction timeout
    G = "G"  # INVITE server: final response retransmission (UDP)
    H = "H"  # INVITE server: wait for ACK
    I = "I"  # noqa: E741 - RFC 3261's name.  INVITE server: wait for ACK retransmissions
    J = "J"  # non-INVITE server: wait for request retransmissions
    K = "K"  # non-INVITE client: wait for response retransmissions
    L = "L"  # INVITE server: wait for 2xx-ACK / INVITE retransmissions in Accepted (RFC 6026)
    M = "M"  # INVITE client: wait for 2xx retransmissions in Accepted (RFC 6026)
    TRYING = "100"  # INVITE server: send 100 Trying if the TU has not answered (§17.2.1)


def _sixty_four_t1(config: TimerConfig) -> float:
    return 64 * config.t1


# Timer -> its first interval (RFC 3261 Table 4, RFC 6026 §8.11).
FIRST_INTERVAL: dict[Timer, Callable[[TimerConfig], float]] = {
    Timer.A: lambda c: c.t1,
    Timer.B: _sixty_four_t1,
    Timer.D: lambda c: c.timer_d,
    Timer.E: lambda c: c.t1,
    Timer.F: _sixty_four_t1,
    Timer.G: lambda c: c.t1,
    Timer.H: _sixty_four_t1,
    Timer.I: lambda c: c.t4,
    Timer.J: _sixty_four_t1,
    Timer.K: lambda c: c.t4,
    Timer.L: _sixty_four_t1,
    Timer.M: _sixty_four_t1,
    Timer.TRYING: lambda c: c.trying_delay,
}

# Retransmission timers: reliable transports retransmit for us, so they never run there.
UNRELIABLE_ONLY: frozenset[Timer] = frozenset({Timer.A, Timer.E, Timer.G})

# Timers that only absorb retransmissions: none arrive on a reliable transport, so zero there.
ZERO_WHEN_RELIABLE: frozenset[Timer] = frozenset({Timer.D, Timer.I, Timer.J, Timer.K})


def first_interval(timer: Timer, config: TimerConfig, *, reliable: bool) -> float | None:
    """How long `timer` runs when started, or None when it does not run on this transport."""
    if reliable:
        if timer in UNRELIABLE_ONLY:
            return None
        if timer in ZERO_WHEN_RELIABLE:
            return 0.0
    return FIRST_INTERVAL[timer](config)


__all__ = [
    "FIRST_INTERVAL",
    "UNRELIABLE_ONLY",
    "ZERO_WHEN_RELIABLE",
    "Timer",
    "TimerConfig",
    "first_interval",
]
