"""Tests of the sans-IO media building blocks: RFC 4733 DTMF, the jitter buffer, in-band DTMF
detection, the conference mixer and prompt decoding."""
