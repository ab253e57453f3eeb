"""`metadata[KEY]=VALUE` in a query string (repeatable; every pair must match): a filter of lists.

Documented in OpenAPI as a `deepObject` parameter. Keys and values follow the
metadata rules (app.domain.metadata); a key given twice is refused, since
one key cannot hold two values.
"""
from __future__ import annotations

import re

from marshmallow import ValidationError, fields
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


class MetadataPairs(fields.Field):
    """A schema's `metadata` filter: loads the whole query string (a MultiDict) into sorted (key, value) pairs.

    The pairs are many parameters, which no marshmallow field can state, so the OpenAPI document shows
    PARAMETER in the field's place (app.api.openapi).
    """

    openapi_parameter = PARAMETER

    def _deserialize(self, value, attr, data, **kwargs) -> tuple[tuple[str, str], ...]:
        if not isinstance(value, MultiDict):
            raise ValidationError(MALFORMED)
        pairs, problems = metadata_filter(value)
        if problems:
            raise ValidationError(problems)
        return tuple(sorted(pairs.items()))


def with_metadata_pairs(args: MultiDict) -> dict:
    """A query string as a schema with a MetadataPairs field loads it: the pairs together under `metadata`."""
    loaded = {name: value for name, value in args.to_dict().items() if not is_metadata_param(name)}
    if any(is_metadata_param(name) for name in args):
        loaded["metadata"] = args
    return loaded
