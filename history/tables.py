"""PostgreSQL tables of the history read model, as SQLAlchemy Core metadata (migration 0002)."""
from __future__ import annotations

from sqlalchemy import (
    BigInteger, Column, DateTime, Identity, Index, Integer, LargeBinary, MetaData, Numeric, PrimaryKeyConstraint,
    Table, Text, UniqueConstraint, text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from app.adapters.tables import NAMING_CONVENTION

MONEY = Numeric(38, 3)

# The same naming convention as the write side's tables, so `alembic check` names match.
metadata = MetaData(naming_convention=NAMING_CONVENTION)

history_events = Table(
    "history_events", metadata,
    # One event may touch two wallets (a transfer): a row per (event, wallet), stored once.
    Column("event_id", UUID(as_uuid=False), nullable=False),
    Column("wallet_id", UUID(as_uuid=False), nullable=False),
    Column("event_type", Text, nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount", MONEY),
    Column("balance_after", MONEY),
    Column("wallet_version", BigInteger, nullable=False),
    Column("transaction_id", UUID(as_uuid=False)),
    Column("counterparty_wallet_id", UUID(as_uuid=False)),
    Column("request_id", Text),
    Column("batch_id", UUID(as_uuid=False)),  # the bulk submission the command came in, if any
    Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("reference", Text),  # the transaction's or hold's, if it has one
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    # When the row was written (clock time, not transaction start): history lag = recorded_at - occurred_at.
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=text("clock_timestamp()")),
    PrimaryKeyConstraint("event_id", "wallet_id"),
    Index(None, "wallet_id", "wallet_version"),
    Index(None, "user_id", "occurred_at", "event_id"),
    # Search: by reference, and by metadata pairs (containment, @>).
    Index(None, "tenant_id", "reference", postgresql_where=text("reference IS NOT NULL")),
    Index("ix_history_events_metadata", "metadata", postgresql_using="gin", postgresql_ops={"metadata": "jsonb_path_ops"}),
)

history_dead_letters = Table(
    "history_dead_letters", metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("topic", Text, nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("key", LargeBinary),
    Column("value", LargeBinary),
    Column("error", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    # A redelivered poison message is recorded once.
    UniqueConstraint("topic", "partition", "offset"),
)
