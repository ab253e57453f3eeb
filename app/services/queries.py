"""Read side of the wallet API: plain SQL straight to views (no domain needed)."""
from __future__ import annotations

import os

from sqlalchemy import text

from app.adapters.db import engine
from app.adapters.store import WALLET_VIEW_COLUMNS
from app.domain.money import Money, format_amount
from app.services import cursors
from app.services.views import job_view, timestamp, transaction_view, wallet_view

JOB_COLUMNS = ("j.id, j.tenant_id, j.type, j.status, j.attempts, j.result, j.error, j.request_id, j.metadata, "
               "j.created_at, j.updated_at, j.completed_at")


def _tenant_clause(alias: str, tenant_id: str | None) -> str:
    """Restrict to one tenant; None (an admin) sees every tenant."""
    return "" if tenant_id is None else f" AND {alias}.tenant_id = :tenant"


def wallet_row(wallet_id: str, tenant_id: str | None) -> dict | None:
    """The wallet's row if it exists for this tenant."""
    with engine().connect() as conn:
        row = conn.execute(text(f"SELECT {WALLET_VIEW_COLUMNS} FROM wallets w WHERE w.id = CAST(:id AS uuid)"
                                + _tenant_clause("w", tenant_id)),
                           {"id": wallet_id, "tenant": tenant_id}).mappings().first()
    return dict(row) if row else None


# What a command needs to know of a wallet (that it exists, its tenant, its currency)
# never changes once the wallet exists: wallets are closed, never deleted or moved.
# The command routes read it from this per-process cache (one query fewer per command).
_FACTS: dict = {"pid": None, "rows": {}}
FACTS_MAX = 100_000


def wallet_facts(wallet_ids: list[str], tenant_id: str | None) -> dict[str, dict]:
    """id, tenant_id and currency of those wallets that exist for this tenant, keyed by id."""
    if _FACTS["pid"] != os.getpid():
        _FACTS.update(pid=os.getpid(), rows={})
    cache = _FACTS["rows"]
    missing = [w for w in wallet_ids if w not in cache]
    if missing:
        with engine().connect() as conn:
            for row in conn.execute(text("SELECT id::text AS id, tenant_id, currency FROM wallets"
                                         " WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": missing}).mappings():
                if len(cache) >= FACTS_MAX:
                    cache.clear()
                cache[row["id"]] = dict(row)
    return {w: cache[w] for w in wallet_ids
            if w in cache and (tenant_id is None or cache[w]["tenant_id"] == tenant_id)}



def list_user_wallets(user_id: str, tenant_id: str | None, limit: int, cursor: str | None) -> dict:
    params = {"user": user_id, "tenant": tenant_id, "limit": limit + 1}
    after = ""
    if cursor:
        created_at, wallet_id = cursors.USER_WALLETS.decode(cursor)
        after = " AND (w.created_at, w.id) < (:c_created, CAST(:c_id AS uuid))"
        params.update(c_created=created_at, c_id=wallet_id)
    with engine().connect() as conn:
        rows = conn.execute(text(
            f"SELECT {WALLET_VIEW_COLUMNS} FROM wallets w WHERE w.user_id = :user" + _tenant_clause("w", tenant_id)
            + after + " ORDER BY w.created_at DESC, w.id DESC LIMIT :limit"), params).mappings().all()
    items, next_cursor = rows[:limit], None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = cursors.USER_WALLETS.encode(last["created_at"], last["id"])
    return {"items": [wallet_view(r) for r in items], "next_cursor": next_cursor}


def get_job(job_id: str, tenant_id: str | None) -> dict | None:
    with engine().connect() as conn:
        row = conn.execute(text(f"SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = CAST(:id AS uuid)"
                                + _tenant_clause("j", tenant_id)),
                           {"id": job_id, "tenant": tenant_id}).mappings().first()
    return job_view(row) if row else None


def hold_row(hold_id: str, tenant_id: str | None) -> dict | None:
    with engine().connect() as conn:
        row = conn.execute(text("SELECT h.*, now() AS read_at FROM holds h WHERE h.id = CAST(:id AS uuid)"
                                + _tenant_clause("h", tenant_id)),
                           {"id": hold_id, "tenant": tenant_id}).mappings().first()
    return dict(row) if row else None



def transaction_row(transaction_id: str, tenant_id: str | None) -> dict | None:
    with engine().connect() as conn:
        row = conn.execute(text("SELECT e.* FROM journal_entries e WHERE e.id = CAST(:id AS uuid)"
                                + _tenant_clause("e", tenant_id)),
                           {"id": transaction_id, "tenant": tenant_id}).mappings().first()
    return dict(row) if row else None



_BALANCE_AT = text("""
    SELECT coalesce((SELECT p.balance_after FROM postings p
                      WHERE p.wallet_id = CAST(:wallet AS uuid) AND p.created_at <= :at
                      ORDER BY p.wallet_version DESC LIMIT 1), 0) AS balance,
           coalesce((SELECT sum(h.amount) FROM holds h
                      WHERE h.wallet_id = CAST(:wallet AS uuid) AND h.created_at <= :at AND h.expires_at > :at
                        AND (h.released_at IS NULL OR h.released_at > :at)), 0) AS held
""")


def balance_as_of(wallet: dict, as_of) -> dict:
    """Posted and available balance at a past instant, from the postings' balance_after."""
    with engine().connect() as conn:
        if as_of is None:
            as_of = conn.execute(text("SELECT now()")).scalar()
        row = conn.execute(_BALANCE_AT, {"wallet": str(wallet["id"]), "at": as_of}).mappings().one()
    currency = wallet["currency"]
    return {"balance": format_amount(row["balance"], currency),
            "available_balance": (Money(row["balance"], currency) - Money(row["held"], currency)).format(),
            "as_of": timestamp(as_of)}


def statement(wallet: dict, start, end) -> dict:
    """Opening balance at `start`, every transaction in [start, end] oldest first, closing balance at `end`."""
    wallet_id = str(wallet["id"])
    with engine().connect() as conn:
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        start = start or wallet["created_at"]
        end = end or conn.execute(text("SELECT now()")).scalar()
        opening = conn.execute(text("""
            SELECT coalesce((SELECT balance_after FROM postings WHERE wallet_id = CAST(:wallet AS uuid)
                               AND created_at < :start ORDER BY wallet_version DESC LIMIT 1), 0)
        """), {"wallet": wallet_id, "start": start}).scalar()
        rows = conn.execute(text("""
            SELECT p.amount AS wallet_amount, p.balance_after AS wallet_balance_after, e.*
              FROM postings p JOIN journal_entries e ON e.id = p.entry_id
             WHERE p.wallet_id = CAST(:wallet AS uuid) AND p.created_at >= :start AND p.created_at <= :end
             ORDER BY p.wallet_version
        """), {"wallet": wallet_id, "start": start, "end": end}).mappings().all()
    currency = wallet["currency"]
    closing = rows[-1]["wallet_balance_after"] if rows else opening
    items = []
    for r in rows:
        item = transaction_view(r)
        item["direction"] = "credit" if r["wallet_amount"] > 0 else "debit"
        item["running_balance"] = format_amount(r["wallet_balance_after"], currency)
        items.append(item)
    return {"wallet_id": wallet_id, "currency": currency, "from": timestamp(start), "to": timestamp(end),
            "opening_balance": format_amount(opening, currency), "closing_balance": format_amount(closing, currency),
            "items": items}
