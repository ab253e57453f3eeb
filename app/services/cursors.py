"""Keyset cursors of the list endpoints, as plain text a pattern describes exactly.

A cursor is the sort key of the last item of a page, its fields joined by dots:
an integer, an instant (microseconds since the Unix epoch) or a UUID (32 hex
digits). Clients treat it as opaque. Every string the pattern matches is a
position in the list (maybe past its end: an empty page), and anything else is
a malformed cursor (422), so the OpenAPI pattern is exactly what the API
accepts. Tenant scoping never depends on a cursor: a forged one only moves the
start of the caller's own list.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Field kinds and the text of each; 16 digits of microseconds reach the year 2286.
_KINDS = {"int": "[0-9]{1,18}", "time": "[0-9]{1,16}", "uuid": "[0-9a-f]{32}"}
MALFORMED = "malformed cursor"


class InvalidCursor(ValueError):
    """A cursor that no page of this list could have issued."""


@dataclass(frozen=True)
class CursorFormat:
    kinds: tuple[str, ...]

    @property
    def pattern(self) -> str:
        return "^" + "\\.".join(_KINDS[k] for k in self.kinds) + "$"

    def encode(self, *values) -> str:
        return ".".join(_encode(kind, value) for kind, value in zip(self.kinds, values, strict=True))

    def matches(self, text: str) -> bool:
        return re.fullmatch(self.pattern, text) is not None

    def decode(self, text: str) -> tuple:
        if not re.fullmatch(self.pattern, text):
            raise InvalidCursor(MALFORMED)
        return tuple(_decode(kind, part) for kind, part in zip(self.kinds, text.split("."), strict=True))


def any_of(*formats: CursorFormat) -> str:
    """The pattern of a list whose cursor may be of any of these formats (one per order it can be read in)."""
    if len(formats) == 1:
        return formats[0].pattern
    return "^(" + "|".join(f.pattern[1:-1] for f in formats) + ")$"


def _encode(kind: str, value) -> str:
    if kind == "int":
        return str(int(value))
    if kind == "time":
        return str((value - _EPOCH) // timedelta(microseconds=1))
    return uuid.UUID(str(value)).hex


def _decode(kind: str, part: str):
    if kind == "int":
        return int(part)
    if kind == "time":
        return _EPOCH + timedelta(microseconds=int(part))
    return str(uuid.UUID(hex=part))


USER_WALLETS = CursorFormat(("time", "uuid"))  # created_at, id
TRANSACTIONS = CursorFormat(("int",))  # the wallet's version (a wallet's transactions without filters)
TRANSACTION_SEARCH = CursorFormat(("time", "uuid"))  # created_at, id (a search, a wallet's transactions with filters)
BATCH_JOBS = CursorFormat(("int",))  # the job's index in its batch
WALLET_HISTORY = CursorFormat(("int", "uuid"))  # wallet_version, event_id
USER_ACTIVITY = CursorFormat(("time", "uuid", "uuid"))  # occurred_at, event_id, wallet_id
WEBHOOK_DELIVERIES = CursorFormat(("time", "uuid"))  # created_at, id
