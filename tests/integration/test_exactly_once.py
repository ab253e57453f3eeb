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


def record_job(command_type: str, command, *, claimed: bool = True) -> str:
    """A durable job that no task was sent for (as if the publish was lost).

    claimed: on the per-job path (claimed_by = its id), so batch tasks woken by
    other tests leave it to the test; unclaimed jobs are what batch tasks take.
    """
    accepted = submission.record_job(command_type, command, "tenant-a", f"test-{uuid.uuid4()}", None, None)
    job_id = str(accepted.job["id"])
    if claimed:
        with engine().begin() as conn:
            conn.execute(text("UPDATE jobs SET claimed_by = id::text WHERE id = :id"), {"id": job_id})
    return job_id


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
def test_concurrent_duplicate_deliveries_apply_once(client):
    wallet_id = create_wallet(client)
    job_ids = [record_job(commands.FUND, commands.Fund(wallet_id, Decimal("1.00"))) for _ in range(10)]
    outcomes = []

    def deliver(job_id):
        outcomes.append(executor.execute_job(job_id).status)

    threads = [threading.Thread(target=deliver, args=(j,)) for j in job_ids for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("succeeded") == 10
    assert all(entries_for(j) == 1 for j in job_ids)
    assert balance(client, wallet_id) == "10.00"
    assert run_audit().ok


@pytest.mark.usefixtures("worker")
def test_a_task_sent_twice_to_the_workers_applies_once(client):
    from app.adapters import command_queue

    wallet_id = create_wallet(client)
    job_id = record_job(commands.FUND, commands.Fund(wallet_id, Decimal("4.00")))
    command_queue.enqueue(job_id)
    command_queue.enqueue(job_id)
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
        with pytest.raises(executor.RetryLater):
            executor.execute_job(job_id)
        row = job_row(job_id)
        assert row["status"] == "queued" and row["attempts"] == 2
    finally:
        monkeypatch.undo()
        settings.cache_clear()


def test_a_batch_task_claims_queued_jobs_and_runs_each_once(stack):
    wallet_id = str(uuid.uuid4())
    create = record_job(commands.CREATE_WALLET, commands.CreateWallet(wallet_id, "batch", "USD"), claimed=False)
    funds = [record_job(commands.FUND, commands.Fund(wallet_id, Decimal("1.25")), claimed=False) for _ in range(7)]
    delivery = f"batch-{uuid.uuid4()}"
    outcome = executor.execute_queued_jobs(delivery, batch_size=3, budget=1000, budget_s=10)
    assert outcome.ran >= 8 and not outcome.more
    for job_id in [create, *funds]:
        row = job_row(job_id)
        assert (row["status"], row["attempts"], row["claimed_by"]) == ("succeeded", 1, delivery)
        assert entries_for(job_id) == (1 if job_id in funds else 0)
    with engine().connect() as conn:
        assert conn.execute(text("SELECT balance FROM wallets WHERE id = :id"), {"id": wallet_id}).scalar() \
            == Decimal("8.75")
    assert executor.execute_queued_jobs(delivery, batch_size=3, budget=1000, budget_s=10).ran == 0


@pytest.mark.parametrize("budget_s", [30.0, 0.2], ids=["within-budget", "linger-past-the-deadline"])
def test_a_lingering_batch_task_runs_the_jobs_accepted_meanwhile_without_a_task_of_their_own(
        stack, monkeypatch, budget_s):
    """After an empty claim the batch task holds the wake flag and claims once more: a job accepted
    meanwhile publishes no Celery message and still runs (also when the linger ends past the task's
    time budget); then the flag is clear, so the next command wakes a new task."""
    from app.adapters import command_queue, redis_client

    published = []
    monkeypatch.setattr(command_queue, "_send", lambda name, **options: published.append(name) or True)
    redis_client.client().delete(command_queue.WAKE_FLAG)
    delivery = f"batch-{uuid.uuid4()}"
    outcome = {}
    task = threading.Thread(target=lambda: outcome.update(done=executor.execute_queued_jobs(
        delivery, batch_size=10, budget=1000, budget_s=budget_s, linger_s=1.0)))
    task.start()
    try:
        wait_for(lambda: redis_client.client().exists(command_queue.WAKE_FLAG), timeout=10,
                 what="the batch task to linger with the wake flag")
        wallet_id = str(uuid.uuid4())
        job_id = record_job(commands.CREATE_WALLET, commands.CreateWallet(wallet_id, "linger", "USD"), claimed=False)
        assert command_queue.wake() is True  # as the API does after its commit
        assert published == []  # the lingering task will claim it: no message
    finally:
        task.join(30)
    assert outcome["done"].ran >= 1
    row = job_row(job_id)
    assert (row["status"], row["claimed_by"]) == ("succeeded", delivery)
    # It left (after a second empty claim, or at its deadline) with the flag cleared: the next command,
    # or the task's own wake-up when it stopped at its budget, publishes a new task.
    assert not redis_client.client().exists(command_queue.WAKE_FLAG)
    assert command_queue.wake() is True and published == [command_queue.EXECUTE_COMMANDS]
    redis_client.client().delete(command_queue.WAKE_FLAG)


def test_a_batch_task_that_finds_the_flag_taken_leaves_at_once(stack, monkeypatch):
    """Another batch task holds the flag, so it will claim: this one does not linger beside it."""
    from app.adapters import command_queue

    monkeypatch.setattr(command_queue, "take_wake", lambda: False)
    started = time.monotonic()
    executor.execute_queued_jobs(f"batch-{uuid.uuid4()}", batch_size=10, budget=1000, budget_s=30, linger_s=5.0)
    assert time.monotonic() - started < 4.0


def test_a_redelivered_batch_task_hands_the_jobs_it_had_claimed_to_their_own_tasks(stack, monkeypatch):
    """The worker died mid-batch: its claimed jobs are running; the next delivery must not run them in a batch."""
    from app.adapters import command_queue

    wallet_id = str(uuid.uuid4())
    job_id = record_job(commands.CREATE_WALLET, commands.CreateWallet(wallet_id, "orphan", "USD"), claimed=False)
    delivery = f"batch-{uuid.uuid4()}"
    with engine().begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'running', attempts = 1, claimed_by = :d WHERE id = :id"),
                     {"d": delivery, "id": job_id})
    enqueued = []
    monkeypatch.setattr(command_queue, "enqueue", lambda jid, countdown=None: enqueued.append(jid) or True)
    outcome = executor.execute_queued_jobs(delivery, batch_size=10, budget=0, budget_s=10)
    assert outcome.handed_off == 1 and enqueued == [job_id]
    row = job_row(job_id)
    assert (row["status"], row["claimed_by"]) == ("running", job_id)
    # Its own task counts the lost delivery and applies it once.
    assert executor.execute_job(job_id).status == "succeeded"
    row = job_row(job_id)
    assert (row["status"], row["lost_deliveries"], row["attempts"]) == ("succeeded", 1, 2)


