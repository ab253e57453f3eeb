"""Accepting a command: a durable job (and idempotency key) first, then the queue."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from app.adapters import command_queue
from app.adapters.db import autocommit, engine, run_sql
from app.domain.commands import to_payload
from app.domain.errors import IdempotencyKeyReused
from app.observability import metrics
from app.services.queries import JOB_COLUMNS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    job: dict  # the job row
    replayed: bool  # True when an Idempotency-Key matched an earlier request


def fingerprint(method: str, path: str, body: object) -> str:
    """What makes two requests 'the same' for an idempotency key."""
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def submit(command_type: str, command, *, tenant_id: str, request_id: str,
           idempotency_key: str | None = None, request_fingerprint: str | None = None) -> Accepted:
    """Record the job durably, then enqueue it; a replayed key returns the first job."""
    for _ in range(3):
        try:
            accepted = record_job(command_type, command, tenant_id, request_id, idempotency_key, request_fingerprint)
            break
        except IntegrityError:
            continue  # a concurrent request took the same key first: read its job now
    else:  # pragma: no cover - three lost races in a row
        raise RuntimeError("could not record the idempotency key")
    if not accepted.replayed:
        metrics.COMMANDS_ACCEPTED.labels(command_type).inc()
        log.info("command accepted", extra={"job_id": str(accepted.job["id"]), "command": command_type,
                                            "tenant_id": tenant_id})
        # After the commit, never before: a worker must find the job row. If this
        # wake-up is lost, the sweeper re-enqueues the job.
        command_queue.wake()
    return accepted


_backlog = {"value": 0, "read_at": float("-inf"), "pid": None}
BACKLOG_CACHE_S = 0.25


def backlog(limit: int) -> int:
    """Jobs waiting to be claimed, counted up to limit + 1 (enough to tell "more than limit").

    Read at most every BACKLOG_CACHE_S per process: backpressure must not cost
    a query per request.
    """
    now = time.monotonic()
    if _backlog["pid"] != os.getpid() or now - _backlog["read_at"] > BACKLOG_CACHE_S:
        with engine().connect() as conn:
            value = run_sql(conn, "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE status = 'queued' LIMIT :n) AS q",
                            {"n": limit + 1}).scalar()
        _backlog.update(value=value, read_at=now, pid=os.getpid())
    return _backlog["value"]


def record_job(command_type, command, tenant_id, request_id, idempotency_key, request_fingerprint) -> Accepted:
    # Without a key the job is one INSERT: autocommit saves the BEGIN and COMMIT round trips.
    with engine().begin() if idempotency_key is not None else autocommit() as conn:
        if idempotency_key is not None:
            existing = run_sql(conn, f"""
                SELECT k.fingerprint, {JOB_COLUMNS} FROM idempotency_keys k JOIN jobs j ON j.id = k.job_id
                 WHERE k.tenant_id = :tenant AND k.key = :key
            """, {"tenant": tenant_id, "key": idempotency_key}).mappings().first()
            if existing is not None:
                if existing["fingerprint"] != request_fingerprint:
                    raise IdempotencyKeyReused("this Idempotency-Key was used with a different request")
                return Accepted(job=dict(existing), replayed=True)
        job = run_sql(conn, f"""
            INSERT INTO jobs AS j (id, tenant_id, type, status, payload, request_id)
            VALUES (:id, :tenant, :type, 'queued', CAST(:payload AS jsonb), :request_id)
            RETURNING {JOB_COLUMNS}
        """, {
            "id": str(uuid.uuid4()), "tenant": tenant_id, "type": command_type,
            "payload": json.dumps(to_payload(command)), "request_id": request_id,
        }).mappings().one()
        if idempotency_key is not None:
            run_sql(conn, """
                INSERT INTO idempotency_keys (tenant_id, key, fingerprint, job_id)
                VALUES (:tenant, :key, :fingerprint, :job_id)
            """, {"tenant": tenant_id, "key": idempotency_key, "fingerprint": request_fingerprint,
                   "job_id": job["id"]})
    return Accepted(job=dict(job), replayed=False)
