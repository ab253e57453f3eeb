"""Indexes of the transaction search (GET /transactions, GET /wallets/{id}/transactions filters).

Each filter reads an index in the tenant list's order, newest first by
(created_at, id): no filter and from/to, type, reference, amount, and the two
sides a wallet takes part in (wallet_id, counterparty_wallet_id). Built
CONCURRENTLY: journal_entries holds every transaction, and a plain CREATE INDEX
would block money movements for the whole build. A build that fails leaves an
INVALID index behind: drop it before running the migration again.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08
"""
import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# name -> (columns, partial index condition)
INDEXES = {
    "ix_journal_entries_tenant_id_created_at_id": (["tenant_id", "created_at", "id"], None),
    "ix_journal_entries_tenant_id_type_created_at_id": (["tenant_id", "type", "created_at", "id"], None),
    "ix_journal_entries_tenant_id_reference_created_at_id": (["tenant_id", "reference", "created_at", "id"],
                                                             "reference IS NOT NULL"),
    "ix_journal_entries_tenant_id_amount_created_at_id": (["tenant_id", "amount", "created_at", "id"], None),
    "ix_journal_entries_wallet_id_created_at_id": (["wallet_id", "created_at", "id"], None),
    "ix_journal_entries_counterparty_wallet_id_created_at_id": (["counterparty_wallet_id", "created_at", "id"],
                                                                "counterparty_wallet_id IS NOT NULL"),
}


def upgrade() -> None:
    with op.get_context().autocommit_block():
        for name, (columns, where) in INDEXES.items():
            op.create_index(name, "journal_entries", columns, postgresql_concurrently=True,
                            postgresql_where=sa.text(where) if where else None)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.drop_index(name, table_name="journal_entries", postgresql_concurrently=True)
