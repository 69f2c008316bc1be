"""SIP header names and the ordered header list of a message.

Header values are kept as raw text, exactly as received (after RFC 3261 §7.3.1 unfolding), and
parsed into structures only when some code asks for them: a B2BUA looks at a handful of the
headers of each message, so parsing all of them up front would be wasted work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from edge.sip.grammar import split_comma_list

T = TypeVar("T")

# RFC 3261 §7.3.3 and the IANA registry: compact form -> canonical name.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

_KNOWN_NAMES = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "Flow-Timer", "From",
    "Identity", "Identity-Info", "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE",
    "MIME-Version", "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
    "Priority", "Privacy", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck",
    "Reason", "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces",
    "Reply-To", "Request-Disposition", "Require", "Retry-After", "Route", "RSeq",
    "Security-Client", "Security-Server", "Security-Verify", "Server", "Service-Route",
    "Session-Expires", "Subject", "Subscription-State", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
)

_CANONICAL: dict[str, str] = {name.lower(): name for name in _KNOWN_NAMES}
_CANONICAL.update({short: long for short, long in COMPACT_FORMS.items()})

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1): several values may share
# one header line. Authentication headers, Date and friends contain commas but are not lists.
LIST_HEADERS: frozenset[str] = frozenset(
    {
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language",
        "Error-Info", "In-Reply-To", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
        "Proxy-Require", "Reason", "Record-Route", "Reject-Contact", "Require", "Route",
        "Security-Client", "Security-Server", "Security-Verify", "Service-Route", "Supported",
        "Unsupported", "Via", "Warning",
    }
)


# Lookup keys of the names our own code asks for ("Via", "v", "call-id"...), memoised: a header
# lookup is then one dict hit. Only names from code land here (bounded); wire names do not.
_LOOKUP_KEYS: dict[str, str] = {}


# (lookup key, canonical name) of the names our code adds headers under, memoised likewise.
_ADD_FORMS: dict[str, tuple[str, str]] = {}


def lookup_key(name: str) -> str:
    """The key a header is stored under: its canonical name, lower-cased."""
    key = _LOOKUP_KEYS.get(name)
    if key is None:
        key = canonical_name(name).lower()
        if len(_LOOKUP_KEYS) < 1024:
            _LOOKUP_KEYS[name] = key
    return key


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name; unknown names come back as given.

    Header names are case-insensitive (RFC 3261 §7.3.1) and one-letter names are compact forms.
    """
    return _CANONICAL.get(name.lower(), name)


# Header names our code asks for -> whether the header is a comma-separated list.
_IS_LIST: dict[str, bool] = {}

# Memo name ("Via:top") -> lookup key of the header it is parsed from ("via"), and back: the
# memo names of each header, so that a change forgets exactly those. Names come from code only.
_MEMO_KEYS: dict[str, str] = {}
_MEMO_NAMES: dict[str, tuple[str, ...]] = {}


def _register_memo(name: str) -> None:
    key = lookup_key(name.partition(":")[0])
    _MEMO_KEYS[name] = key
    _MEMO_NAMES[key] = (*_MEMO_NAMES.get(key, ()), name)


# Splitting a list header's value at top-level commas (§7.3.1): one implementation, the grammar's.
split_list = split_comma_list


