"""What an sdpbx element must answer to the RFC 4475 / RFC 5118 torture messages in
`tests/vectors/torture/` (a plain module: the message-layer tests and the endpoint tests share it).

The message layer (`parse_message`, `validate_*`) decides only "well-formed or SipParseError";
the answers below are what the element (our endpoint: UAS, registrar and B2BUA roles, never a
proxy) then sends. Paraphrased from the MANIFEST's expectations, which quote the RFC sections.
"""

from __future__ import annotations

from pathlib import Path

TORTURE_DIR = Path(__file__).parent / "vectors" / "torture"

# Messages that parse and validate at the message layer, but that an element answers with a
# fixed final status for a semantic reason (the value: the status we send).
EXPECTED_STATUS: dict[str, int] = {
    "badvers.dat": 505,  # RFC 4475 §3.1.2.16: SIP/7.0 -> Version Not Supported
    "unkscm.dat": 416,  # §3.3.2: Request-URI scheme nobodyKnowsThisScheme
    "novelsc.dat": 416,  # §3.3.3: soap.beep Request-URI (404 also allowed)
    "bext01.dat": 420,  # §3.3.5: Require: nothingSupportsThis... (Unsupported lists them)
    "intmeth.dat": 501,  # §3.1.1.2: unknown method at a UAS (with Allow)
    "esc02.dat": 501,  # §3.1.1.5: RE%47IST%45R is an unknown method, not REGISTER
    "invut.dat": 415,  # §3.3.6: Content-Type application/unknownformat at a UAS (with Accept)
    "sdp01.dat": 406,  # §3.3.15: Accept: text/nobodyKnowsThis excludes application/sdp
    "unksm2.dat": 400,  # §3.3.4: a registrar refuses an AOR that is not sip/sips
    "regaut01.dat": 401,  # §3.3.7: a registrar that authenticates challenges afresh
    "regbadct.dat": 400,  # §3.1.2.13: Contact with ?headers outside <> (registrar)
}

# Other answers the RFC allows for the same messages.
ALSO_ACCEPTABLE: dict[str, frozenset[int]] = {
    "novelsc.dat": frozenset({404}),
    "sdp01.dat": frozenset({400}),
    "regaut01.dat": frozenset({405}),  # an element that is not a registrar
}

# Requests the message layer refuses (SipParseError from parse_message or validate_request),
# answered with 400 Bad Request (RFC 3261 §21.4.1), including the "MAY reject" ones we do reject.
BAD_REQUEST: frozenset[str] = frozenset(
    {
        "badinv01.dat",  # §3.1.2.1: empty Via/Contact params
        "clerr.dat",  # §3.1.2.2: Content-Length 9999 > body (UDP)
        "ncl.dat",  # §3.1.2.3: Content-Length -999
        "scalar02.dat",  # §3.1.2.4: CSeq > 2**32-1
        "quotbal.dat",  # §3.1.2.6: unterminated quoted display name
        "ltgtruri.dat",  # §3.1.2.7: <> around the Request-URI
        "lwsruri.dat",  # §3.1.2.8: LWS inside the Request-URI
        "lwsstart.dat",  # §3.1.2.9: several SP in the Request-Line (MAY reject)
        "trws.dat",  # §3.1.2.10: SP after SIP-Version (MAY reject)
        "escruri.dat",  # §3.1.2.11: escaped headers in the Request-URI
        "badaspec.dat",  # §3.1.2.14: spaces inside <addr-spec>
        "baddn.dat",  # §3.1.2.15: non-token display name; also no empty line in the file
        "mismatch01.dat",  # §3.1.2.17: OPTIONS vs CSeq INVITE
        "mismatch02.dat",  # §3.1.2.18: NEWMETHOD vs CSeq INVITE (501 also acceptable)
        "insuf.dat",  # §3.3.1: no Call-ID, From, To
        "multi01.dat",  # §3.3.8: several Call-ID, To, From, Max-Forwards, CSeq
        "mcl01.dat",  # §3.3.9: two Content-Length values
        "ipv6-bad.dat",  # RFC 5118 §4.2: IPv6 host without [ ]
        "ipv6-bug-abnf-3-colons.dat",  # RFC 5118 §4.10: three colons
    }
)

# Refused and not answered: responses are dropped, never answered (RFC 3261 §8.1.3.3, §16.7),
# and a request whose start line is unusable cannot be answered.
DROPPED: frozenset[str] = frozenset(
    {
        "scalarlg.dat",  # §3.1.2.5: response with overlarge CSeq, Retry-After, Warning code
        "bigcode.dat",  # §3.1.2.19: response code 4294967301
        "test.dat",  # archive extra: no SIP-Version, no Via, a line without a colon
    }
)

# Marked invalid by the MANIFEST, but accepted by the message layer on purpose, with why.
LIBERAL: dict[str, str] = {
    "baddate.dat": "Date ends 'EST' not 'GMT': ignored unless Date matters (RFC 4475 §3.1.2.12)",
    "regbadct.dat": "the Contact is parsed by the registrar, which answers 400 (§3.1.2.13)",
}
