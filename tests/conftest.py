"""Shared fixtures: real PostgreSQL, Redis, Kafka and Celery workers.

Services come from DATABASE_URL / REDIS_URL / KAFKA_BOOTSTRAP_SERVERS when set,
else embedded ones are started (scripts/devstack.py). Each test session gets
its own freshly migrated database and Redis database, so a run never touches
development data.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STATE_DIR = REPO / ".dev" / "test"

# API keys the test session seeds through WALLET_API_KEYS: token -> (tenant, scopes).
TENANT_A_KEY = "test-key-tenant-a"
TEST_KEYS = {
    TENANT_A_KEY: ("tenant-a", "read|write"),
    "test-key-tenant-b": ("tenant-b", "read|write"),
    "test-key-read-only": ("tenant-a", "read"),
    "test-key-write-only": ("tenant-a", "write"),
    "test-key-admin": ("ops", "admin"),
}


def api_client(app, token: str | None = TENANT_A_KEY):
    """A Flask test client that sends `Authorization: Bearer <token>` on every request."""
    client = app.test_client()
    if token is not None:
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def _fresh_database(base_url: str) -> str:
    """Create an empty database next to the one in base_url; return its URL."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    url = make_url(base_url)
    name = f"wallet_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def _drop_database(url_text: str) -> None:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    url = make_url(url_text)
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def stack():
    """Environment of a ready stack: services up, database migrated, Redis db flushed."""
    from scripts.devstack import EmbeddedServices

    services = EmbeddedServices(STATE_DIR)
    env = services.start()
    base_url = env["DATABASE_URL"]
    database_url = _fresh_database(base_url)
    test_env = {
        **env,
        "DATABASE_URL": database_url,
        "REDIS_URL": env["REDIS_URL"].rsplit("/", 1)[0] + "/13",
        "KAFKA_TOPIC": f"wallet-events-test-{uuid.uuid4().hex[:6]}",
        "KAFKA_GROUP_ID": f"history-test-{uuid.uuid4().hex[:6]}",
        "REQUEUE_QUEUED_AFTER_S": "5",
        "REQUEUE_RUNNING_AFTER_S": "5",
        "WEBHOOK_ALLOW_PRIVATE_URLS": "1",  # the tests' webhook receivers listen on 127.0.0.1
        "WALLET_API_KEYS": ",".join(f"{token}:{tenant}:{scopes}" for token, (tenant, scopes) in TEST_KEYS.items()),
    }
    os.environ.update(test_env)
    from app.config import settings

    settings.cache_clear()
    import redis

    redis.Redis.from_url(test_env["REDIS_URL"]).flushdb()
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, env=os.environ, check=True,
                   capture_output=True)
    yield test_env
    from app.adapters.db import dispose_engine

    dispose_engine()
    _drop_database(database_url)
    services.stop()


class ProcessGroup:
    """Subprocesses of the system under test (workers, APIs), stopped at teardown."""

    def __init__(self, env: dict):
        self.env = {**os.environ, **env}
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], log_name: str, **extra_env) -> subprocess.Popen:
        log = open(STATE_DIR / f"{log_name}.log", "ab")
        proc = subprocess.Popen(args, cwd=REPO, env={**self.env, **extra_env}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig=None) -> None:
        import signal

        if proc.poll() is None:
            os.killpg(proc.pid, sig or signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def start_worker(group: ProcessGroup, name: str, concurrency: int = 4) -> subprocess.Popen:
    """A real Celery worker; returns once it consumes tasks."""
    import redis

    proc = group.start([sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", "commands,maintenance",
                        "-c", str(concurrency), "-n", f"{name}@%h", "-l", "info", "--without-mingle",
                        "--without-gossip"], log_name=name)
    wait_for(lambda: _worker_ready(name), timeout=30, what=f"worker {name} to start")
    redis.Redis.from_url(group.env["REDIS_URL"])  # broker reachable
    return proc


def _worker_ready(name: str) -> bool:
    from tasks import celery_app

    replies = celery_app.control.ping(timeout=0.5) or []
    return any(name in host for reply in replies for host in reply)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="session")
def processes(stack):
    group = ProcessGroup(stack)
    yield group
    group.stop_all()


@pytest.fixture(scope="session")
def worker(processes):
    """One Celery worker with 4 processes, shared by the session."""
    return start_worker(processes, "worker-main", concurrency=4)


@pytest.fixture(scope="session")
def wallet_app(stack):
    from app.api import create_app

    return create_app({"TESTING": True})


@pytest.fixture()
def client(wallet_app):
    """A Wallet API client with tenant A's read|write key."""
    return api_client(wallet_app)


@pytest.fixture(scope="session")
def beat(processes):
    """Celery beat: the sweeper, hold expiry and the other periodic tasks."""
    proc = processes.start([sys.executable, "-m", "celery", "-A", "tasks", "beat", "-l", "info",
                            "--schedule", str(STATE_DIR / f"beat-{uuid.uuid4().hex[:6]}")], log_name="beat")
    yield proc
    processes.stop(proc)
