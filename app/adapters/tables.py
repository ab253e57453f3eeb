"""PostgreSQL tables of the write side, as SQLAlchemy Core metadata.

The Alembic migrations create them; `alembic check` in the test suite keeps the
two in step.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger, Boolean, CheckConstraint, Column, Date, DateTime, ForeignKey, Identity, Index, Integer, MetaData,
    Numeric, Table, Text, UniqueConstraint, text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

MONEY = Numeric(38, 3)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

NOW = text("now()")
NO_METADATA = text("'{}'::jsonb")  # metadata: the client's labels on a command (app.domain.metadata), {} for none

wallets = Table(
    "wallets", metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("balance", MONEY, nullable=False, server_default="0"),
    Column("status", Text, nullable=False, server_default="active"),
    Column("version", BigInteger, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("per_transaction_limit", MONEY),
    Column("daily_debit_limit", MONEY),
    Column("debit_day", Date),  # the UTC day debited_today counts
    Column("debited_today", MONEY, nullable=False, server_default="0"),
    Column("overdraft_limit", MONEY, nullable=False, server_default="0"),  # how far below zero debits may go
    Column("metadata", JSONB, nullable=False, server_default=NO_METADATA),  # its create command's
    # The last line of defence: no code path may take a wallet below its overdraft limit (zero unless set).
    CheckConstraint("balance >= -overdraft_limit", name="balance_within_overdraft"),
    CheckConstraint("overdraft_limit >= 0", name="overdraft_limit_not_negative"),
    CheckConstraint("status IN ('active', 'frozen', 'closed')", name="status_known"),
    Index(None, "tenant_id", "user_id", "created_at"),
)

batches = Table(
    "batches", metadata,  # a bulk submission; its status and counts are read from its jobs
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("atomic", Boolean, nullable=False),
    Column("size", Integer, nullable=False),  # commands submitted
    Column("request_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    CheckConstraint("size BETWEEN 1 AND 1000", name="size_in_range"),
)

jobs = Table(
    "jobs", metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),  # also the id of its Celery task (wallet.<type>)
    Column("tenant_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("status", Text, nullable=False, server_default="queued"),
    Column("payload", JSONB, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lost_deliveries", Integer, nullable=False, server_default="0"),
    Column("result", JSONB),
    Column("error", JSONB),
    Column("request_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("enqueued_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("completed_at", DateTime(timezone=True)),
    Column("batch_id", UUID(as_uuid=False), ForeignKey("batches.id")),  # an independent batch's command
    Column("batch_index", Integer),  # its index in the batch
    # Sent with If-Match: the version its wallet had when accepted, which it must still have when it runs.
    Column("if_match_version", BigInteger),
    Column("metadata", JSONB, nullable=False, server_default=NO_METADATA),
    CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')", name="status_known"),
    Index("ix_jobs_unfinished", "status", "enqueued_at", postgresql_where=text("status IN ('queued', 'running')")),
    Index(None, "batch_id", "batch_index", postgresql_where=text("batch_id IS NOT NULL")),
)

idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("tenant_id", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("fingerprint", Text, nullable=False),  # sha256 of method, path and body
    Column("job_id", UUID(as_uuid=False), ForeignKey("jobs.id")),
    Column("batch_id", UUID(as_uuid=False), ForeignKey("batches.id")),  # a key names a job or a batch
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    CheckConstraint("(job_id IS NULL) <> (batch_id IS NULL)", name="job_or_batch"),
    Index(None, "created_at"),
)

journal_entries = Table(
    "journal_entries", metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),  # the transaction id clients see
    Column("job_id", UUID(as_uuid=False), ForeignKey("jobs.id"), nullable=False),
    Column("item", Integer, nullable=False, server_default="0"),  # the command's index in an atomic batch job
    Column("tenant_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("wallet_id", UUID(as_uuid=False), ForeignKey("wallets.id"), nullable=False),
    Column("counterparty_wallet_id", UUID(as_uuid=False), ForeignKey("wallets.id")),
    Column("balance_after", MONEY),
    Column("counterparty_balance_after", MONEY),
    Column("reference", Text),
    Column("request_id", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("reversed_amount", MONEY, nullable=False, server_default="0"),
    Column("reverses_entry_id", UUID(as_uuid=False), ForeignKey("journal_entries.id")),
    Column("hold_id", UUID(as_uuid=False)),  # the hold a CAPTURE settled
    Column("metadata", JSONB, nullable=False, server_default=NO_METADATA),  # the command's (the batch item's)
    # A job records each of its commands at most once, however often it is delivered.
    UniqueConstraint("job_id", "item"),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("reversed_amount >= 0 AND reversed_amount <= amount", name="reversal_within_amount"),
    Index("ix_journal_entries_metadata", "metadata", postgresql_using="gin",
          postgresql_ops={"metadata": "jsonb_path_ops"}),  # metadata[KEY]=VALUE filters (containment)
    # Search (migration 0016, app/services/transaction_search.py): each filter reads an index in the list's
    # order, newest first by (created_at, id), so a page stops after `limit` rows.
    Index(None, "tenant_id", "created_at", "id"),  # no filter, from/to, and filters that match many
    Index(None, "tenant_id", "type", "created_at", "id"),
    Index(None, "tenant_id", "reference", "created_at", "id", postgresql_where=text("reference IS NOT NULL")),
    Index(None, "tenant_id", "amount", "created_at", "id"),  # min_amount/max_amount that match few
    Index(None, "wallet_id", "created_at", "id"),  # wallet_id: the wallet's side ...
    Index(None, "counterparty_wallet_id", "created_at", "id",  # ... and its counterparty's side
          postgresql_where=text("counterparty_wallet_id IS NOT NULL")),
)

holds = Table(
    "holds", metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("job_id", UUID(as_uuid=False), ForeignKey("jobs.id"), nullable=False, unique=True),
    Column("tenant_id", Text, nullable=False),
    Column("wallet_id", UUID(as_uuid=False), ForeignKey("wallets.id"), nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("captured_amount", MONEY, nullable=False, server_default="0"),
    Column("status", Text, nullable=False, server_default="active"),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("reference", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("released_at", DateTime(timezone=True)),  # captured, voided or expired
    Column("metadata", JSONB, nullable=False, server_default=NO_METADATA),  # its place command's
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("captured_amount >= 0 AND captured_amount <= amount", name="capture_within_amount"),
    CheckConstraint("status IN ('active', 'captured', 'voided', 'expired')", name="status_known"),
    Index("ix_holds_active_wallet", "wallet_id", postgresql_where=text("status = 'active'")),
    Index("ix_holds_active_expiry", "expires_at", postgresql_where=text("status = 'active'")),
)

postings = Table(
    "postings", metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("entry_id", UUID(as_uuid=False), ForeignKey("journal_entries.id"), nullable=False),
    Column("job_id", UUID(as_uuid=False), nullable=False),
    Column("item", Integer, nullable=False, server_default="0"),  # the command's index in an atomic batch job
    Column("account", Text, nullable=False),  # a wallet id, or a system account such as system:funding
    Column("wallet_id", UUID(as_uuid=False), ForeignKey("wallets.id")),
    Column("currency", Text, nullable=False),
    Column("amount", MONEY, nullable=False),  # signed: positive raises the account's balance
    Column("balance_after", MONEY),
    Column("wallet_version", BigInteger),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    # A job moves money on an account at most once, however often it is delivered.
    UniqueConstraint("job_id", "item", "account"),
    CheckConstraint("amount <> 0", name="amount_not_zero"),
    Index("ix_postings_wallet_version", "wallet_id", "wallet_version", postgresql_where=text("wallet_id IS NOT NULL")),
    Index(None, "entry_id"),
)

outbox = Table(
    "outbox", metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("aggregatetype", Text, nullable=False),
    Column("aggregateid", Text, nullable=False),  # the Kafka key: the wallet id
    Column("type", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("published_at", DateTime(timezone=True)),
    Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("token_hash", Text, nullable=False, unique=True),  # sha256 of the token; the token is never stored
    Column("prefix", Text, nullable=False),  # the token's first characters, to recognise it in listings
    Column("tenant_id", Text, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("name", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("revoked_at", DateTime(timezone=True)),
)

audit_runs = Table(
    "audit_runs", metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("problems", JSONB, nullable=False),
)

# Webhooks (migration 0010): endpoints a tenant registers, one delivery per notification and endpoint,
# and every attempt at it.
webhook_endpoints = Table(
    "webhook_endpoints", metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("events", ARRAY(Text), nullable=False),  # notification types, or ['*']
    Column("description", Text),
    Column("status", Text, nullable=False, server_default="enabled"),
    # The signing secrets are kept as issued (an HMAC needs the key itself); during a rotation the previous
    # one signs too until previous_secret_expires_at.
    Column("secret", Text, nullable=False),
    Column("previous_secret", Text),
    Column("previous_secret_expires_at", DateTime(timezone=True)),
    Column("failing_since", DateTime(timezone=True)),  # the first failed attempt since the last success
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    CheckConstraint("status IN ('enabled', 'disabled')", name="status_known"),
    Index(None, "tenant_id", "created_at"),
)

webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("endpoint_id", UUID(as_uuid=False), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
           nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("webhook_id", Text, nullable=False),  # the same on every attempt: receivers deduplicate on it
    Column("event_type", Text, nullable=False),
    Column("payload", JSONB, nullable=False),  # the body {"type", "timestamp", "data"}, the same on every attempt
    Column("status", Text, nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("lease_until", DateTime(timezone=True)),  # an attempt in flight owns the delivery until then
    Column("leased_by", Text),  # ... in this Celery worker (node name): it frees them when it starts again
    Column("enqueued_at", DateTime(timezone=True), server_default=NOW),  # its task was published then
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("completed_at", DateTime(timezone=True)),
    CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status_known"),
    UniqueConstraint("endpoint_id", "webhook_id"),  # a notification fans out to an endpoint once
    Index(None, "endpoint_id", "created_at", "id"),
    Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    Index("ix_webhook_deliveries_leased", "endpoint_id", postgresql_where=text("lease_until IS NOT NULL")),
)

webhook_attempts = Table(
    "webhook_attempts", metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("delivery_id", UUID(as_uuid=False), ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
           nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    UniqueConstraint("delivery_id", "attempt"),
)
