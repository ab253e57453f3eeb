"""Bulk submissions: `batches`, jobs that belong to one, and atomic batch jobs with one entry per command.

- `batches` records a bulk submission (its size, atomic or not); its status and
  counts are read from its jobs.
- `jobs.batch_id` / `jobs.batch_index`: an independent batch's command is a job
  of its own, at its index in the batch (listed in command order).
- `idempotency_keys` may name a batch instead of a job (exactly one of the two).
- An atomic batch is one job that writes one journal entry per command, so the
  once-only guards become (job, item) for entries and (job, item, account) for
  postings, `item` being the command's index (0 for a single command).
- History rows carry the event's `batch_id` and `metadata`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", UUID(as_uuid=False), primary_key=True),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("atomic", sa.Boolean(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("size BETWEEN 1 AND 1000", name="ck_batches_size_in_range"),
    )
    op.add_column("jobs", sa.Column("batch_id", UUID(as_uuid=False), sa.ForeignKey(
        "batches.id", name="fk_jobs_batch_id_batches")))
    op.add_column("jobs", sa.Column("batch_index", sa.Integer()))
    op.create_index("ix_jobs_batch_id_batch_index", "jobs", ["batch_id", "batch_index"],
                    postgresql_where=sa.text("batch_id IS NOT NULL"))

    op.alter_column("idempotency_keys", "job_id", nullable=True)
    op.add_column("idempotency_keys", sa.Column("batch_id", UUID(as_uuid=False), sa.ForeignKey(
        "batches.id", name="fk_idempotency_keys_batch_id_batches")))
    op.create_check_constraint("ck_idempotency_keys_job_or_batch", "idempotency_keys",
                               "(job_id IS NULL) <> (batch_id IS NULL)")

    op.add_column("journal_entries", sa.Column("item", sa.Integer(), nullable=False, server_default="0"))
    op.drop_constraint("uq_journal_entries_job_id", "journal_entries", type_="unique")
    op.create_unique_constraint("uq_journal_entries_job_id_item", "journal_entries", ["job_id", "item"])
    op.add_column("postings", sa.Column("item", sa.Integer(), nullable=False, server_default="0"))
    op.drop_constraint("uq_postings_job_id_account", "postings", type_="unique")
    op.create_unique_constraint("uq_postings_job_id_item_account", "postings", ["job_id", "item", "account"])

    op.add_column("history_events", sa.Column("batch_id", UUID(as_uuid=False)))
    op.add_column("history_events", sa.Column("metadata", JSONB(), nullable=False,
                                              server_default=sa.text("'{}'::jsonb")))


def downgrade() -> None:
    op.drop_column("history_events", "metadata")
    op.drop_column("history_events", "batch_id")
    op.drop_constraint("uq_postings_job_id_item_account", "postings", type_="unique")
    op.create_unique_constraint("uq_postings_job_id_account", "postings", ["job_id", "account"])
    op.drop_column("postings", "item")
    op.drop_constraint("uq_journal_entries_job_id_item", "journal_entries", type_="unique")
    op.create_unique_constraint("uq_journal_entries_job_id", "journal_entries", ["job_id"])
    op.drop_column("journal_entries", "item")
    op.drop_constraint("ck_idempotency_keys_job_or_batch", "idempotency_keys", type_="check")
    op.execute("DELETE FROM idempotency_keys WHERE job_id IS NULL")
    op.drop_column("idempotency_keys", "batch_id")
    op.alter_column("idempotency_keys", "job_id", nullable=False)
    op.drop_index("ix_jobs_batch_id_batch_index", "jobs")
    op.drop_column("jobs", "batch_index")
    op.drop_column("jobs", "batch_id")
    op.drop_table("batches")
