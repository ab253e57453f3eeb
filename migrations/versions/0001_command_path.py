"""Command path: wallets, jobs, idempotency keys, double-entry journal, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

MONEY = sa.Numeric(38, 3)
TS = sa.DateTime(timezone=True)
NOW = sa.text("now()")
ID = UUID(as_uuid=False)


def upgrade() -> None:
    op.create_table(
        "wallets",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("balance", MONEY, nullable=False, server_default="0"),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
        sa.Column("updated_at", TS, nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="pk_wallets"),
        sa.CheckConstraint("balance >= 0", name="ck_wallets_balance_not_negative"),
        sa.CheckConstraint("status IN ('active', 'frozen', 'closed')", name="ck_wallets_status_known"),
    )
    op.create_index("ix_wallets_tenant_id_user_id_created_at", "wallets", ["tenant_id", "user_id", "created_at"])

    op.create_table(
        "jobs",
        sa.Column("id", ID, nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="queued"),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lost_deliveries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("result", JSONB),
        sa.Column("error", JSONB),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
        sa.Column("updated_at", TS, nullable=False, server_default=NOW),
        sa.Column("enqueued_at", TS, nullable=False, server_default=NOW),
        sa.Column("completed_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name="ck_jobs_status_known"),
    )
    op.create_index("ix_jobs_unfinished", "jobs", ["status", "enqueued_at"],
                    postgresql_where=sa.text("status IN ('queued', 'running')"))

    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("job_id", ID, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("tenant_id", "key", name="pk_idempotency_keys"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_idempotency_keys_job_id_jobs"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])

    op.create_table(
        "journal_entries",
        sa.Column("id", ID, nullable=False),
        sa.Column("job_id", ID, nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("wallet_id", ID, nullable=False),
        sa.Column("counterparty_wallet_id", ID),
        sa.Column("balance_after", MONEY),
        sa.Column("counterparty_balance_after", MONEY),
        sa.Column("reference", sa.Text),
        sa.Column("request_id", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="pk_journal_entries"),
        sa.UniqueConstraint("job_id", name="uq_journal_entries_job_id"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_journal_entries_job_id_jobs"),
        sa.ForeignKeyConstraint(["wallet_id"], ["wallets.id"], name="fk_journal_entries_wallet_id_wallets"),
        sa.ForeignKeyConstraint(["counterparty_wallet_id"], ["wallets.id"],
                                name="fk_journal_entries_counterparty_wallet_id_wallets"),
        sa.CheckConstraint("amount > 0", name="ck_journal_entries_amount_positive"),
    )

    op.create_table(
        "postings",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("entry_id", ID, nullable=False),
        sa.Column("job_id", ID, nullable=False),
        sa.Column("account", sa.Text, nullable=False),
        sa.Column("wallet_id", ID),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("balance_after", MONEY),
        sa.Column("wallet_version", sa.BigInteger),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="pk_postings"),
        sa.UniqueConstraint("job_id", "account", name="uq_postings_job_id_account"),
        sa.ForeignKeyConstraint(["entry_id"], ["journal_entries.id"], name="fk_postings_entry_id_journal_entries"),
        sa.ForeignKeyConstraint(["wallet_id"], ["wallets.id"], name="fk_postings_wallet_id_wallets"),
        sa.CheckConstraint("amount <> 0", name="ck_postings_amount_not_zero"),
    )
    op.create_index("ix_postings_wallet_version", "postings", ["wallet_id", "wallet_version"],
                    postgresql_where=sa.text("wallet_id IS NOT NULL"))
    op.create_index("ix_postings_entry_id", "postings", ["entry_id"])

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("aggregatetype", sa.Text, nullable=False),
        sa.Column("aggregateid", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
        sa.Column("published_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_unpublished", "outbox", ["id"], postgresql_where=sa.text("published_at IS NULL"))


def downgrade() -> None:
    for table in ("outbox", "postings", "journal_entries", "idempotency_keys", "jobs", "wallets"):
        op.drop_table(table)
