"""Executes a job exactly once, however often its task is delivered.

The job's task claims it in a short statement (status running, attempts + 1;
a job found already running counts a lost delivery). The command then runs in
one transaction that changes balances, writes journal and outbox rows and makes
the job final; it only commits if the job was still running, so a second
delivery can never apply it again. Optimistic-lock conflicts roll the attempt
back and retry here a few times with jittered backoff, then the job goes back
to queued and the task is retried by Celery (StillContended); business
rejections end the job failed; anything else is left to the task's retries.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from app.adapters.db import autocommit, engine
from app.adapters.store import ClaimedJob, WalletStore, business_error_of
from app.config import settings
from app.domain import commands
from app.domain.errors import AttemptsExhausted, BusinessRuleViolation, ConcurrencyConflict
from app.observability import logs, metrics
from app.services.handlers import HANDLERS, ONE_STATEMENT

log = logging.getLogger(__name__)


class StillContended(Exception):
    """Optimistic-lock conflicts outlasted the in-process retries; the job is queued again for a later try."""


class _AlreadyFinal(Exception):
    """Another delivery made the job final first; this attempt must roll back."""


@dataclass(frozen=True)
class Outcome:
    job_id: str
    status: str  # succeeded, failed, or already_final
    conflicts: int = 0


def backoff_seconds(attempt: int) -> float:
    """Full-jitter exponential backoff, in seconds."""
    s = settings()
    cap = min(s.conflict_backoff_cap_ms, s.conflict_backoff_base_ms * (2 ** attempt))
    return random.uniform(0, cap) / 1000.0


def execute_job(job_id: str) -> Outcome:
    """Apply a job's command once; raises StillContended when it must run again."""
    with autocommit() as conn:
        job = WalletStore(conn).claim_job(job_id)
    if job is None:
        return Outcome(job_id, "already_final")
    return run_claimed(job)


def run_claimed(job: ClaimedJob) -> Outcome:
    """Apply a claimed job's command once; raises StillContended when it must run again.

    Fund, withdraw and transfer are one statement in autocommit (no BEGIN or
    COMMIT); the other commands run in a transaction.
    """
    s = settings()
    job_id = job.id
    logs.request_id_var.set(job.request_id)
    if job.lost_deliveries >= s.max_lost_deliveries:
        error = AttemptsExhausted(f"the worker running this command was lost {job.lost_deliveries} times")
        return fail_claimed(job, error, conflicts=0)

    handler = HANDLERS[job.type]
    command = commands.from_payload(job.type, job.payload)
    one_statement = job.type in ONE_STATEMENT
    # If-Match: the wallet the command's path names must be read at the version it was accepted at.
    expected = {command.wallet_id: job.if_match_version} if job.if_match_version is not None else None
    conflicts = 0
    for attempt in range(s.conflict_retries_in_task + 1):
        store = None
        try:
            with autocommit() if one_statement else engine().begin() as conn:
                store = WalletStore(conn, one_statement=one_statement, expected_versions=expected)
                result = handler(store, job, command)
                seconds = store.finish_job(job_id, status="succeeded", result=result, extra_attempts=conflicts)
                if seconds is None:
                    raise _AlreadyFinal()
            _report(job, "succeeded", None, seconds, conflicts)
            return Outcome(job_id, "succeeded", conflicts)
        except ConcurrencyConflict:  # a wallet moved since it was read: read it afresh and try again
            conflicts += 1
            time.sleep(backoff_seconds(attempt))
        except BusinessRuleViolation as error:
            return fail_claimed(job, error, conflicts)
        except _AlreadyFinal:
            return Outcome(job_id, "already_final", conflicts)
        except IntegrityError as error:
            # A unique (job, account) or (job) violation: a concurrent delivery applied it.
            if _is_final(job_id):
                return Outcome(job_id, "already_final", conflicts)
            business = business_error_of(error)
            if business is not None:  # a rule of money the database enforced: fail it, never retry
                log.warning("the database refused job %s: %s", job_id, business.message, extra={"job_id": job_id})
                return fail_claimed(job, business, conflicts)
            raise  # anything else is a bug: the task retries it a few times, then fails it INTERNAL_ERROR
    # Still contended: give the slot back and come again, never fail the job for it.
    with autocommit() as conn:
        WalletStore(conn).release_job(job_id, extra_attempts=conflicts)
    metrics.shared().inc("wallet_optimistic_lock_conflicts_total", amount=conflicts) \
        .inc("wallet_command_retries_total", "conflicts").send()
    raise StillContended(f"{conflicts} optimistic-lock conflicts")


def release(job_id: str) -> None:
    """Hand a running job back to the queue before a deliberate retry."""
    with autocommit() as conn:
        WalletStore(conn).release_job(job_id)


def fail_unexpected(job_id: str) -> None:
    """End a job whose command keeps raising an unexpected error (a bug) as failed."""
    with autocommit() as conn:
        WalletStore(conn).finish_job(job_id, status="failed", error={
            "code": "INTERNAL_ERROR", "message": "the command could not be executed; the error has been logged"})


def fail_claimed(job: ClaimedJob, error: BusinessRuleViolation, conflicts: int) -> Outcome:
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
        return WalletStore(conn).job_status(job_id) in commands.FINAL_STATUSES
