"""Looking up what a request names: 404 for what the caller cannot see, 422 for bad amounts."""
from __future__ import annotations

import uuid
from decimal import Decimal

from flask import request

from app.api.context import current_tenant
from app.api.metadata_query import with_metadata_pairs
from app.api.problems import ApiError, validation_failed
from app.api.schemas import PRINTABLE, load
from app.domain.errors import InvalidAmount
from app.domain.money import parse_amount
from app.services import queries


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False


def user_id_in_path(user_id: str) -> str:
    """A user id named in a path: what a wallet's user_id can be, or 422 (no such user can exist)."""
    if not 1 <= len(user_id) <= 100 or not PRINTABLE.fullmatch(user_id):
        raise validation_failed({"user_id": ["must be 1-100 printable ASCII characters"]}, "the path is not valid")
    return user_id


def _require(kind: str, value: str, lookup) -> dict:
    row = lookup(value, current_tenant()) if _is_uuid(value) else None
    if row is None:
        raise ApiError(f"{kind.upper()}_NOT_FOUND", f"{kind} {value} does not exist")
    return row


def require_wallet(wallet_id: str) -> dict:
    """The caller's wallet row, or 404 exactly as if it did not exist."""
    return _require("wallet", wallet_id, queries.wallet_row)


def command_wallets(*wallet_ids: str) -> list[dict]:
    """What a command needs of the caller's wallets (id, currency), in the order asked; 404 for the first missing.

    Served from a per-process cache of facts that never change; the worker checks
    everything that can change (status, balance, limits) when it runs the command.
    """
    valid = [str(uuid.UUID(w)) for w in wallet_ids if _is_uuid(w)]
    facts = queries.wallet_facts(valid, current_tenant()) if valid else {}
    for wallet_id in wallet_ids:
        if not _is_uuid(wallet_id) or str(uuid.UUID(wallet_id)) not in facts:
            raise ApiError("WALLET_NOT_FOUND", f"wallet {wallet_id} does not exist")
    return [facts[str(uuid.UUID(w))] for w in wallet_ids]


def require_hold(hold_id: str) -> dict:
    return _require("hold", hold_id, queries.hold_row)


def require_transaction(transaction_id: str) -> dict:
    return _require("transaction", transaction_id, queries.transaction_row)


def amount_in(currency: str, value: str | None, field: str = "amount", allow_zero: bool = False) -> Decimal | None:
    """A body amount checked against the currency's precision (422)."""
    if value is None:
        return None
    try:
        return parse_amount(value, currency, allow_zero=allow_zero)
    except InvalidAmount as e:
        raise validation_failed({field: [e.message]}) from e


def query_args(schema_class) -> dict:
    """The query string loaded by the schema (422 on any problem); `metadata[KEY]=VALUE` pairs go to its
    `metadata` field together (app.api.metadata_query.MetadataPairs)."""
    return load(schema_class, with_metadata_pairs(request.args))
