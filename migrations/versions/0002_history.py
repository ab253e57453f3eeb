"""History read model: one row per (event, wallet), and the dead letters of the consumer.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(38, 3)
TS = sa.DateTime(timezone=True)
ID = UUID(as_uuid=False)


def upgrade() -> None:
    op.create_table(
        "history_events",
        sa.Column("event_id", ID, nullable=False),
        sa.Column("wallet_id", ID, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("amount", MONEY),
        sa.Column("balance_after", MONEY),
        sa.Column("wallet_version", sa.BigInteger, nullable=False),
        sa.Column("transaction_id", ID),
        sa.Column("counterparty_wallet_id", ID),
        sa.Column("request_id", sa.Text),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("recorded_at", TS, nullable=False, server_default=sa.text("clock_timestamp()")),
        sa.PrimaryKeyConstraint("event_id", "wallet_id", name="pk_history_events"),
    )
    op.create_index("ix_history_events_wallet_id_wallet_version", "history_events", ["wallet_id", "wallet_version"])
    op.create_index("ix_history_events_user_id_occurred_at_event_id", "history_events",
                    ["user_id", "occurred_at", "event_id"])

    op.create_table(
        "history_dead_letters",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("key", sa.LargeBinary),
        sa.Column("value", sa.LargeBinary),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("id", name="pk_history_dead_letters"),
        sa.UniqueConstraint("topic", "partition", "offset", name="uq_history_dead_letters_topic_partition_offset"),
    )


def downgrade() -> None:
    op.drop_table("history_dead_letters")
    op.drop_index("ix_history_events_user_id_occurred_at_event_id", table_name="history_events")
    op.drop_index("ix_history_events_wallet_id_wallet_version", table_name="history_events")
    op.drop_table("history_events")
