"""Operator commands: the ledger audit finds corruption; API keys are created, listed, revoked."""
import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

from tests.conftest import REPO, _drop_database, _fresh_database


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=60)


@pytest.fixture()
def scratch_database(stack):
    """A separate migrated database that a test may corrupt."""
    url = _fresh_database(stack["DATABASE_URL"])
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO,
                   env={**os.environ, "DATABASE_URL": url}, check=True, capture_output=True)
    yield url
    _drop_database(url)


def test_the_audit_reports_every_broken_invariant_and_exits_non_zero(scratch_database):
    env = {"DATABASE_URL": scratch_database}
    assert cli("audit", "run", env=env).returncode == 0
    engine = sa.create_engine(scratch_database)
    with engine.begin() as conn:  # a wallet whose balance no posting explains, and a closed one with money
        conn.execute(sa.text("INSERT INTO wallets (id, tenant_id, user_id, currency, balance, status) VALUES "
                             "(:a, 't', 'u', 'USD', 5, 'active'), (:b, 't', 'u', 'USD', 1, 'closed')"),
                     {"a": str(uuid.uuid4()), "b": str(uuid.uuid4())})
    engine.dispose()
    result = cli("audit", "run", env=env)
    assert result.returncode == 1
    assert "FAIL  wallet balance equals its postings" in result.stdout
    assert "FAIL  closed wallets are empty" in result.stdout
    assert "ledger audit FAILED" in result.stdout
    last = cli("audit", "last", env=env)
    assert last.returncode == 1 and "FAILED" in last.stdout


def test_keys_are_created_listed_and_revoked_from_the_cli(stack, wallet_app):
    from tests.conftest import api_client

    created = cli("keys", "create", "--tenant", "cli-tenant", "--scope", "read", "--name", "from the cli")
    assert created.returncode == 0, created.stderr
    fields = dict(line.split(None, 1) for line in created.stdout.splitlines())
    token = fields["token"]
    client = api_client(wallet_app, token)
    assert client.get(f"/jobs/{uuid.uuid4()}").status_code == 404
    listed = cli("keys", "list").stdout
    assert fields["id"] in listed and token not in listed
    assert cli("keys", "revoke", fields["id"]).returncode == 0
    assert client.get(f"/jobs/{uuid.uuid4()}").status_code == 401
