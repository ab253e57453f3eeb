"""Periodic upkeep: re-enqueue stranded jobs, expire holds, forget old idempotency keys."""
from __future__ import annotations

import logging
import random
import time
import uuid

from sqlalchemy import text

from app.adapters import command_queue
from app.adapters.db import engine
from app.adapters.store import WalletStore
from app.config import settings
from app.domain import batches
from app.domain.errors import ConcurrencyConflict
from app.services import handlers

log = logging.getLogger(__name__)


def requeue_stranded_jobs(limit: int = 1000) -> list[str]:
    """Re-enqueue jobs whose task was lost: queued too long, or running past the time limit.

    A publish can be lost after the job committed, Redis can lose its data, and
    a hard time-limit kill acks the task even with acks_late. Re-enqueueing a
    job whose task still exists is harmless: a job applies at most once.
    """
    s = settings()
    with engine().begin() as conn:
        ids = conn.execute(text("""
            UPDATE jobs SET enqueued_at = now()
             WHERE id IN (
                SELECT id FROM jobs
                 WHERE (status = 'queued' AND enqueued_at < now() - make_interval(secs => :queued_after))
                    OR (status = 'running' AND updated_at < now() - make_interval(secs => :running_after)
                        AND enqueued_at < now() - make_interval(secs => :running_after))
                 ORDER BY enqueued_at LIMIT :limit FOR UPDATE SKIP LOCKED)
            RETURNING id::text, type, batch_id::text
        """), {"queued_after": s.requeue_queued_after_s, "running_after": s.requeue_running_after_s,
               "limit": limit}).all()
    chunks: dict[str, list[str]] = {}
    for job_id, job_type, batch_id in ids:
        if job_type == batches.BATCH:  # an atomic batch: its task id is its job id
            command_queue.enqueue_batch([job_id], task_id=job_id)
        elif batch_id is not None:  # a command of an independent batch: back in a chunk of its batch
            chunks.setdefault(batch_id, []).append(job_id)
        else:
            command_queue.enqueue(job_id, job_type)
    for job_ids in chunks.values():
        for start in range(0, len(job_ids), batches.CHUNK_SIZE):
            command_queue.enqueue_batch(job_ids[start:start + batches.CHUNK_SIZE], task_id=str(uuid.uuid4()))
    if ids:
        log.warning("re-enqueued %d stranded jobs", len(ids))
    return [job_id for job_id, _, _ in ids]


def purge_idempotency_keys() -> int:
    """Forget idempotency keys older than their retention (at least 24 h)."""
    hours = max(24, settings().idempotency_key_ttl_hours)
    with engine().begin() as conn:
        return conn.execute(text("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => :h)"),
                            {"h": hours}).rowcount


def expire_holds(limit: int = 500) -> int:
    """Mark active holds past expiry expired, each in its own transaction, emitting HOLD_EXPIRED.

    Their money stopped counting against the available balance at expires_at;
    this records the change and tells the history. Safe to run concurrently:
    a hold is only settled once.
    """
    with engine().connect() as conn:
        due = WalletStore(conn).due_holds(limit)
    expired = 0
    for hold_id in due:
        for _ in range(settings().conflict_retries_in_task):
            try:
                with engine().begin() as conn:
                    expired += handlers.expire_hold(WalletStore(conn), hold_id)
                break
            except ConcurrencyConflict:
                time.sleep(random.uniform(0, 0.01))
    return expired
