"""`metadata[KEY]=VALUE` in a query string (repeatable; every pair must match): a filter of lists.

Documented in OpenAPI as a `deepObject` parameter. Keys and values follow the
metadata rules (app.domain.metadata); a key given twice is refused, since
one key cannot hold two values.
"""
from __future__ import annotations

import re

from werkzeug.datastructures import MultiDict

from app.domain import metadata as md

_PARAM = re.compile(r"metadata\[(.*)\]\Z", re.DOTALL)
MALFORMED = "use metadata[KEY]=VALUE"

# The OpenAPI parameter (style deepObject: metadata[KEY]=VALUE).
PARAMETER = {
    "name": "metadata", "in": "query", "required": False, "style": "deepObject", "explode": True,
    "schema": {"type": "object", "maxProperties": md.MAX_KEYS,
               "additionalProperties": {"type": "string", "maxLength": md.MAX_VALUE, "pattern": "^[^\\x00]*$"}},
    "description": "`metadata[KEY]=VALUE`, repeatable: only items whose metadata has every pair given (keys of "
                   "1–40 characters of A–Z a–z 0–9 _ . -)",
}


def is_metadata_param(name: str) -> bool:
    return name == "metadata" or name.startswith("metadata[")


def metadata_filter(args: MultiDict) -> tuple[dict[str, str], list[str]]:
    """The pairs asked for and the problems with them (empty when valid)."""
    pairs: dict[str, str] = {}
    problems: list[str] = []
    for name, values in args.lists():
        if not is_metadata_param(name):
            continue
        match = _PARAM.match(name)
        if match is None:
            problems.append(f"{name[:60]!r}: {MALFORMED}")
            continue
        key = match.group(1)
        if key in pairs or len(values) > 1:
            problems.append(f"key {key[:50]!r} is given more than once")
            continue
        pairs[key] = values[0]
    try:
        md.validated(pairs)
    except md.InvalidMetadata as e:
        problems.append(str(e))
    return pairs, problems
