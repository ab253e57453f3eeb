"""A job's effect applies exactly once: duplicate deliveries, killed workers, lost tasks."""
import os
import signal
import threading
import time
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text

from app.adapters.db import engine
from app.domain import commands
from app.services import executor, maintenance, submission
from app.services.audit import run_audit
from tests.conftest import wait_for
from tests.helpers import balance, create_wallet, wait_job


def record_job(command_type: str, command) -> str:
    """A durable job that no task was sent for (as if the publish was lost)."""
    accepted = submission.record_job(command_type, command, "tenant-a", f"test-{uuid.uuid4()}", None, None)
    return str(accepted.job["id"])


def entries_for(job_id: str) -> int:
    with engine().connect() as conn:
        return conn.execute(text("SELECT count(*) FROM journal_entries WHERE job_id = :id"), {"id": job_id}).scalar()


def job_row(job_id: str) -> dict:
    with engine().connect() as conn:
        return dict(conn.execute(text("SELECT * FROM jobs WHERE id = :id"), {"id": job_id}).mappings().one())


@pytest.mark.usefixtures("worker")
def test_running_the_same_job_twice_applies_it_once(client):
    wallet_id = create_wallet(client)
    job_id = record_job(commands.FUND, commands.Fund(wallet_id, Decimal("7.00")))
    assert executor.execute_job(job_id).status == "succeeded"
    assert executor.execute_job(job_id).status == "already_final"
    assert entries_for(job_id) == 1
    assert balance(client, wallet_id) == "7.00"
    assert job_row(job_id)["attempts"] == 1


@pytest.mark.usefixtures("worker")
def test_concurrent_duplicate_deliveries_apply_once(client, monkeypatch):
    from app.config import settings

    # A claim that finds its job running counts a lost delivery (a worker that died); three deliveries at once
    # of one contended job can count three and fail it ATTEMPTS_EXHAUSTED. That heuristic is not under test here.
    monkeypatch.setenv("MAX_LOST_DELIVERIES", "1000")
    settings.cache_clear()
    wallet_id = create_wallet(client)
    job_ids = [record_job(commands.FUND, commands.Fund(wallet_id, Decimal("1.00"))) for _ in range(10)]
    outcomes = []

    def deliver(job_id):
        # 30 deliveries on one wallet at once: a try still contended after the in-task retries goes back to
        # queued and its task is retried by Celery, as here.
        while True:
            try:
                outcomes.append(executor.execute_job(job_id).status)
                return
            except executor.StillContended:
                continue

    threads = [threading.Thread(target=deliver, args=(j,)) for j in job_ids for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("succeeded") == 10
    assert all(entries_for(j) == 1 for j in job_ids)
    assert balance(client, wallet_id) == "10.00"
    assert run_audit().ok
    monkeypatch.undo()
    settings.cache_clear()


@pytest.mark.usefixtures("worker")
def test_a_task_sent_twice_to_the_workers_applies_once(client):
    from app.adapters import command_queue

    wallet_id = create_wallet(client)
    job_id = record_job(commands.FUND, commands.Fund(wallet_id, Decimal("4.00")))
    command_queue.enqueue(job_id, commands.FUND)
    command_queue.enqueue(job_id, commands.FUND)
    assert wait_job(client, job_id)["status"] == "succeeded"
    time.sleep(0.5)  # let the second delivery run too
    assert entries_for(job_id) == 1
    assert balance(client, wallet_id) == "4.00"


@pytest.mark.usefixtures("worker")
def test_the_sweeper_reenqueues_a_job_whose_task_was_lost(client):
    wallet_id = create_wallet(client)
    job_id = record_job(commands.FUND, commands.Fund(wallet_id, Decimal("3.00")))
    with engine().begin() as conn:
        conn.execute(text("UPDATE jobs SET enqueued_at = now() - interval '1 hour' WHERE id = :id"), {"id": job_id})
    assert job_id in maintenance.requeue_stranded_jobs()
    assert wait_job(client, job_id)["status"] == "succeeded"
    assert balance(client, wallet_id) == "3.00"


def test_a_job_released_for_a_celery_retry_is_not_stranded_until_the_retry_could_have_come(client):
    """A second task beside the pending retry would make one claim count a lost delivery that never was."""
    from app.adapters.db import autocommit
    from app.adapters.store import WalletStore

    wallet_id = create_wallet(client)
    job_id = record_job(commands.FUND, commands.Fund(wallet_id, Decimal("1.00")))
    with engine().begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'running', enqueued_at = now() - interval '1 hour' WHERE id = :id"),
                     {"id": job_id})
    with autocommit() as conn:
        WalletStore(conn).release_job(job_id)
    assert job_id not in maintenance.requeue_stranded_jobs()  # its retry is due within 30 s
    with engine().begin() as conn:  # the retry never came (its message was lost): stranded now
        conn.execute(text("UPDATE jobs SET enqueued_at = now() - interval '1 minute' WHERE id = :id"), {"id": job_id})
    assert job_id in maintenance.requeue_stranded_jobs()


