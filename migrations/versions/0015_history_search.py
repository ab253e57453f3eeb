"""Search in the history: history rows keep their reference; reference and metadata filters have indexes.

- `history_events.reference`: the transaction's or hold's reference, from the
  event (rows projected before this migration have none).
- A btree index on (tenant_id, reference) and a GIN index (jsonb_path_ops) on
  `metadata` serve the History API's `reference` and `metadata[KEY]=VALUE`
  filters; a GIN index on `journal_entries.metadata` serves the Wallet API's.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("history_events", sa.Column("reference", sa.Text(), nullable=True))
    op.create_index(op.f("ix_history_events_tenant_id_reference"), "history_events", ["tenant_id", "reference"],
                    postgresql_where=sa.text("reference IS NOT NULL"))
    op.create_index("ix_history_events_metadata", "history_events", ["metadata"], postgresql_using="gin",
                    postgresql_ops={"metadata": "jsonb_path_ops"})
    op.create_index("ix_journal_entries_metadata", "journal_entries", ["metadata"], postgresql_using="gin",
                    postgresql_ops={"metadata": "jsonb_path_ops"})


def downgrade() -> None:
    op.drop_index("ix_journal_entries_metadata", table_name="journal_entries")
    op.drop_index("ix_history_events_metadata", table_name="history_events")
    op.drop_index(op.f("ix_history_events_tenant_id_reference"), table_name="history_events")
    op.drop_column("history_events", "reference")
