"""Wake the relay from a trigger: NOTIFY outbox once per statement that inserts events.

Saves the worker a round trip per command (it used to SELECT pg_notify itself).
NOTIFY is transactional, so the relay still wakes only at commit.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('outbox', '');
            RETURN NULL;
        END $$
    """)
    op.execute("CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()")


def downgrade() -> None:
    op.execute("DROP TRIGGER outbox_notify ON outbox")
    op.execute("DROP FUNCTION outbox_notify()")
