"""One Celery task per command: jobs lose `claimed_by` (batch claims are gone) and gain the status `canceled`.

Every job is executed by its own task (`wallet.<type>`, task id = job id), so
nothing needs to remember which batch delivery claimed it. A queued job can be
canceled (`POST /jobs/{id}/cancel`): `canceled` is final, like `succeeded` and
`failed`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("jobs", "claimed_by")
    op.drop_constraint("ck_jobs_status_known", "jobs", type_="check")
    op.create_check_constraint("ck_jobs_status_known", "jobs",
                               "status IN ('queued', 'running', 'succeeded', 'failed', 'canceled')")


def downgrade() -> None:
    op.execute("UPDATE jobs SET status = 'failed', error = '{\"code\": \"CANCELED\", \"message\": \"canceled\"}'"
                " WHERE status = 'canceled'")
    op.drop_constraint("ck_jobs_status_known", "jobs", type_="check")
    op.create_check_constraint("ck_jobs_status_known", "jobs", "status IN ('queued', 'running', 'succeeded', 'failed')")
    op.add_column("jobs", sa.Column("claimed_by", sa.Text()))
