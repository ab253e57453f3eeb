"""SQL of the read model's writers (history worker, rebuild), on a caller's connection."""
from __future__ import annotations

from sqlalchemy import Connection, Table
from sqlalchemy.dialects.postgresql import insert

from app.adapters.db import json_rows, run_sql
from history.tables import history_dead_letters, history_events

ROW_COLUMNS = ("event_id", "wallet_id", "event_type", "tenant_id", "user_id", "currency", "amount", "balance_after",
               "wallet_version", "transaction_id", "counterparty_wallet_id", "request_id", "batch_id", "metadata",
               "reference", "occurred_at")


def insert_rows(conn: Connection, rows: list[dict], table: Table = history_events) -> int:
    """Insert history rows, skipping those already stored; returns how many were new.

    The rows travel as one JSON parameter read back with json_populate_recordset:
    one short statement whatever the batch size (SQLAlchemy's multi-row VALUES
    processed every value of every row in Python, the history worker's largest cost).
    """
    if not rows:
        return 0
    columns = ", ".join(f'"{c}"' for c in ROW_COLUMNS)
    sql = (f"INSERT INTO {table.name} ({columns}) SELECT {columns}"
           f" FROM json_populate_recordset(NULL::{table.name}, CAST(:rows AS json))"
           f" ON CONFLICT (event_id, wallet_id) DO NOTHING RETURNING 1")
    payload = json_rows([{c: row.get(c) for c in ROW_COLUMNS} for row in rows])
    return len(run_sql(conn, sql, {"rows": payload}).fetchall())


def insert_dead_letter(conn: Connection, *, topic: str, partition: int, offset: int, key: bytes | None,
                       value: bytes | None, error: str) -> None:
    """Keep a message that can never be projected, once per (topic, partition, offset)."""
    conn.execute(insert(history_dead_letters).values(
        topic=topic, partition=partition, offset=offset, key=key, value=value, error=error[:2000],
    ).on_conflict_do_nothing(index_elements=["topic", "partition", "offset"]))