class Headers:
    """The header fields of one message, in wire order.

    Each entry keeps the name as written (so unknown and compact headers go back out verbatim)
    and its canonical lower-case key for lookups. Values are the unfolded raw text.
    """

    __slots__ = ("_entries", "_parsed")

    def __init__(self, entries: list[tuple[str, str, str]] | None = None) -> None:
        # (lookup key, name as written, value)
        self._entries: list[tuple[str, str, str]] = entries if entries is not None else []
        # Structures parsed from these headers (top Via, From...), by memo name (see `memo`).
        self._parsed: dict[str, Any] | None = None

    def memo(self, name: str, parse: Callable[[], T]) -> T:
        """`parse()`, computed once until that header changes (a message's Via is read by the
        transaction layer, the endpoint and the TU: parse it once).

        `name` is the header the value is parsed from, optionally followed by ``:detail``
        ("Via:top"): a change to that header forgets it, a change to another one does not.
        """
        parsed = self._parsed
        if parsed is None:
            parsed = self._parsed = {}
        else:
            known: T | None = parsed.get(name)
            if known is not None:
                return known
        if name not in _MEMO_KEYS:
            _register_memo(name)
        value = parse()
        parsed[name] = value
        return value

    @classmethod
    def of(cls, pairs: list[tuple[str, str]]) -> Headers:
        """Build from (name, value) pairs; names are written in canonical form."""
        headers = cls()
        for name, value in pairs:
            headers.add(name, value)
        return headers

    @staticmethod
    def key(name: str) -> str:
        return lookup_key(name)

    def get(self, name: str) -> str | None:
        """The first value of the header `name`, or None."""
        key = _LOOKUP_KEYS.get(name) or lookup_key(name)  # inlined: the hottest lookup
        for entry_key, _, value in self._entries:
            if entry_key == key:
                return value
        return None

    def get_lines(self, name: str) -> list[str]:
        """Every header line of that name, values unsplit."""
        key = _LOOKUP_KEYS.get(name) or lookup_key(name)
        return [value for entry_key, _, value in self._entries if entry_key == key]

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`; for list headers, comma-joined lines are split (§7.3.1)."""
        lines = self.get_lines(name)
        if not lines:
            return lines
        is_list = _IS_LIST.get(name)
        if is_list is None:
            is_list = canonical_name(name) in LIST_HEADERS
            if len(_IS_LIST) < 1024:
                _IS_LIST[name] = is_list
        if not is_list:
            return lines
        if len(lines) == 1:
            return split_comma_list(lines[0])
        values: list[str] = []
        for line in lines:
            values.extend(split_comma_list(line))
        return values

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _LOOKUP_KEYS.get(name) or lookup_key(name)
        for entry_key, _, _ in self._entries:  # noqa: SIM110 - a loop allocates no generator
            if entry_key == key:
                return True
        return False

    def keys(self) -> list[str]:
        """The lookup key of every line, in order."""
        return [key for key, _, _ in self._entries]

    def counts(self) -> dict[str, int]:
        """How many lines each header has, by lookup key (one pass, for message checks)."""
        counts: dict[str, int] = {}
        get = counts.get
        for key, _, _ in self._entries:
            counts[key] = get(key, 0) + 1
        return counts

    def set_memo(self, name: str, value: object) -> None:
        """Store `value` as what `memo(name, ...)` returns until that header changes (a caller
        that changed a header and already has its parse)."""
        if name not in _MEMO_KEYS:
            _register_memo(name)
        parsed = self._parsed
        if parsed is None:
            parsed = self._parsed = {}
        parsed[name] = value

    def forget_parsed(self) -> None:
        """Drop every parsed value (they are parsed again if asked for): for a message that
        is kept but rarely read again, such as a completed transaction's request."""
        self._parsed = None

    def _changed(self, key: str) -> None:
        """Forget the parsed values of header `key` (see `memo`)."""
        parsed = self._parsed
        if parsed:
            for name in _MEMO_NAMES.get(key, ()):
                parsed.pop(name, None)

    def add(self, name: str, value: str) -> None:
        """Append a header line (after any others)."""
        forms = _ADD_FORMS.get(name)
        if forms is None:
            canonical = canonical_name(name)
            forms = (canonical.lower(), canonical)
            if len(_ADD_FORMS) < 1024:
                _ADD_FORMS[name] = forms
        if self._parsed:
            self._changed(forms[0])
        self._entries.append((forms[0], forms[1], value))

    def prepend(self, name: str, value: str) -> None:
        """Insert a header line before all others (a proxy's new top Via or Record-Route)."""
        canonical = canonical_name(name)
        self._changed(canonical.lower())
        self._entries.insert(0, (canonical.lower(), canonical, value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of `name` by one line, kept where the first one stood."""
        canonical = canonical_name(name)
        key = canonical.lower()
        self._changed(key)
        for i, (entry_key, _, _) in enumerate(self._entries):
            if entry_key == key:
                self._entries[i] = (key, canonical, value)
                self._entries[i + 1 :] = [e for e in self._entries[i + 1 :] if e[0] != key]
                return
        self._entries.append((key, canonical, value))

    def remove(self, name: str) -> None:
        key = self.key(name)
        self._changed(key)
        self._entries = [e for e in self._entries if e[0] != key]

    def remove_first(self, name: str) -> str | None:
        """Remove the first value of `name` (splitting a comma list line); return it."""
        key = self.key(name)
        self._changed(key)
        for i, (entry_key, written, value) in enumerate(self._entries):
            if entry_key == key:
                is_list = canonical_name(name) in LIST_HEADERS
                values = split_comma_list(value) if is_list else [value]
                if len(values) > 1:
                    self._entries[i] = (entry_key, written, ", ".join(values[1:]))
                else:
                    del self._entries[i]
                return values[0]
        return None

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first value of `name` in place (a comma list line keeps its other values)."""
        key = self.key(name)
        self._changed(key)
        for i, (entry_key, written, line) in enumerate(self._entries):
            if entry_key == key:
                if "," in line and canonical_name(name) in LIST_HEADERS:
                    value = ", ".join([value, *split_comma_list(line)[1:]])
                self._entries[i] = (entry_key, written, value)
                return
        self.add(name, value)

    def copy(self) -> Headers:
        return Headers(list(self._entries))  # the memo is not shared: the copy may change

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _, name, value in self._entries:
            yield name, value

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"
