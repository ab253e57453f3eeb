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
from app.domain.errors import IdempotencyKeyReused, JobNotCancelable, PreconditionFailed
from app.observability import metrics
from app.services.queries import JOB_COLUMNS, get_job
from app.services.views import job_view

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
           idempotency_key: str | None = None, request_fingerprint: str | None = None,
           if_match: tuple[str, list[int]] | None = None, metadata: dict | None = None) -> Accepted:
    """Record the job durably, then enqueue it; a replayed key returns the first job.

    `if_match` (wallet id, versions): the job is only recorded if the wallet is at one of the versions
    (PreconditionFailed otherwise, and nothing is recorded), and it records that version for the worker.
    """
    for _ in range(3):
        try:
            accepted = record_job(command_type, command, tenant_id, request_id, idempotency_key, request_fingerprint,
                                  if_match, metadata)
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
        # publish is lost, the sweeper re-enqueues the job.
        command_queue.enqueue(str(accepted.job["id"]), command_type)
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


def cancel(job_id: str, tenant_id: str | None) -> dict | None:
    """Cancel a queued job (it becomes final and never touches the ledger); None when there is no such job.

    One UPDATE decides: it only matches a queued job, and a worker's claim only
    matches a queued (or running) one, so exactly one of them wins the row. A job
    that is running or final raises JobNotCancelable.
    """
    with autocommit() as conn:
        row = run_sql(conn, f"""
            UPDATE jobs AS j SET status = 'canceled', completed_at = now(), updated_at = now()
             WHERE j.id = CAST(:id AS uuid) AND j.status = 'queued' {'' if tenant_id is None else 'AND j.tenant_id = :tenant'}
            RETURNING {JOB_COLUMNS}
        """, {"id": job_id, "tenant": tenant_id}).mappings().first()
    if row is None:
        job = get_job(job_id, tenant_id)
        if job is None:
            return None
        raise JobNotCancelable(f"job {job_id} is {job['status']}: only a queued job can be canceled")
    command_queue.revoke(job_id)
    metrics.shared().inc("wallet_jobs_completed_total", row["type"], "canceled", "").send()
    log.info("job canceled", extra={"job_id": job_id, "command": row["type"]})
    return job_view(row)


def record_job(command_type, command, tenant_id, request_id, idempotency_key, request_fingerprint,
               if_match: tuple[str, list[int]] | None = None, metadata: dict | None = None) -> Accepted:
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
        params = {"id": str(uuid.uuid4()), "tenant": tenant_id, "type": command_type,
                  "payload": json.dumps(to_payload(command)), "request_id": request_id,
                  "metadata": json.dumps(metadata or {})}
        if if_match is None:
            job = run_sql(conn, f"""
                INSERT INTO jobs AS j (id, tenant_id, type, status, payload, request_id, metadata)
                VALUES (:id, :tenant, :type, 'queued', CAST(:payload AS jsonb), :request_id, CAST(:metadata AS jsonb))
                RETURNING {JOB_COLUMNS}
            """, params).mappings().one()
        else:  # only at a version If-Match allows, which the job keeps for the worker to check again
            wallet_id, versions = if_match
            job = run_sql(conn, f"""
                INSERT INTO jobs AS j (id, tenant_id, type, status, payload, request_id, metadata, if_match_version)
                SELECT :id, :tenant, :type, 'queued', CAST(:payload AS jsonb), :request_id, CAST(:metadata AS jsonb),
                       w.version
                  FROM wallets w WHERE w.id = CAST(:wallet AS uuid) AND w.version = ANY(CAST(:versions AS bigint[]))
                RETURNING {JOB_COLUMNS}
            """, {**params, "wallet": wallet_id, "versions": versions}).mappings().first()
            if job is None:
                raise PreconditionFailed(f"wallet {wallet_id} is not at the version If-Match names "
                                         f"(read it again for its current ETag)")
        if idempotency_key is not None:
            run_sql(conn, """
                INSERT INTO idempotency_keys (tenant_id, key, fingerprint, job_id)
                VALUES (:tenant, :key, :fingerprint, :job_id)
            """, {"tenant": tenant_id, "key": idempotency_key, "fingerprint": request_fingerprint,
                   "job_id": job["id"]})
    return Accepted(job=dict(job), replayed=False)
