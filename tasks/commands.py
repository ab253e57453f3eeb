"""The command tasks: one Celery task per command type (`wallet.fund`, `wallet.transfer`, …), thin over the executor.

Each accepted command is one task, whose id is the job id and whose only
argument is the job id. Failures are sorted three ways:

- transient (PostgreSQL or Redis unreachable, a timeout, optimistic-lock
  conflicts that outlast the executor's few in-process retries): the job goes
  back to `queued` and the task is retried by Celery (Flower shows RETRY) with
  exponential backoff and full jitter, without limit, never failing the job;
- business (a rule of money): the executor ends the job `failed`, no retry;
- anything else is a bug: retried UNEXPECTED_ERROR_RETRIES times, then the job
  fails `INTERNAL_ERROR`, so it never stays open.
"""
from __future__ import annotations

import logging

from celery import shared_task
from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError

from app.domain import commands
from app.observability import metrics
from app.services import executor

log = logging.getLogger(__name__)

# Faults of infrastructure (the database or Redis unreachable, a timeout, a serialization failure or
# deadlock): retried with backoff, never failing the job. Anything else the database raises
# (IntegrityError, DataError, ProgrammingError: a constraint or a statement the handler did not
# foresee) is a bug: a few retries, then the job fails INTERNAL_ERROR.
TRANSIENT = (OperationalError, InterfaceError, RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)
UNEXPECTED_ERROR_RETRIES = 3

COMMAND_TASK_OPTIONS = dict(
    bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
    # Celery's own retry policy for the transient faults and the conflicts: 1, 2, 4 … 30 s with full jitter.
    autoretry_for=TRANSIENT + (executor.StillContended,), retry_backoff=True, retry_backoff_max=30,
    retry_jitter=True, max_retries=None,
)


def execute(task, job_id: str) -> str:
    """Run the job once; raise what makes Celery retry the task, or end the job."""
    try:
        return executor.execute_job(job_id).status
    except executor.StillContended:  # the executor already put the job back to queued
        metrics.shared().inc("wallet_command_retries_total", "conflicts").send()
        raise
    except TRANSIENT:
        metrics.shared().inc("wallet_command_retries_total", "transient").send()
        _release_quietly(job_id)
        raise
    except Exception as exc:  # a bug, not a fault: a few retries, then the job fails visibly
        metrics.shared().inc("wallet_command_retries_total", "error").send()
        if task.request.retries >= UNEXPECTED_ERROR_RETRIES:
            log.exception("job %s keeps raising; failing it INTERNAL_ERROR", job_id, extra={"job_id": job_id})
            executor.fail_unexpected(job_id)
            return "failed"
        log.warning("job %s raised; retrying", job_id, exc_info=True, extra={"job_id": job_id})
        executor.release(job_id)
        raise task.retry(exc=exc, countdown=0.5 * 2 ** task.request.retries)


def _release_quietly(job_id: str) -> None:
    try:
        executor.release(job_id)
    except TRANSIENT:
        pass  # the database is away; the next delivery counts a lost delivery, the sweeper finds it stranded


def _register(job_type: str):
    @shared_task(name=f"wallet.{job_type}", **COMMAND_TASK_OPTIONS)
    def command_task(self, job_id: str) -> str:
        return execute(self, job_id)

    command_task.__doc__ = f"Execute a `{job_type}` job exactly once (task id = job id)."
    return command_task


COMMAND_TASKS = {job_type: _register(job_type) for job_type in commands.COMMAND_CLASSES}
