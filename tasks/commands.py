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

A bulk submission runs as `wallet.execute_batch` tasks, each carrying the ids
of up to 100 of its jobs, with the same taxonomy over the whole chunk.
"""
from __future__ import annotations

import logging

from celery import shared_task
from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError

from app.adapters import command_queue
from app.config import settings
from app.domain import commands
from app.observability import metrics
from app.services import batch_executor, executor

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
    autoretry_for=TRANSIENT + (executor.StillContended,), retry_backoff=True,
    retry_backoff_max=settings().task_retry_backoff_max_s,
    retry_jitter=True, max_retries=None,
)


def execute(task, job_id: str) -> str:
    """Run the job once; raise what makes Celery retry the task, or end the job."""
    return _run(task, lambda: executor.execute_job(job_id).status, [job_id],
                release=lambda: executor.release(job_id), fail=lambda: executor.fail_unexpected(job_id))


def execute_chunk(task, job_ids: list[str]) -> dict:
    """Run a batch chunk's jobs once; raise what makes Celery retry the task, or end the jobs."""
    return _run(task, lambda: batch_executor.execute_chunk(job_ids), job_ids,
                release=lambda: batch_executor.release(job_ids), fail=lambda: batch_executor.fail_unexpected(job_ids))


def _run(task, work, job_ids: list[str], *, release, fail):
    """The failure taxonomy shared by command and batch tasks (see the module's docstring)."""
    label = {"job_ids": job_ids} if len(job_ids) > 1 else {"job_id": job_ids[0]}
    try:
        return work()
    except executor.StillContended:  # the executor already put the jobs back to queued
        metrics.shared().inc("wallet_command_retries_total", "conflicts").send()
        raise
    except TRANSIENT:
        metrics.shared().inc("wallet_command_retries_total", "transient").send()
        try:
            release()
        except TRANSIENT:
            pass  # the database is away; the next delivery counts a lost delivery, the sweeper finds it stranded
        raise
    except Exception as exc:  # a bug, not a fault: a few retries, then the jobs fail visibly
        metrics.shared().inc("wallet_command_retries_total", "error").send()
        if task.request.retries >= UNEXPECTED_ERROR_RETRIES:
            log.exception("jobs %s keep raising; failing them INTERNAL_ERROR", job_ids, extra=label)
            fail()
            return "failed"
        log.warning("jobs %s raised; retrying", job_ids, exc_info=True, extra=label)
        release()
        raise task.retry(exc=exc, countdown=0.5 * 2 ** task.request.retries) from exc


@shared_task(name=command_queue.BATCH_TASK, **COMMAND_TASK_OPTIONS)
def execute_batch(self, job_ids: list[str]) -> dict:
    """Execute up to 100 jobs of a bulk submission, each exactly once, in a few statements."""
    return execute_chunk(self, job_ids)


def _register(job_type: str):
    @shared_task(name=f"wallet.{job_type}", **COMMAND_TASK_OPTIONS)
    def command_task(self, job_id: str) -> str:
        return execute(self, job_id)

    command_task.__doc__ = f"Execute a `{job_type}` job exactly once (task id = job id)."
    return command_task


COMMAND_TASKS = {job_type: _register(job_type) for job_type in commands.COMMAND_CLASSES}
