"""Regression (found by make chaos): a Celery worker survives losing its Redis broker while a task is unacked.

Celery 5.7.0 collects the broken connection and then closes it; kombu's redis
channel then tries to restore the unacked task (or, after the reconnect, to ack
a task of the old connection) through the dropped client and raises
AttributeError, and the worker's main process exited "Unrecoverable error". `app.adapters.celery_redis.Transport` (celeryconfig `broker_transport`)
keeps it alive.
"""
from __future__ import annotations

import sys
import time
from decimal import Decimal

import pytest
from celery import Celery
from sqlalchemy import text

from app.adapters.db import engine
from app.domain import commands
from scripts.devstack import EmbeddedServices
from tests.conftest import STATE_DIR, ProcessGroup, wait_for
from tests.helpers import balance, create_wallet, wait_job
from tests.integration.test_exactly_once import entries_for, record_job


@pytest.fixture()
def private_redis():
    """A Redis of this test's own: the session's is shared with the other tests."""
    services = EmbeddedServices(STATE_DIR / "broker-loss", redis_port=None,
                                env={"DATABASE_URL": "unused", "KAFKA_BOOTSTRAP_SERVERS": "unused"})
    yield services, services.start()["REDIS_URL"]
    services.stop()


def _blocked_backend() -> int | None:
    with engine().connect() as conn:
        return conn.execute(text("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                 " AND query LIKE '%UPDATE wallets%'")).scalar()


@pytest.mark.usefixtures("worker", "beat")
def test_a_worker_keeps_running_when_redis_restarts_empty_under_an_unacked_task(stack, client, private_redis):
    services, redis_url = private_redis
    group = ProcessGroup({**stack, "REDIS_URL": redis_url})
    worker = group.start([sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", "commands,maintenance", "-c", "2",
                          "-n", "broker-loss@%h", "--without-mingle", "--without-gossip", "-l", "info"],
                         log_name="worker-broker-loss")
    sender = Celery("broker-loss-test", broker=redis_url)
    try:
        wait_for(lambda: sender.control.ping(timeout=0.5), timeout=30, what="the worker on the private Redis")
        wallet_id = create_wallet(client)
        blocked = record_job(commands.FUND, commands.Fund(wallet_id=wallet_id, amount=Decimal("5.00"), reference=None))
        with engine().connect() as blocker:
            blocker.begin()
            blocker.execute(text("SELECT 1 FROM wallets WHERE id = :id FOR UPDATE"), {"id": wallet_id})
            sender.send_task("wallet.fund", args=[blocked], task_id=blocked, queue="commands")
            wait_for(_blocked_backend, timeout=20, what="the task to block on the wallet row (unacked)")
            services.restart("redis", down_for=1.0)  # SIGKILL; a fresh, empty Redis on the same port
            time.sleep(1.0)
            blocker.rollback()
        time.sleep(3.0)
        assert worker.poll() is None, f"the worker exited ({worker.returncode}) after losing Redis"
        # It reconnected: a task sent to the new Redis runs.
        after = record_job(commands.FUND, commands.Fund(wallet_id=wallet_id, amount=Decimal("1.00"), reference=None))
        sender.send_task("wallet.fund", args=[after], task_id=after, queue="commands")
        assert wait_job(client, after, timeout=30)["status"] == "succeeded"
        # The blocked job ran to its end in the worker (or, were it cut off, the sweeper would re-enqueue it).
        assert wait_job(client, blocked, timeout=30)["status"] == "succeeded"
        assert entries_for(blocked) == 1
        assert balance(client, wallet_id) == "6.00"
    finally:
        sender.close()
        group.stop_all()

