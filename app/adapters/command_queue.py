"""Sends work to the Celery workers through the Redis broker.

Two tasks execute commands. `wallet.execute_commands` (a batch task) claims
whatever jobs are queued in PostgreSQL and runs them; the API wakes one after
each accepted command, at most one pending at a time (a Redis flag), so under
load one Celery message serves many jobs. `wallet.execute_command` runs one
given job (task id = job id): the sweeper, retries after conflicts or errors,
and jobs whose batch delivery died use it.
"""
from __future__ import annotations

import logging

import redis

from app.adapters import redis_client

log = logging.getLogger(__name__)

EXECUTE_COMMAND = "wallet.execute_command"
EXECUTE_COMMANDS = "wallet.execute_commands"
COMMANDS_QUEUE = "commands"

# Set while a batch task is published and has not started claiming, or while
# a batch task lingers before its next claim. Its TTL bounds how long a lost
# batch task can leave jobs waiting (then the next command, or the sweeper,
# wakes another).
WAKE_FLAG = "wallet:commands:wake"
WAKE_FLAG_TTL_MS = 2000


def _send(name: str, **options) -> bool:
    from tasks import celery_app  # the composition root of the workers

    try:
        celery_app.send_task(name, queue=COMMANDS_QUEUE, **options)
        return True
    except Exception:  # noqa: BLE001 - any broker failure; the sweeper recovers the job
        log.warning("could not publish %s; the sweeper will re-enqueue what waits", name, exc_info=True)
        return False


def enqueue(job_id: str, countdown: float | None = None) -> bool:
    """Publish the job's own task (task id = job id). False when the broker is unreachable.

    The job row is already committed, so a failed publish loses nothing: the
    sweeper re-enqueues jobs left queued.
    """
    return _send(EXECUTE_COMMAND, args=[job_id], task_id=job_id, countdown=countdown)


def wake() -> bool:
    """Make sure a batch task will look at the queued jobs after this moment.

    Call it after the job committed. If a batch task is already published and
    has not yet cleared the flag, its first claim will see the job; otherwise
    this publishes one. False when neither Redis nor the broker answered.
    """
    try:
        if not redis_client.client().set(WAKE_FLAG, "1", nx=True, px=WAKE_FLAG_TTL_MS):
            return True
    except redis.RedisError:
        log.warning("could not set the wake flag; publishing a batch task anyway", exc_info=True)
    if _send(EXECUTE_COMMANDS):
        return True
    clear_wake()
    return False


def take_wake() -> bool:
    """Set the wake flag for a batch task that will claim again shortly (True), unless it is set already.

    While it is set, accepted commands publish no task: the caller's next
    claim (after clear_wake) will see them. False when another batch task holds
    the flag (it will claim) or Redis did not answer.
    """
    try:
        return bool(redis_client.client().set(WAKE_FLAG, "1", nx=True, px=WAKE_FLAG_TTL_MS))
    except redis.RedisError:
        log.debug("could not set the wake flag; the batch task ends instead of lingering", exc_info=True)
        return False


def clear_wake() -> None:
    """A batch task calls this before each claim: jobs committed after it wake another batch task."""
    try:
        redis_client.client().delete(WAKE_FLAG)
    except redis.RedisError:
        log.debug("could not clear the wake flag; it expires by itself", exc_info=True)
