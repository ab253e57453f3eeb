"""The command tasks: thin wrappers over the executor."""
from __future__ import annotations

from celery import shared_task
from sqlalchemy.exc import DBAPIError, OperationalError

from app.adapters import command_queue
from app.config import settings
from app.services import executor

# Faults of infrastructure: retried with backoff, never failing the job.
TRANSIENT = (OperationalError, DBAPIError, ConnectionError, TimeoutError)
UNEXPECTED_ERROR_RETRIES = 3


@shared_task(name="wallet.execute_command", bind=True, acks_late=True, reject_on_worker_lost=True,
             max_retries=None, ignore_result=True)
def execute_command(self, job_id: str) -> str:
    """Execute the job `job_id` (also the task id) exactly once."""
    try:
        return executor.execute_job(job_id).status
    except executor.RetryLater as later:
        raise self.retry(countdown=later.countdown)
    except TRANSIENT as exc:
        try:
            executor.release(job_id)
        except TRANSIENT:
            pass  # the database is away; the next delivery counts it as lost, the sweeper as stranded
        raise self.retry(exc=exc, countdown=min(30.0, 0.5 * 2 ** self.request.retries))
    except Exception as exc:  # a bug, not a fault: a few retries, then the job fails visibly
        if self.request.retries >= UNEXPECTED_ERROR_RETRIES:
            executor.fail_unexpected(job_id)
            raise
        executor.release(job_id)
        raise self.retry(exc=exc, countdown=0.5 * 2 ** self.request.retries)


@shared_task(name="wallet.execute_commands", bind=True, acks_late=True, reject_on_worker_lost=True,
             max_retries=None, ignore_result=True)
def execute_commands(self) -> int:
    """Run the queued jobs in batches (woken by the API; one message serves many jobs)."""
    s = settings()
    try:
        outcome = executor.execute_queued_jobs(self.request.id, batch_size=s.claim_batch_size,
                                               budget=s.batch_task_max_jobs, budget_s=s.batch_task_max_seconds,
                                               linger_s=s.batch_task_linger_ms / 1000)
    except TRANSIENT as exc:  # what it claimed and did not finish is handed off by the next delivery
        raise self.retry(exc=exc, countdown=min(30.0, 0.5 * 2 ** self.request.retries))
    if outcome.more:
        command_queue.wake()
    return outcome.ran
