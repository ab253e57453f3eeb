"""Money operations: holds, reversals, wallet limits and daily debit tracking.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(38, 3)
TS = sa.DateTime(timezone=True)
NOW = sa.text("now()")
ID = UUID(as_uuid=False)


def upgrade() -> None:
    op.add_column("wallets", sa.Column("per_transaction_limit", MONEY))
    op.add_column("wallets", sa.Column("daily_debit_limit", MONEY))
    op.add_column("wallets", sa.Column("debit_day", sa.Date))
    op.add_column("wallets", sa.Column("debited_today", MONEY, nullable=False, server_default="0"))

    op.add_column("journal_entries", sa.Column("reversed_amount", MONEY, nullable=False, server_default="0"))
    op.add_column("journal_entries", sa.Column("reverses_entry_id", ID))
    op.add_column("journal_entries", sa.Column("hold_id", ID))
    op.create_foreign_key("fk_journal_entries_reverses_entry_id_journal_entries", "journal_entries",
                          "journal_entries", ["reverses_entry_id"], ["id"])
    op.create_check_constraint("ck_journal_entries_reversal_within_amount", "journal_entries",
                               "reversed_amount >= 0 AND reversed_amount <= amount")

    op.create_table(
        "holds",
        sa.Column("id", ID, nullable=False),
        sa.Column("job_id", ID, nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("wallet_id", ID, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("captured_amount", MONEY, nullable=False, server_default="0"),
        sa.Column("status", sa.Text, nullable=False, server_default="active"),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("reference", sa.Text),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
        sa.Column("updated_at", TS, nullable=False, server_default=NOW),
        sa.Column("released_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_holds"),
        sa.UniqueConstraint("job_id", name="uq_holds_job_id"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_holds_job_id_jobs"),
        sa.ForeignKeyConstraint(["wallet_id"], ["wallets.id"], name="fk_holds_wallet_id_wallets"),
        sa.CheckConstraint("amount > 0", name="ck_holds_amount_positive"),
        sa.CheckConstraint("captured_amount >= 0 AND captured_amount <= amount", name="ck_holds_capture_within_amount"),
        sa.CheckConstraint("status IN ('active', 'captured', 'voided', 'expired')", name="ck_holds_status_known"),
    )
    op.create_index("ix_holds_active_wallet", "holds", ["wallet_id"], postgresql_where=sa.text("status = 'active'"))
    op.create_index("ix_holds_active_expiry", "holds", ["expires_at"], postgresql_where=sa.text("status = 'active'"))


def downgrade() -> None:
    op.drop_table("holds")
    op.drop_constraint("ck_journal_entries_reversal_within_amount", "journal_entries")
    op.drop_constraint("fk_journal_entries_reverses_entry_id_journal_entries", "journal_entries")
    for column in ("hold_id", "reverses_entry_id", "reversed_amount"):
        op.drop_column("journal_entries", column)
    for column in ("debited_today", "debit_day", "daily_debit_limit", "per_transaction_limit"):
        op.drop_column("wallets", column)
