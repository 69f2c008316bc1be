"""G.711 tables: bit-exact with the stdlib `audioop` (Python <= 3.12) over every code and every
16-bit sample, and with values read from ITU-T G.711 (11/88) Tables 1a/2a."""

from __future__ import annotations

import warnings
from types import ModuleType

import numpy as np
import pytest

from edge.media import g711

ALL_CODES = bytes(range(256))
ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)


def _audioop() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:  # Python 3.13+: the reference is gone
            pytest.skip("audioop is not available on this Python")
    return audioop


def test_decode_matches_audioop_for_all_256_codes() -> None:
    audioop = _audioop()
    assert g711.ulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)


def test_encode_matches_audioop_for_all_65536_samples() -> None:
    audioop = _audioop()
    linear = ALL_SAMPLES.tobytes()
    assert g711.ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(linear, 2)
    assert g711.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(linear, 2)


# ITU-T G.711 Table 2a (µ-law) gives decoder outputs on a 14-bit scale (max 8031) and
# Table 1a (A-law) on a 13-bit scale (max 4032); 16-bit PCM is that times 4 and 8.
@pytest.mark.parametrize(
    ("code", "itu_value"),
    [
        (0xFF, 0),  # "+0": all bits one (the code is sent inverted)
        (0x7F, 0),  # "-0"
        (0xFE, 2),  # segment 1, step 1
        (0xF0, 30),  # top of segment 1
        (0xEF, 33),  # bottom of segment 2 (interval 31..35 -> 33)
        (0x80, 8031),  # most positive
        (0x00, -8031),  # most negative
    ],
)
def test_ulaw_decode_matches_itu_table_2a(code: int, itu_value: int) -> None:
    assert int(g711.ulaw_decode(bytes([code]))[0]) == 4 * itu_value


@pytest.mark.parametrize(
    ("code", "itu_value"),
    [
        (0xD5, 1),  # smallest positive: 1101 0101 ("even bits inverted")
        (0x55, -1),  # smallest negative
        (0xD4, 3),  # segment 1, step 1
        (0xC5, 33),  # bottom of segment 2 (interval 32..34 -> 33)
        (0xAA, 4032),  # most positive: 1010 1010
        (0x2A, -4032),  # most negative
    ],
)
def test_alaw_decode_matches_itu_table_1a(code: int, itu_value: int) -> None:
    assert int(g711.alaw_decode(bytes([code]))[0]) == 8 * itu_value


def test_encode_edges() -> None:
    samples = np.array([0, -1, 32767, -32768, 32124, -32124], dtype=np.int16)
    assert g711.ulaw_encode(samples) == bytes([0xFF, 0x7E, 0x80, 0x00, 0x80, 0x00])
    assert g711.alaw_encode(samples)[:4] == bytes([0xD5, 0x55, 0xAA, 0x2A])


def test_every_code_survives_decode_then_encode() -> None:
    # Decoding a code and encoding the result gives the code back, except µ-law's "-0" (0x7F),
    # which decodes to 0 like "+0" (0xFF).
    ulaw = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    assert [i for i in range(256) if ulaw[i] != i] == [0x7F]
    assert ulaw[0x7F] == 0xFF
    assert g711.alaw_encode(g711.alaw_decode(ALL_CODES)) == ALL_CODES


def test_encode_refuses_other_dtypes_and_accepts_strided_views() -> None:
    with pytest.raises(TypeError, match="int16"):
        g711.ulaw_encode(np.zeros(4, dtype=np.int32))
    with pytest.raises(TypeError, match="int16"):
        g711.alaw_encode(np.zeros(4, dtype=np.float64))
    stereo = np.array([[1000, -1000], [2000, -2000]], dtype=np.int16)
    assert g711.ulaw_encode(stereo[:, 1]) == g711.ulaw_encode(np.array([-1000, -2000], np.int16))


def test_l16_is_big_endian_and_tables_are_read_only() -> None:
    assert g711.l16_decode(b"\x01\x00\xff\xfe\x07").tolist() == [256, -2]
    assert g711.DECODERS["PCMU"] is g711.ulaw_decode
    with pytest.raises(ValueError, match="read-only"):
        g711.ULAW_TO_LINEAR[0] = 1
