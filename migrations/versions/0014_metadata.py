"""Metadata: the client's labels on a command, on its job and on what it produced.

`metadata` (a JSON object of string values, `{}` for none) on `jobs` (every
command), `wallets` (set at creation), `journal_entries` (the transaction a
command recorded) and `holds` (the hold a command placed). Events, history rows
and webhooks carry the metadata of the command that caused them.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TABLES = ("jobs", "wallets", "journal_entries", "holds")

# Migration 0010's job outcome event, with the job's metadata (the downgrade puts 0010's back).
_OUTCOME_EVENT = """
CREATE OR REPLACE FUNCTION job_outcome_to_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text := CASE NEW.status WHEN 'succeeded' THEN 'JOB_SUCCEEDED' ELSE 'JOB_FAILED' END;
BEGIN
    INSERT INTO outbox (aggregatetype, aggregateid, type, payload, created_at)
    VALUES ('job', NEW.id::text, kind,
            jsonb_build_object('event_type', kind, 'event_id', NEW.id, 'job_id', NEW.id, 'job_type', NEW.type,
                               'tenant_id', NEW.tenant_id, 'status', NEW.status, 'request_id', NEW.request_id,
                               'batch_id', NEW.batch_id,
                               'occurred_at', to_char(NEW.completed_at AT TIME ZONE 'UTC',
                                                      'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')){metadata},
            now());
    RETURN NULL;
END $$;
"""


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("metadata", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False))
    op.execute(_OUTCOME_EVENT.replace("{metadata}", " || jsonb_build_object('metadata', NEW.metadata)"))


def downgrade() -> None:
    op.execute(_OUTCOME_EVENT.replace("{metadata}", ""))
    for table in TABLES:
        op.drop_column(table, "metadata")
