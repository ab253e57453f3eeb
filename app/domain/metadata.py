"""Metadata: the client's own labels on a command, kept on the job and on what the command produced.

At most MAX_KEYS keys of 1–40 characters of `[A-Za-z0-9_.-]`, each with a string
value of at most MAX_VALUE characters (any Unicode PostgreSQL can store: no NUL,
no lone surrogate).
"""
from __future__ import annotations

import re

MAX_KEYS = 20
MAX_VALUE = 500
KEY_PATTERN = "^[A-Za-z0-9_.-]{1,40}$"
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,40}")


class InvalidMetadata(ValueError):
    """Metadata that breaks a rule; the message says which, for the client."""


def validated(value: object) -> dict[str, str]:
    """The metadata as stored ({} for none); raises InvalidMetadata."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidMetadata("must be an object of string values")
    if len(value) > MAX_KEYS:
        raise InvalidMetadata(f"must have at most {MAX_KEYS} keys")
    for key, text in value.items():
        if not _KEY.fullmatch(key):
            raise InvalidMetadata(f"key {key[:50]!r} must be 1-40 characters of letters, digits, '_', '.' or '-'")
        if not isinstance(text, str):
            raise InvalidMetadata(f"the value of {key!r} must be a string")
        if len(text) > MAX_VALUE:
            raise InvalidMetadata(f"the value of {key!r} must be at most {MAX_VALUE} characters")
        if "\x00" in text or any("\ud800" <= c <= "\udfff" for c in text):
            raise InvalidMetadata(f"the value of {key!r} must not contain NUL characters or unpaired surrogates")
    return dict(value)
