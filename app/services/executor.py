"""Executes a job exactly once, however often it is claimed or its task delivered.

A short transaction claims the job (status running, attempts + 1): one job by
its own task (`execute_job`), or several queued jobs at once by a batch task
(`execute_queued_jobs`). Each command then runs in its own transaction that
changes balances, writes journal and outbox rows and makes the job final; it
only commits if the job was still running, so a second delivery can never
apply it again. Optimistic-lock conflicts roll the attempt back and retry here
with jittered backoff; business rejections end the job failed; anything else
is left to the job's own task and its retries.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from app.adapters import command_queue
from app.adapters.db import autocommit, engine
from app.adapters.store import ClaimedJob, WalletSnapshot, WalletStore
from app.config import settings
from app.domain import commands
from app.domain.errors import AttemptsExhausted, BusinessRuleViolation, ConcurrencyConflict
from app.observability import logs, metrics
from app.services.handlers import HANDLERS, ONE_STATEMENT, wallets_named

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """The job could not finish in this delivery; run the task again later."""

    def __init__(self, reason: str, countdown: float):
        super().__init__(reason)
        self.countdown = countdown


class _AlreadyFinal(Exception):
    """Another delivery made the job final first; this attempt must roll back."""


@dataclass(frozen=True)
class Outcome:
    job_id: str
    status: str  # succeeded, failed, or already_final
    conflicts: int = 0


def _backoff_seconds(attempt: int) -> float:
    """Full-jitter exponential backoff, in seconds."""
    s = settings()
    cap = min(s.conflict_backoff_cap_ms, s.conflict_backoff_base_ms * (2 ** attempt))
    return random.uniform(0, cap) / 1000.0


def execute_job(job_id: str) -> Outcome:
    """Apply a job's command once; raises RetryLater when it must run again."""
    with autocommit() as conn:
        job = WalletStore(conn).claim_job(job_id)
    if job is None:
        return Outcome(job_id, "already_final")
    return _run(job)


@dataclass(frozen=True)
class BatchOutcome:
    ran: int  # jobs claimed and run (whatever their outcome)
    handed_off: int  # jobs given to their own task: orphans of a dead delivery, retries
    more: bool  # stopped at the budget with jobs still queued


def execute_queued_jobs(delivery_id: str, *, batch_size: int, budget: int, budget_s: float,
                        linger_s: float = 0.0) -> BatchOutcome:
    """Claim queued jobs in batches and run each in its own transaction, up to `budget` jobs or seconds.

    `delivery_id` is the batch task's id: what it claimed is marked with it, so
    if this worker dies, the task's next delivery hands those jobs to their own
    tasks (which count the lost delivery). A job that needs another try (still
    contended, or an unexpected error) goes to its own task with a delay.

    When a claim finds nothing, the task lingers: it takes the wake flag, waits
    `linger_s` and claims again, and leaves only after a second empty claim in
    a row. Commands accepted while it waits see the flag and publish no task,
    so at a steady moderate rate one Celery message serves many jobs instead of
    one or two (each message costs more CPU than running a transfer). If
    another batch task holds the flag, that one will claim: this one leaves.
    """
    with autocommit() as conn:
        orphans = WalletStore(conn).hand_off_orphans(delivery_id)
    for job_id in orphans:
        command_queue.enqueue(job_id)
    if orphans:
        log.warning("handed %d jobs of a lost delivery to their own tasks", len(orphans))
    ran, handed_off = 0, len(orphans)
    deadline = time.monotonic() + budget_s
    lingered = False
    # A lingering task always claims once more, past its deadline too: it holds the wake flag, so the
    # commands accepted meanwhile published no task and only that claim will see them.
    while lingered or (ran < budget and time.monotonic() < deadline):
        command_queue.clear_wake()  # before the claim: a job committed after this wakes another batch task
        snapshot = WalletSnapshot()  # the claimed jobs' wallets, read once for the batch
        with autocommit() as conn:
            store = WalletStore(conn, snapshot=snapshot)
            jobs = store.claim_batch(delivery_id, min(batch_size, budget - ran))
            if jobs:
                store.load_wallets(sorted({w for job in jobs for w in wallets_named(job.payload)}))
        if not jobs:
            if lingered or linger_s <= 0 or not command_queue.take_wake():
                return BatchOutcome(ran, handed_off, more=False)
            lingered = True  # the flag is ours: jobs committed from now on are left to our next claim
            time.sleep(linger_s)
            continue
        lingered = False
        for job in jobs:
            ran += 1
            logs.job_id_var.set(job.id)
            try:
                _run(job, snapshot)
            except RetryLater as later:  # already released to queued
                command_queue.enqueue(job.id, countdown=later.countdown)
                handed_off += 1
            except Exception:  # noqa: BLE001 - a fault or a bug: the job's own task retries it with backoff
                log.warning("job %s raised; handing it to its own task", job.id, exc_info=True,
                            extra={"job_id": job.id})
                release(job.id)  # if the database is away this raises: the batch task retries, orphans go on
                command_queue.enqueue(job.id, countdown=0.5)
                handed_off += 1
            finally:
                logs.job_id_var.set(None)
                logs.request_id_var.set(None)
    return BatchOutcome(ran, handed_off, more=True)


