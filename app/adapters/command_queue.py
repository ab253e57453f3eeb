"""Sends jobs to the Celery workers through the Redis broker."""
from __future__ import annotations

import logging
import os
import time

from app.adapters import redis_client

log = logging.getLogger(__name__)

EXECUTE_COMMAND = "wallet.execute_command"
COMMANDS_QUEUE = "commands"


def enqueue(job_id: str) -> bool:
    """Publish the job's task (task id = job id). False when the broker is unreachable.

    The job row is already committed, so a failed publish loses nothing: the
    sweeper re-enqueues jobs left queued.
    """
    from tasks import celery_app  # the composition root of the workers

    try:
        celery_app.send_task(EXECUTE_COMMAND, args=[job_id], task_id=job_id, queue=COMMANDS_QUEUE)
        return True
    except Exception:  # noqa: BLE001 - any broker failure; the sweeper recovers the job
        log.warning("could not enqueue job %s; the sweeper will re-enqueue it", job_id, exc_info=True)
        return False


_depth_cache = {"value": 0, "read_at": float("-inf"), "pid": None}
DEPTH_CACHE_S = 0.25


def depth() -> int:
    """Tasks waiting in the commands queue (kombu keeps a Redis list named after the queue).

    Read at most every DEPTH_CACHE_S per process, on the process's own Redis
    client: a backpressure check must not cost a broker connection per request.
    """
    now = time.monotonic()
    cache = _depth_cache
    if cache["pid"] != os.getpid() or now - cache["read_at"] > DEPTH_CACHE_S:
        cache.update(value=redis_client.client().llen(COMMANDS_QUEUE), read_at=now, pid=os.getpid())
    return cache["value"]