@pytest.mark.usefixtures("worker")
def test_a_worker_killed_mid_task_leaves_the_job_to_finish_exactly_once(client):
    """SIGKILL the pool process while its command's statement waits on a row lock we hold.

    The statement is autocommit: the dead worker's PostgreSQL backend still runs
    it once the lock is free, while the redelivered task runs the job again.
    Exactly one of them may apply it.
    """
    wallet_id = create_wallet(client)
    with engine().connect() as blocker:
        blocker.begin()
        blocker.execute(text("SELECT 1 FROM wallets WHERE id = :id FOR UPDATE"), {"id": wallet_id})
        job_id = client.post(f"/wallets/{wallet_id}/fund", json={"amount": "9.00"}).get_json()["id"]

        def blocked_worker_pid():
            with engine().connect() as conn:
                name = conn.execute(text(
                    "SELECT application_name FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%UPDATE wallets%'")).scalar()
            return int(name.rsplit(":", 1)[1]) if name else None

        victim = wait_for(blocked_worker_pid, timeout=20, what="a worker to block on the wallet row")
        assert victim != os.getpid()
        os.kill(victim, signal.SIGKILL)
        # The redelivery claims the job (counting the lost delivery) and queues behind the orphaned statement.
        wait_for(lambda: job_row(job_id)["lost_deliveries"] == 1, timeout=30, what="the job to be redelivered")
        blocker.rollback()
    job = wait_job(client, job_id, timeout=60)
    assert job["status"] == "succeeded"
    assert job["attempts"] >= 2
    assert entries_for(job_id) == 1
    assert balance(client, wallet_id) == "9.00"
    assert job_row(job_id)["lost_deliveries"] == 1


def test_a_command_that_keeps_killing_its_worker_fails_attempts_exhausted(stack):
    job_id = record_job(commands.CREATE_WALLET, commands.CreateWallet(str(uuid.uuid4()), "poison", "USD"))
    with engine().begin() as conn:  # three deliveries that each died while running
        conn.execute(text("UPDATE jobs SET status = 'running', lost_deliveries = 3 WHERE id = :id"), {"id": job_id})
    assert executor.execute_job(job_id).status == "failed"
    row = job_row(job_id)
    assert row["status"] == "failed" and row["error"]["code"] == "ATTEMPTS_EXHAUSTED"


def test_conflicts_beyond_the_in_task_budget_requeue_the_job_instead_of_failing_it(stack, monkeypatch):
    from app.config import settings

    monkeypatch.setenv("CONFLICT_RETRIES_IN_TASK", "0")
    settings.cache_clear()
    try:
        job_id = record_job(commands.CREATE_WALLET, commands.CreateWallet(str(uuid.uuid4()), "u", "USD"))

        def always_conflicts(*_args):
            from app.domain.errors import ConcurrencyConflict

            raise ConcurrencyConflict("simulated")

        monkeypatch.setitem(executor.HANDLERS, commands.CREATE_WALLET, always_conflicts)
        with pytest.raises(executor.StillContended):
            executor.execute_job(job_id)
        row = job_row(job_id)
        assert row["status"] == "queued" and row["attempts"] == 2
    finally:
        monkeypatch.undo()
        settings.cache_clear()
