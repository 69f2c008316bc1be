"""The HTTP user backend's wire format (COMPAT.md, "User backend (HTTP)").

When a request needs digest authentication, the edge asks the business system about the user:
`GET url?username=..&realm=..&request_uri=..` or a POST form with the same keys (the field names
are configurable). A 2xx answer is a `UserBackendAnswer`; any other status may carry a
`UserBackendRefusal` naming why. These models are the contract both sides parse: the edge's
`HttpUserBackend` and the control plane's default auth function.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RefusalReason = Literal[
    "not_found", "invalid_password", "disabled", "blocked", "spam", "payment_required"
]
_REASONS: dict[str, RefusalReason] = {
    "not_found": "not_found",
    "invalid_password": "invalid_password",
    "disabled": "disabled",
    "blocked": "blocked",
    "spam": "spam",
    "payment_required": "payment_required",
}
REFUSAL_REASONS: frozenset[str] = frozenset(_REASONS)

_HEX = frozenset("0123456789abcdefABCDEF")


def _hex_digest(value: str | None, lengths: tuple[int, ...]) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) not in lengths or not _HEX.issuperset(value):
        expected = " or ".join(str(n) for n in lengths)
        raise ValueError(f"must be {expected} hexadecimal digits")
    return value.lower()


class UserBackendQuery(BaseModel):
    """What the edge sends (query string or form), with the default field names."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    username: Annotated[str, Field(min_length=1)]
    realm: str = ""
    request_uri: str = ""


class UserBackendAnswer(BaseModel):
    """A 2xx answer: the user exists.

    `password` is the plain password (RustPBX's field; the edge computes HA1 from it and never
    logs it). Ours also: `ha1`, the hex digest H(username:realm:password) for the realm asked
    about, so passwords need not leave the user system; its length says its algorithm (32 hex
    digits MD5, 64 SHA-256). `ha1_md5` / `ha1_sha256` name the algorithm explicitly, for a
    backend that can serve both challenges the edge offers (RFC 8760). `enabled` false refuses
    the user with 403 (null or absent means enabled).
    """

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    username: Annotated[str, Field(min_length=1)]
    password: str | None = Field(default=None, repr=False)
    ha1: str | None = Field(default=None, repr=False)
    ha1_md5: str | None = Field(default=None, repr=False)
    ha1_sha256: str | None = Field(default=None, repr=False)
    enabled: bool | None = True
    realm: str | None = None
    display_name: str | None = None
    allow_guest_calls: bool | None = False

    @field_validator("ha1")
    @classmethod
    def _ha1(cls, value: str | None) -> str | None:
        return _hex_digest(value, (32, 64))

    @field_validator("ha1_md5")
    @classmethod
    def _ha1_md5(cls, value: str | None) -> str | None:
        return _hex_digest(value, (32,))

    @field_validator("ha1_sha256")
    @classmethod
    def _ha1_sha256(cls, value: str | None) -> str | None:
        return _hex_digest(value, (64,))

    @property
    def is_enabled(self) -> bool:
        return self.enabled is not False

    @property
    def has_secret(self) -> bool:
        return any(v is not None for v in (self.password, self.ha1, self.ha1_md5, self.ha1_sha256))

    def ha1_by_algorithm(self) -> dict[str, str]:
        """The HA1s given, by digest algorithm (`MD5`, `SHA-256`)."""
        out: dict[str, str] = {}
        if self.ha1 is not None:
            out["MD5" if len(self.ha1) == 32 else "SHA-256"] = self.ha1
        if self.ha1_md5 is not None:
            out["MD5"] = self.ha1_md5
        if self.ha1_sha256 is not None:
            out["SHA-256"] = self.ha1_sha256
        return out


class UserBackendRefusal(BaseModel):
    """The body of a non-2xx answer: why the user may not authenticate.

    `reason` is one of `REFUSAL_REASONS`; an unknown reason is kept as text (the edge treats it
    like a backend failure and logs it).
    """

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    reason: str | None = None
    message: str | None = None

    @property
    def known_reason(self) -> RefusalReason | None:
        return _REASONS.get((self.reason or "").strip().lower())
