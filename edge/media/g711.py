"""G.711 µ-law (PCMU) and A-law (PCMA) by numpy lookup tables, bit-exact with the old stdlib
`audioop` (removed in Python 3.13), plus L16 (RFC 3551 §4.5.11). Sans-IO, no state."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALAW_TO_LINEAR",
    "DECODERS",
    "LINEAR_TO_ALAW",
    "LINEAR_TO_ULAW",
    "ULAW_TO_LINEAR",
    "alaw_decode",
    "alaw_encode",
    "l16_decode",
    "ulaw_decode",
    "ulaw_encode",
]

Samples = npt.NDArray[np.int16]

# Segment end points of the µ-law (14-bit magnitude + bias) and A-law (13-bit) quantisers, as
# in the Sun reference code that `audioop` uses (ITU-T G.711 Tables 1a/2a, scaled).
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x84  # G.711 µ-law adds 33 (x4 in 16-bit units) before segmenting
_ULAW_CLIP = 8159  # largest 14-bit magnitude the µ-law code can represent


def _build_ulaw_decode() -> Samples:
    # G.711 §2 / Table 2a: the code is transmitted with all bits inverted.
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _build_alaw_decode() -> Samples:
    # G.711 §3 / Table 1a: even bits are inverted (XOR 0x55); the sign bit set means positive.
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def _all_int16() -> npt.NDArray[np.int32]:
    # Index i of an encode table is the uint16 view of an int16 sample: 0..32767, -32768..-1.
    return np.arange(65536, dtype=np.int32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _all_int16() >> 2  # audioop quantises the top 14 bits
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    code = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    pcm = _all_int16() >> 3  # audioop quantises the top 13 bits
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    mag = np.where(negative, -pcm - 1, pcm)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    quant = np.where(seg < 2, mag >> 1, mag >> seg) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg << 4) | quant)
    return (code ^ mask).astype(np.uint8)


ULAW_TO_LINEAR: Samples = _build_ulaw_decode()
ALAW_TO_LINEAR: Samples = _build_alaw_decode()
LINEAR_TO_ULAW: npt.NDArray[np.uint8] = _build_ulaw_encode()
LINEAR_TO_ALAW: npt.NDArray[np.uint8] = _build_alaw_encode()
for _table in (ULAW_TO_LINEAR, ALAW_TO_LINEAR, LINEAR_TO_ULAW, LINEAR_TO_ALAW):
    _table.flags.writeable = False


def ulaw_decode(data: bytes) -> Samples:
    """PCMU octets to int16 samples (one per octet)."""
    return ULAW_TO_LINEAR[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes) -> Samples:
    """PCMA octets to int16 samples (one per octet)."""
    return ALAW_TO_LINEAR[np.frombuffer(data, dtype=np.uint8)]


def l16_decode(data: bytes) -> Samples:
    """L16 (RFC 3551 §4.5.11: big-endian signed 16-bit) to native int16; an odd byte is dropped."""
    return np.frombuffer(data, dtype=">i2", count=len(data) // 2).astype(np.int16)


def _as_int16(samples: npt.NDArray[np.generic]) -> Samples:
    if samples.dtype != np.int16:
        # Refuse rather than wrap: an int32 or float array would be silently corrupted.
        raise TypeError(f"expected int16 samples, got {samples.dtype}")
    return samples  # type: ignore[return-value]


def ulaw_encode(samples: npt.NDArray[np.generic]) -> bytes:
    """int16 samples to PCMU octets (one per sample), as `audioop.lin2ulaw(x, 2)`."""
    return LINEAR_TO_ULAW[_as_int16(samples).view(np.uint16)].tobytes()


def alaw_encode(samples: npt.NDArray[np.generic]) -> bytes:
    """int16 samples to PCMA octets (one per sample), as `audioop.lin2alaw(x, 2)`."""
    return LINEAR_TO_ALAW[_as_int16(samples).view(np.uint16)].tobytes()


# Decoders by SDP encoding name (RFC 3551 §6), for PT maps built from a negotiated rtpmap.
DECODERS: dict[str, Callable[[bytes], Samples]] = {
    "PCMU": ulaw_decode,
    "PCMA": alaw_decode,
    "L16": l16_decode,
}
