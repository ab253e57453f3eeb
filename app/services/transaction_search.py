"""Transaction search: a tenant's transactions, or one wallet's, narrowed by filters, newest first.

Each filter is one more condition on journal_entries, and the filters combine
with AND; migration 0016 gives each one an index (docs/performance.md, "Search",
has the plans). Pages are keyset pages. A search is ordered by (created_at,
id), its cursor `cursors.TRANSACTION_SEARCH`. A wallet's list without filters
keeps the wallet's own order, by version (cursor `cursors.TRANSACTIONS`); with
filters it is the tenant's search narrowed to the wallet, because the journal's
indexes serve the filters in that order, and a walk down the wallet's versions
that looks up each transaction to test it does not stay fast on a busy wallet.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ColumnElement, Select, select, tuple_, union_all

from app.adapters.db import engine
from app.adapters.tables import journal_entries, postings
from app.services import cursors
from app.services.views import transaction_view


@dataclass(frozen=True)
class TransactionFilters:
    """What a search asks for; None (or no types) leaves that filter out. The default: no filter."""

    wallet_id: str | None = None  # as the transaction's wallet_id or its counterparty_wallet_id
    types: tuple[str, ...] = ()  # any of them
    reference: str | None = None  # exact match
    min_amount: Decimal | None = None  # inclusive
    max_amount: Decimal | None = None  # inclusive
    since: datetime | None = None  # `from`, inclusive
    until: datetime | None = None  # `to`, exclusive
    metadata: tuple[tuple[str, str], ...] = ()  # (key, value) pairs the transaction's metadata must all have


def is_filtered(f: TransactionFilters) -> bool:
    """Whether any filter narrows the list."""
    return f != TransactionFilters()


def _entry_conditions(tenant_id: str | None, f: TransactionFilters) -> list[ColumnElement[bool]]:
    """The tenant and the filters (the wallet aside) as conditions on journal_entries."""
    e = journal_entries.c
    where: list[ColumnElement[bool]] = []
    if tenant_id is not None:  # None: an admin key, every tenant
        where.append(e.tenant_id == tenant_id)
    if f.types:
        where.append(e.type.in_(f.types))
    if f.reference is not None:
        where.append(e.reference == f.reference)
    if f.min_amount is not None:
        where.append(e.amount >= f.min_amount)
    if f.max_amount is not None:
        where.append(e.amount <= f.max_amount)
    if f.since is not None:
        where.append(e.created_at >= f.since)
    if f.until is not None:
        where.append(e.created_at < f.until)
    if f.metadata:  # containment (@>), served by the GIN index on metadata
        where.append(e.metadata.contains(dict(f.metadata)))
    return where


def search_statement(tenant_id: str | None, f: TransactionFilters, limit: int, cursor: str | None) -> Select:
    """The page after `cursor` of the tenant's matching transactions, newest first by (created_at, id).

    It reads one row more than `limit`: that row says whether there is a next page.
    """
    e = journal_entries
    where = _entry_conditions(tenant_id, f)
    if cursor:
        created_at, entry_id = cursors.TRANSACTION_SEARCH.decode(cursor)
        where.append(tuple_(e.c.created_at, e.c.id) < (created_at, entry_id))

    def newest(*conditions) -> Select:
        return (select(e).where(*where, *conditions).order_by(e.c.created_at.desc(), e.c.id.desc())
                .limit(limit + 1))

    if f.wallet_id is None:
        return newest()
    # A wallet takes part as the entry's wallet or as its counterparty. Each side reads its own index newest
    # first and stops after a page; merging two pages is cheap, where `wallet_id = w OR counterparty_wallet_id
    # = w` would fetch and sort every transaction of a busy wallet.
    w = f.wallet_id
    sides = union_all(newest(e.c.wallet_id == w), newest(e.c.counterparty_wallet_id == w, e.c.wallet_id != w))
    merged = sides.subquery()
    return select(merged).order_by(merged.c.created_at.desc(), merged.c.id.desc()).limit(limit + 1)


def wallet_statement(wallet_id: str, tenant_id: str | None, limit: int, cursor: str | None) -> Select:
    """The page after `cursor` of a wallet's transactions, newest first by the wallet's version (no filters).

    Reads one row more than `limit`, like search_statement.
    """
    p, e = postings, journal_entries
    where = [p.c.wallet_id == wallet_id]
    if tenant_id is not None:
        where.append(e.c.tenant_id == tenant_id)
    if cursor:
        (version,) = cursors.TRANSACTIONS.decode(cursor)
        where.append(p.c.wallet_version < version)
    return (select(p.c.wallet_version, e).select_from(p.join(e, e.c.id == p.c.entry_id)).where(*where)
            .order_by(p.c.wallet_version.desc()).limit(limit + 1))


def _page(statement: Select, limit: int, cursor_of) -> dict:
    with engine().connect() as conn:
        rows = conn.execute(statement).mappings().all()
    items = rows[:limit]
    next_cursor = cursor_of(items[-1]) if len(rows) > limit else None
    return {"items": [transaction_view(r) for r in items], "next_cursor": next_cursor}


def search(tenant_id: str | None, f: TransactionFilters, limit: int, cursor: str | None) -> dict:
    """A page of the tenant's transactions matching every filter, newest first by (created_at, id)."""
    return _page(search_statement(tenant_id, f, limit, cursor), limit,
                 lambda r: cursors.TRANSACTION_SEARCH.encode(r["created_at"], r["id"]))


def wallet_transactions(wallet_id: str, tenant_id: str | None, f: TransactionFilters, limit: int,
                        cursor: str | None) -> dict:
    """A page of a wallet's transactions: in the wallet's version order, or with filters as search() finds them.

    The cursor must be of that order (`is_filtered` tells which): the API refuses one of the other.
    """
    if is_filtered(f):
        return search(tenant_id, replace(f, wallet_id=wallet_id), limit, cursor)
    return _page(wallet_statement(wallet_id, tenant_id, limit, cursor), limit,
                 lambda r: cursors.TRANSACTIONS.encode(r["wallet_version"]))
