"""Publishes each accepted command as a Celery task of its own, through the Redis broker.

The task is named for the command (`wallet.fund`, `wallet.transfer`, …), its
task id is the job id and its only argument the job id, so an operator finds a
command in Flower, `celery inspect query_task <job id>` and `revoke` by the id
the client was given. Amounts and user data stay in PostgreSQL.
"""
from __future__ import annotations

import logging

from app.adapters.celery_app import celery_app

log = logging.getLogger(__name__)

COMMANDS_QUEUE = "commands"
BATCH_TASK = "wallet.execute_batch"  # a chunk of a bulk submission: up to 100 job ids


def task_name(job_type: str) -> str:
    """The Celery task that executes jobs of this type."""
    return f"wallet.{job_type}"


def enqueue(job_id: str, job_type: str, countdown: float | None = None) -> bool:
    """Publish the job's task (task id = job id). False when the broker is unreachable.

    The job row is already committed, so a failed publish loses nothing: the
    sweeper re-enqueues jobs left queued.
    """
    try:
        celery_app.send_task(task_name(job_type), args=[job_id], task_id=job_id, queue=COMMANDS_QUEUE,
                             countdown=countdown)
        return True
    except Exception:  # noqa: BLE001 - any broker failure; the sweeper recovers the job
        log.warning("could not publish job %s; the sweeper will re-enqueue it", job_id, exc_info=True,
                    extra={"job_id": job_id})
        return False


def enqueue_batch(job_ids: list[str], task_id: str) -> bool:
    """Publish one chunk of a bulk submission as a `wallet.execute_batch` task. False when the broker is away.

    The jobs are committed already: a lost publish leaves them queued, and the
    sweeper re-enqueues them.
    """
    try:
        celery_app.send_task(BATCH_TASK, args=[job_ids], task_id=task_id, queue=COMMANDS_QUEUE)
        return True
    except Exception:  # noqa: BLE001 - any broker failure; the sweeper recovers the jobs
        log.warning("could not publish a chunk of %d jobs; the sweeper will re-enqueue them", len(job_ids),
                    exc_info=True)
        return False


def revoke(job_id: str) -> None:
    """Ask the workers to drop the job's task if it reaches them (best effort: the job's status decides)."""
    try:
        celery_app.control.revoke(job_id)
    except Exception:  # noqa: BLE001 - a canceled job is skipped by its task whatever happens here
        log.warning("could not revoke the task of job %s", job_id, exc_info=True, extra={"job_id": job_id})


WEBHOOKS_QUEUE = "webhooks"
FAILING_WEBHOOKS_QUEUE = "webhooks-failing"  # endpoints whose last attempt failed: a worker of their own
DELIVER_TASK = "wallet.webhooks.deliver"


def enqueue_delivery(delivery_id: str, failing: bool = False, countdown: float | None = None) -> bool:
    """Publish one attempt at a webhook delivery. False when the broker is away.

    On `webhooks`, or `webhooks-failing` when its endpoint's last attempt failed. The
    delivery row is committed already: a lost publish is found by the
    `wallet.webhooks.publish_due` sweep.
    """
    try:
        celery_app.send_task(DELIVER_TASK, args=[delivery_id], countdown=countdown,
                             queue=FAILING_WEBHOOKS_QUEUE if failing else WEBHOOKS_QUEUE)
        return True
    except Exception:  # noqa: BLE001 - any broker failure; the sweep publishes it again
        log.warning("could not publish webhook delivery %s; the sweep will", delivery_id, exc_info=True)
        return False
