"""Jobs remember which delivery claimed them (`claimed_by`), so workers can claim queued jobs in batches.

A batch task (`wallet.execute_commands`) claims several queued jobs at once and
writes its Celery task id here; if its worker dies, the redelivered task finds
the jobs it had claimed by that id and hands each to its own task. A per-job
task (`wallet.execute_command`) writes the job's id. Jobs with a non-null
`claimed_by` that are queued again (released after conflicts or an error) stay
on the per-job path: batch tasks only take jobs nobody has claimed yet.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("claimed_by", sa.Text()))


def downgrade() -> None:
    op.drop_column("jobs", "claimed_by")
