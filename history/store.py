"""SQL of the read model's writers (history worker, rebuild), on a caller's connection."""
from __future__ import annotations

from sqlalchemy import Connection, Table, literal_column
from sqlalchemy.dialects.postgresql import insert

from history.tables import history_dead_letters, history_events

ROW_COLUMNS = ("event_id", "wallet_id", "event_type", "tenant_id", "user_id", "currency", "amount", "balance_after",
               "wallet_version", "transaction_id", "counterparty_wallet_id", "request_id", "occurred_at")


def insert_rows(conn: Connection, rows: list[dict], table: Table = history_events) -> int:
    """Insert history rows, skipping those already stored; returns how many were new."""
    if not rows:
        return 0
    # Batched into multi-row VALUES by SQLAlchemy (insertmanyvalues); RETURNING counts the new rows.
    stmt = insert(table).on_conflict_do_nothing(index_elements=["event_id", "wallet_id"]).returning(
        literal_column("1"))
    return len(conn.execute(stmt, rows).fetchall())


def insert_dead_letter(conn: Connection, *, topic: str, partition: int, offset: int, key: bytes | None,
                       value: bytes | None, error: str) -> None:
    """Keep a message that can never be projected, once per (topic, partition, offset)."""
    conn.execute(insert(history_dead_letters).values(
        topic=topic, partition=partition, offset=offset, key=key, value=value, error=error[:2000],
    ).on_conflict_do_nothing(index_elements=["topic", "partition", "offset"]))
