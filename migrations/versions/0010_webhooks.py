"""Webhooks: endpoints, deliveries and attempts; a job's outcome becomes an outbox event.

- `webhook_endpoints` (per tenant, with the signing secret and, during a
  rotation, the previous one), `webhook_deliveries` (one per notification and
  endpoint, updated at each attempt) and `webhook_attempts` (every attempt).
- A trigger adds a JOB_SUCCEEDED / JOB_FAILED row to the outbox when a job
  becomes final, in the transaction that makes it final, whichever code path
  did it (a command, a batch chunk, the sweeper's ATTEMPTS_EXHAUSTED). The
  relay publishes it to Kafka like every event (key = the job id); the webhook
  dispatcher turns it into `job.succeeded` / `job.failed` notifications.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JOB_OUTCOME_TO_OUTBOX = """
CREATE FUNCTION job_outcome_to_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text := CASE NEW.status WHEN 'succeeded' THEN 'JOB_SUCCEEDED' ELSE 'JOB_FAILED' END;
BEGIN
    INSERT INTO outbox (aggregatetype, aggregateid, type, payload, created_at)
    VALUES ('job', NEW.id::text, kind,
            jsonb_build_object('event_type', kind, 'event_id', NEW.id, 'job_id', NEW.id, 'job_type', NEW.type,
                               'tenant_id', NEW.tenant_id, 'status', NEW.status, 'request_id', NEW.request_id,
                               'batch_id', NEW.batch_id,
                               'occurred_at', to_char(NEW.completed_at AT TIME ZONE 'UTC',
                                                      'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
            now());
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_outcome_to_outbox AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION job_outcome_to_outbox();
"""

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('webhook_endpoints',
    sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
    sa.Column('tenant_id', sa.Text(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('events', postgresql.ARRAY(sa.Text()), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('status', sa.Text(), server_default='enabled', nullable=False),
    sa.Column('secret', sa.Text(), nullable=False),
    sa.Column('previous_secret', sa.Text(), nullable=True),
    sa.Column('previous_secret_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('enabled', 'disabled')", name=op.f('ck_webhook_endpoints_status_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_endpoints'))
    )
    op.create_index(op.f('ix_webhook_endpoints_tenant_id_created_at'), 'webhook_endpoints', ['tenant_id', 'created_at'], unique=False)
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.UUID(as_uuid=False), nullable=False),
    sa.Column('endpoint_id', sa.UUID(as_uuid=False), nullable=False),
    sa.Column('tenant_id', sa.Text(), nullable=False),
    sa.Column('webhook_id', sa.Text(), nullable=False),
    sa.Column('event_type', sa.Text(), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('status', sa.Text(), server_default='pending', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('enqueued_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name=op.f('ck_webhook_deliveries_status_known')),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id'], name=op.f('fk_webhook_deliveries_endpoint_id_webhook_endpoints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
    sa.UniqueConstraint('endpoint_id', 'webhook_id', name=op.f('uq_webhook_deliveries_endpoint_id_webhook_id'))
    )
    op.create_index('ix_webhook_deliveries_leased', 'webhook_deliveries', ['endpoint_id'], unique=False,
                    postgresql_where=sa.text("lease_until IS NOT NULL"))
    op.create_index('ix_webhook_deliveries_due', 'webhook_deliveries', ['next_attempt_at'], unique=False, postgresql_where=sa.text("status = 'pending'"))
    op.create_index(op.f('ix_webhook_deliveries_endpoint_id_created_at_id'), 'webhook_deliveries', ['endpoint_id', 'created_at', 'id'], unique=False)
    op.create_table('webhook_attempts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('delivery_id', sa.UUID(as_uuid=False), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['delivery_id'], ['webhook_deliveries.id'], name=op.f('fk_webhook_attempts_delivery_id_webhook_deliveries'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_attempts')),
    sa.UniqueConstraint('delivery_id', 'attempt', name=op.f('uq_webhook_attempts_delivery_id_attempt'))
    )
    op.execute(JOB_OUTCOME_TO_OUTBOX)


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_outcome_to_outbox ON jobs")
    op.execute("DROP FUNCTION job_outcome_to_outbox()")
    op.drop_table('webhook_attempts')
    op.drop_index(op.f('ix_webhook_deliveries_endpoint_id_created_at_id'), table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_due', table_name='webhook_deliveries', postgresql_where=sa.text("status = 'pending'"))
    op.drop_table('webhook_deliveries')
    op.drop_index(op.f('ix_webhook_endpoints_tenant_id_created_at'), table_name='webhook_endpoints')
    op.drop_table('webhook_endpoints')
