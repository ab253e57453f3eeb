"""Operator commands reach a running `make dev` stack: it writes its URLs to .dev/env, the CLI takes the unset ones."""
import os
import subprocess
import sys
from pathlib import Path

from app.config import DEV_ENV_VARS, settings, use_env_file
from scripts.devstack import write_env_file

REPO = Path(__file__).resolve().parents[2]


def test_the_dev_stack_writes_its_urls_readable_by_its_owner_only(tmp_path):
    env = {"DATABASE_URL": "postgresql+psycopg://postgres@/wallet?host=/x", "REDIS_URL": "redis://127.0.0.1:16379/0",
           "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092", "KAFKA_TOPIC": "wallet-events", "KAFKA_GROUP_ID": "g",
           "WALLET_API_KEYS": "secret:dev:admin"}
    path = write_env_file(tmp_path, env)
    lines = path.read_text().splitlines()
    assert lines == [f"{k}={env[k]}" for k in DEV_ENV_VARS]  # URLs only: no key leaves the environment
    assert path.stat().st_mode & 0o777 == 0o600


def test_unset_variables_are_taken_and_set_ones_win(tmp_path, monkeypatch):
    path = tmp_path / "env"
    path.write_text("DATABASE_URL=postgresql+psycopg://from-file/wallet\nREDIS_URL=redis://from-file/0\n"
                    "WALLET_API_KEYS=ignored:x:admin\nnot a line\n")
    # Empty counts as unset; unlike delenv of an unset variable, setenv puts back what use_env_file takes.
    monkeypatch.setenv("DATABASE_URL", "")
    monkeypatch.setenv("REDIS_URL", "redis://mine/1")
    monkeypatch.delenv("WALLET_API_KEYS", raising=False)
    try:
        assert use_env_file(str(path)) == ["DATABASE_URL"]
        assert os.environ["DATABASE_URL"] == "postgresql+psycopg://from-file/wallet"
        assert os.environ["REDIS_URL"] == "redis://mine/1"
        assert "WALLET_API_KEYS" not in os.environ
        assert settings().database_url == "postgresql+psycopg://from-file/wallet"
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    assert use_env_file(str(tmp_path / "missing")) == []


def test_the_cli_uses_the_file_named_by_wallet_dev_env(tmp_path):
    (tmp_path / "env").write_text("DATABASE_URL=postgresql+psycopg://nobody@127.0.0.1:1/none\n")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["WALLET_DEV_ENV"] = str(tmp_path / "env")
    proc = subprocess.run([sys.executable, "-m", "app.cli", "jobs", "show", "00000000-0000-0000-0000-000000000000"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    # It aimed at the file's database (refused on port 1), not at the default one.
    assert proc.returncode != 0 and "127.0.0.1" in proc.stderr and "port 1" in proc.stderr, proc.stderr[-2000:]


def test_the_operator_cli_says_the_database_is_unreachable_without_a_traceback():
    import subprocess
    import sys

    env = {**os.environ, "WALLET_DEV_ENV": "/nonexistent", "DATABASE_URL": "postgresql+psycopg://u@127.0.0.1:1/x"}
    result = subprocess.run([sys.executable, "-m", "app.cli", "audit", "run", "--no-record"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr and "Traceback" not in result.stderr
