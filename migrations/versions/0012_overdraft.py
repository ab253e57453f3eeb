"""Overdraft: a wallet's balance may go down to -overdraft_limit, and the database enforces it.

`wallets.overdraft_limit` (default 0) replaces the bound `balance >= 0` with
`balance >= -overdraft_limit`: with the default, nothing changes for existing
wallets.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("wallets", sa.Column("overdraft_limit", sa.Numeric(38, 3), server_default="0", nullable=False))
    op.create_check_constraint(op.f("ck_wallets_overdraft_limit_not_negative"), "wallets", "overdraft_limit >= 0")
    op.create_check_constraint(op.f("ck_wallets_balance_within_overdraft"), "wallets", "balance >= -overdraft_limit")
    op.drop_constraint(op.f("ck_wallets_balance_not_negative"), "wallets", type_="check")


def downgrade() -> None:
    # Refused by PostgreSQL while a wallet is overdrawn: settle it first.
    op.create_check_constraint(op.f("ck_wallets_balance_not_negative"), "wallets", "balance >= 0")
    op.drop_constraint(op.f("ck_wallets_balance_within_overdraft"), "wallets", type_="check")
    op.drop_constraint(op.f("ck_wallets_overdraft_limit_not_negative"), "wallets", type_="check")
    op.drop_column("wallets", "overdraft_limit")
