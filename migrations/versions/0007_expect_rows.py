"""`expect_rows(actual, expected, sqlstate, message)`: abort a statement that changed the wrong number of rows.

A command's writes go to PostgreSQL as one statement (data-modifying CTEs).
Its optimistic checks (a wallet still at the version read, the job still
running) are row counts inside that statement; this function turns a wrong
count into an error, so the whole statement, and its transaction, rolls back
and nothing of the command is applied. `40001` (serialization_failure) marks
an optimistic-lock conflict, to be retried.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION expect_rows(actual bigint, expected bigint, sqlstate text, message text)
        RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN
            IF actual IS DISTINCT FROM expected THEN
                RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message;
            END IF;
            RETURN true;
        END $$
    """)


def downgrade() -> None:
    op.execute("DROP FUNCTION expect_rows(bigint, bigint, text, text)")