def test_a_job_still_contended_after_its_batch_try_goes_to_its_own_task(stack, monkeypatch):
    from app.adapters import command_queue
    from app.config import settings

    monkeypatch.setenv("CONFLICT_RETRIES_IN_TASK", "0")
    settings.cache_clear()
    enqueued = []
    try:
        job_id = record_job(commands.CREATE_WALLET, commands.CreateWallet(str(uuid.uuid4()), "u", "USD"),
                            claimed=False)

        def always_conflicts(*_args):
            from app.domain.errors import ConcurrencyConflict

            raise ConcurrencyConflict("simulated")

        monkeypatch.setitem(executor.HANDLERS, commands.CREATE_WALLET, always_conflicts)
        monkeypatch.setattr(command_queue, "enqueue", lambda jid, countdown=None: enqueued.append((jid, countdown)))
        delivery = f"batch-{uuid.uuid4()}"
        executor.execute_queued_jobs(delivery, batch_size=10, budget=1000, budget_s=10)
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    assert [jid for jid, _ in enqueued] == [job_id] and enqueued[0][1] > 0
    row = job_row(job_id)
    assert (row["status"], row["claimed_by"]) == ("queued", delivery)  # batch tasks leave it to its own task
    assert executor.execute_queued_jobs(f"batch-{uuid.uuid4()}", batch_size=10, budget=1000, budget_s=10).ran == 0
    assert executor.execute_job(job_id).status == "succeeded"
