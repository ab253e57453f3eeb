"""Preconditions: a command sent with If-Match records the wallet version it was accepted at.

`jobs.if_match_version` is the version of the wallet the command's path names,
as it was when the API accepted the command under `If-Match`; the worker fails
the job `VERSION_MISMATCH` if the wallet is at another version when the
command runs. NULL: no precondition.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("if_match_version", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "if_match_version")
