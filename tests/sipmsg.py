"""Small builders of raw SIP requests for tests (bytes as a peer would send them)."""

from __future__ import annotations


def request(
    method: str = "OPTIONS",
    uri: str = "sip:pbx.test",
    *,
    branch: str = "z9hG4bK-test-1",
    via_host: str = "127.0.0.1:5070",
    transport: str = "UDP",
    rport: bool = True,
    call_id: str = "call-1@test",
    cseq: int = 1,
    cseq_method: str | None = None,
    from_tag: str = "ft1",
    to_tag: str | None = None,
    extra: list[str] | None = None,
    body: bytes = b"",
    version: str = "SIP/2.0",
) -> bytes:
    via = f"SIP/2.0/{transport} {via_host};branch={branch}" + (";rport" if rport else "")
    to = "<sip:pbx.test>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} {version}",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: <sip:alice@pbx.test>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        *(extra or []),
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body
