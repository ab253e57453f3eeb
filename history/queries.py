"""Reads of the history read model, newest first, with keyset cursors."""
from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import text

from app.adapters.db import engine
from app.domain.money import format_amount
from app.services import cursors
from app.services.views import timestamp

_COLUMNS = ("event_id::text, event_type, wallet_id::text, user_id, currency, amount, balance_after, wallet_version,"
            " transaction_id::text, counterparty_wallet_id::text, request_id, batch_id::text, metadata, reference,"
            " occurred_at")


def event_view(row) -> dict:
    """A history row as the API's event."""
    def money(value):
        return None if value is None else format_amount(value, row["currency"])

    return {
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "wallet_id": row["wallet_id"],
        "user_id": row["user_id"],
        "amount": money(row["amount"]),
        "balance_after": money(row["balance_after"]),
        "wallet_version": row["wallet_version"],
        "transaction_id": row["transaction_id"],
        "counterparty_wallet_id": row["counterparty_wallet_id"],
        "request_id": row["request_id"],
        "batch_id": row["batch_id"],
        "metadata": row["metadata"],
        "reference": row["reference"],
        "occurred_at": timestamp(row["occurred_at"]),
    }


def _filters(types: list[str] | None, since: datetime | None, until: datetime | None, params: dict,
             tenant_id: str | None = None, reference: str | None = None, metadata: dict | None = None) -> str:
    sql = ""
    if reference is not None:
        sql += " AND reference = :reference"
        params["reference"] = reference
    if metadata:  # every pair must match: containment, served by the GIN index on metadata
        sql += " AND metadata @> CAST(:metadata AS jsonb)"
        params["metadata"] = json.dumps(metadata)
    if tenant_id is not None:  # None: an admin key, every tenant
        sql += " AND tenant_id = :tenant"
        params["tenant"] = tenant_id
    if types:
        sql += " AND event_type = ANY(:types)"
        params["types"] = types
    if since is not None:
        sql += " AND occurred_at >= :since"
        params["since"] = since
    if until is not None:
        sql += " AND occurred_at < :until"
        params["until"] = until
    return sql


def _page(sql: str, params: dict, limit: int, cursor_of) -> dict:
    with engine().connect() as conn:
        rows = conn.execute(text(sql), {**params, "limit": limit + 1}).mappings().all()
    items = rows[:limit]
    next_cursor = cursor_of(items[-1]) if len(rows) > limit else None
    return {"items": [event_view(r) for r in items], "next_cursor": next_cursor}


def wallet_history(wallet_id: str, *, limit: int, cursor: str | None, types: list[str] | None = None,
                   since: datetime | None = None, until: datetime | None = None, tenant_id: str | None = None,
                   reference: str | None = None, metadata: dict | None = None) -> dict:
    """A wallet's events in its own order: newest first by wallet_version."""
    params: dict = {}
    after = ""
    if cursor:
        version, event_id = cursors.WALLET_HISTORY.decode(cursor)
        after = " AND (wallet_version, event_id) < (:c_v, CAST(:c_e AS uuid))"
        params.update(c_v=version, c_e=event_id)
    params["wallet"] = wallet_id
    sql = (f"SELECT {_COLUMNS} FROM history_events WHERE wallet_id = CAST(:wallet AS uuid)"
           + _filters(types, since, until, params, tenant_id, reference, metadata) + after
           + " ORDER BY wallet_version DESC, event_id DESC LIMIT :limit")
    return _page(sql, params, limit, lambda r: cursors.WALLET_HISTORY.encode(r["wallet_version"], r["event_id"]))


def user_activity(user_id: str, *, limit: int, cursor: str | None, types: list[str] | None = None,
                  since: datetime | None = None, until: datetime | None = None, tenant_id: str | None = None,
                   reference: str | None = None, metadata: dict | None = None) -> dict:
    """A user's events across their wallets: newest first by occurred_at, then event_id.

    A transfer between two wallets of the same user is one event with two rows, so
    wallet_id breaks the last tie.
    """
    params: dict = {"user": user_id}
    after = ""
    if cursor:
        occurred_at, event_id, wallet_id = cursors.USER_ACTIVITY.decode(cursor)
        after = " AND (occurred_at, event_id, wallet_id) < (:c_t, CAST(:c_e AS uuid), CAST(:c_w AS uuid))"
        params.update(c_t=occurred_at, c_e=event_id, c_w=wallet_id)
    sql = (f"SELECT {_COLUMNS} FROM history_events WHERE user_id = :user"
           + _filters(types, since, until, params, tenant_id, reference, metadata) + after
           + " ORDER BY occurred_at DESC, event_id DESC, wallet_id DESC LIMIT :limit")
    return _page(sql, params, limit,
                 lambda r: cursors.USER_ACTIVITY.encode(r["occurred_at"], r["event_id"], r["wallet_id"]))

