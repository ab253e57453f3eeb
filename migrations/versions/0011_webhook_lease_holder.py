"""Webhook deliveries record which worker holds their lease.

A webhook worker that starts again under its node name (a supervisor's
restart after a SIGKILL, an OOM kill) frees the leases its previous run held
and republishes those deliveries at once, instead of leaving them, and its
endpoint's share of attempts, taken until the leases run out.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("webhook_deliveries", sa.Column("leased_by", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("webhook_deliveries", "leased_by")
