"""Random tokens for SIP tags, branches and Call-IDs, cheaply.

RFC 3261 §19.3 wants tags with at least 32 bits of cryptographic randomness and Call-IDs and
branches that never repeat. `secrets.token_hex` costs one getrandom() system call per token, and a
call needs about a dozen tokens; this source reads the kernel's CSPRNG 4 KiB at a time and slices
it, so the randomness is the same and the system calls 500 times fewer.
"""

from __future__ import annotations

import os

_CHUNK = 4096


class TokenSource:
    """`token()` returns 16 hex digits (64 random bits) from a buffer of os.urandom bytes."""

    __slots__ = ("_buffer", "_offset")

    def __init__(self) -> None:
        self._buffer = os.urandom(_CHUNK)
        self._offset = 0

    def token(self) -> str:
        offset = self._offset
        if offset + 8 > _CHUNK:
            self._buffer = os.urandom(_CHUNK)
            offset = 0
        self._offset = offset + 8
        return self._buffer[offset:offset + 8].hex()


__all__ = ["TokenSource"]