def _run(job: ClaimedJob, snapshot: WalletSnapshot | None = None) -> Outcome:
    """Apply a claimed job's command once; raises RetryLater when it must run again.

    Fund, withdraw and transfer are one statement in autocommit (no BEGIN or
    COMMIT); the other commands run in a transaction. `snapshot` holds wallets
    already read for the batch: a stale one only costs a conflict and a re-read.
    """
    s = settings()
    job_id = job.id
    logs.request_id_var.set(job.request_id)
    if job.lost_deliveries >= s.max_lost_deliveries:
        error = AttemptsExhausted(f"the worker running this command was lost {job.lost_deliveries} times")
        return _fail(job, error, conflicts=0)

    handler = HANDLERS[job.type]
    command = commands.from_payload(job.type, job.payload)
    one_statement = job.type in ONE_STATEMENT
    snapshot = snapshot or WalletSnapshot()
    conflicts = 0
    for attempt in range(s.conflict_retries_in_task + 1):
        store = None
        try:
            with autocommit() if one_statement else engine().begin() as conn:
                store = WalletStore(conn, one_statement=one_statement, snapshot=snapshot)
                result = handler(store, job, command)
                seconds = store.finish_job(job_id, status="succeeded", result=result, extra_attempts=conflicts)
                if seconds is None:
                    raise _AlreadyFinal()
            snapshot.remember(store.saved_wallets)  # committed: the batch's next command may start from here
            _report(job, "succeeded", None, seconds, conflicts)
            return Outcome(job_id, "succeeded", conflicts)
        except ConcurrencyConflict:
            if store is not None:
                snapshot.forget(store.saved_wallets)  # read them afresh on the retry
            conflicts += 1
            time.sleep(_backoff_seconds(attempt))
        except BusinessRuleViolation as error:
            return _fail(job, error, conflicts)
        except _AlreadyFinal:
            return Outcome(job_id, "already_final", conflicts)
        except IntegrityError:
            # A unique (job, account) or (job) violation: a concurrent delivery applied it.
            if _is_final(job_id):
                return Outcome(job_id, "already_final", conflicts)
            raise
    # Still contended: give the slot back and come again, never fail the job for it.
    with autocommit() as conn:
        WalletStore(conn).release_job(job_id, extra_attempts=conflicts)
    metrics.shared().inc("wallet_optimistic_lock_conflicts_total", amount=conflicts) \
        .inc("wallet_command_retries_total", "conflicts").send()
    raise RetryLater(f"{conflicts} optimistic-lock conflicts", countdown=random.uniform(0.05, 0.5))


def release(job_id: str) -> None:
    """Hand a running job back to the queue before a deliberate retry."""
    with autocommit() as conn:
        WalletStore(conn).release_job(job_id)


def fail_unexpected(job_id: str) -> None:
    """End a job whose command keeps raising an unexpected error (a bug) as failed."""
    with autocommit() as conn:
        WalletStore(conn).finish_job(job_id, status="failed", error={
            "code": "INTERNAL_ERROR", "message": "the command could not be executed; the error has been logged"})


def _fail(job: ClaimedJob, error: BusinessRuleViolation, conflicts: int) -> Outcome:
    with autocommit() as conn:
        seconds = WalletStore(conn).finish_job(
            job.id, status="failed", error={"code": error.code, "message": error.message}, extra_attempts=conflicts,
        )
    if seconds is None:
        return Outcome(job.id, "already_final", conflicts)
    _report(job, "failed", error.code, seconds, conflicts)
    return Outcome(job.id, "failed", conflicts)


def _report(job: ClaimedJob, status: str, code: str | None, seconds: float, conflicts: int) -> None:
    """Log the outcome and count it in the cluster-wide metrics (buffered, sent to Redis about once a second)."""
    log.info("job %s", status, extra={"job_id": job.id, "command": job.type, "status": status, "code": code,
                                      "conflicts": conflicts, "seconds": round(seconds, 4)})
    m = metrics.shared().inc("wallet_jobs_completed_total", job.type, status, code or "") \
        .observe("wallet_job_duration_seconds", seconds, job.type)
    if conflicts:
        m.inc("wallet_optimistic_lock_conflicts_total", amount=conflicts)
    m.send()


def _is_final(job_id: str) -> bool:
    with engine().connect() as conn:
        return WalletStore(conn).job_status(job_id) in ("succeeded", "failed")
