"""Bulk submissions: a batch and its jobs recorded in one transaction, then published in chunks.

An independent batch is a job per command, inserted in one statement and
published as `wallet.execute_batch` tasks of at most 100 job ids (task id:
derived from the batch id and the chunk's first index, so an operator can
find it). An atomic batch is one job of type `batch` (task id = its job id).
A batch's status and counts are read from its jobs; nothing else is stored
twice.
"""
from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from app.adapters import command_queue
from app.adapters.db import engine, run_sql
from app.domain import batches
from app.domain.commands import to_payload
from app.domain.errors import IdempotencyKeyReused
from app.observability import metrics
from app.services import cursors
from app.services.queries import JOB_COLUMNS
from app.services.views import job_view, timestamp

log = logging.getLogger(__name__)

_TASK_NAMESPACE = uuid.UUID("0b5e3c1e-8f0a-4a55-a4a1-6a3b0f6d2c71")
_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")


@dataclass(frozen=True)
class AcceptedBatch:
    batch: dict  # the batch resource
    replayed: bool


def chunk_task_id(batch_id: str, first_index: int) -> str:
    """The id of the wallet.execute_batch task whose first job is at `first_index` of the batch."""
    return str(uuid.uuid5(_TASK_NAMESPACE, f"{batch_id}/{first_index}"))


def submit_batch(atomic: bool, items: list[tuple[str, object]], *, tenant_id: str, request_id: str,
                 idempotency_key: str | None = None, request_fingerprint: str | None = None) -> AcceptedBatch:
    """Record the batch and its jobs durably, then publish its tasks; a replayed key returns the first batch.

    `items` are (command type, command, its metadata) in the client's order.
    """
    for _ in range(3):
        try:
            accepted, job_ids = _record(atomic, items, tenant_id, request_id, idempotency_key, request_fingerprint)
            break
        except IntegrityError:
            continue  # a concurrent request took the same key first: read its batch now
    else:  # pragma: no cover - three lost races in a row
        raise RuntimeError("could not record the idempotency key")
    if not accepted.replayed:
        batch_id = accepted.batch["id"]
        for command_type, count in Counter(command_type for command_type, _, _ in items).items():
            metrics.COMMANDS_ACCEPTED.labels(command_type).inc(count)
        log.info("batch accepted", extra={"batch_id": batch_id, "commands": len(items), "atomic": atomic,
                                          "tenant_id": tenant_id})
        # After the commit: a worker must find the rows. A lost publish leaves the jobs queued for the sweeper.
        if atomic:
            command_queue.enqueue_batch(job_ids, task_id=job_ids[0])
        else:
            for start in range(0, len(job_ids), batches.CHUNK_SIZE):
                command_queue.enqueue_batch(job_ids[start:start + batches.CHUNK_SIZE],
                                            task_id=chunk_task_id(batch_id, start))
    return accepted


def _record(atomic, items, tenant_id, request_id, idempotency_key, request_fingerprint):
    with engine().begin() as conn:
        if idempotency_key is not None:
            existing = run_sql(conn, """
                SELECT fingerprint, batch_id::text AS batch_id FROM idempotency_keys
                 WHERE tenant_id = :tenant AND key = :key
            """, {"tenant": tenant_id, "key": idempotency_key}).mappings().first()
            if existing is not None:
                if existing["fingerprint"] != request_fingerprint or existing["batch_id"] is None:
                    raise IdempotencyKeyReused("this Idempotency-Key was used with a different request")
                return AcceptedBatch(get_batch(existing["batch_id"], tenant_id, conn), replayed=True), []
        batch_id = str(uuid.uuid4())
        created_at = run_sql(conn, """
            INSERT INTO batches (id, tenant_id, atomic, size, request_id) VALUES (:id, :tenant, :atomic, :size, :rid)
            RETURNING created_at
        """, {"id": batch_id, "tenant": tenant_id, "atomic": atomic, "size": len(items), "rid": request_id}).scalar()
        if atomic:  # one job: each command's metadata travels with it in the payload
            jobs = [{"id": str(uuid.uuid4()), "type": batches.BATCH, "batch_index": 0, "metadata": {}, "payload": {
                "commands": [{"type": command_type, **to_payload(command), "metadata": metadata}
                             for command_type, command, metadata in items]}}]
        else:
            jobs = [{"id": str(uuid.uuid4()), "type": command_type, "batch_index": index, "metadata": metadata,
                     "payload": to_payload(command)} for index, (command_type, command, metadata) in enumerate(items)]
        run_sql(conn, """
            INSERT INTO jobs (id, tenant_id, type, status, payload, request_id, batch_id, batch_index, metadata)
            SELECT r.id, :tenant, r.type, 'queued', r.payload, :rid, :batch_id, r.batch_index, r.metadata
              FROM json_to_recordset(CAST(:jobs AS json))
                   AS r(id uuid, type text, payload jsonb, batch_index int, metadata jsonb)
        """, {"tenant": tenant_id, "rid": request_id, "batch_id": batch_id, "jobs": json.dumps(jobs)})
        if idempotency_key is not None:
            run_sql(conn, """
                INSERT INTO idempotency_keys (tenant_id, key, fingerprint, batch_id)
                VALUES (:tenant, :key, :fingerprint, :batch_id)
            """, {"tenant": tenant_id, "key": idempotency_key, "fingerprint": request_fingerprint,
                   "batch_id": batch_id})
    job_ids = [j["id"] for j in jobs]
    counts = dict.fromkeys(_STATUSES, 0) | {"queued": len(jobs)}
    batch = {"id": batch_id, "atomic": atomic, "status": "queued", "size": len(items), "counts": counts,
             "job_ids": job_ids, "created_at": timestamp(created_at), "completed_at": None}
    return AcceptedBatch(batch, replayed=False), job_ids


_BATCH = f"""
    SELECT b.id::text AS id, b.atomic, b.size, b.created_at,
           array_agg(j.id::text ORDER BY j.batch_index) AS job_ids,
           {", ".join(f"count(*) FILTER (WHERE j.status = '{s}') AS {s}" for s in _STATUSES)},
           max(j.completed_at) AS last_completed_at
      FROM batches b JOIN jobs j ON j.batch_id = b.id
     WHERE b.id = CAST(:id AS uuid) {{tenant}}
     GROUP BY b.id
"""


def get_batch(batch_id: str, tenant_id: str | None, conn=None) -> dict | None:
    """The batch resource, its status and counts read from its jobs; None if the tenant has no such batch."""
    sql = _BATCH.format(tenant="" if tenant_id is None else "AND b.tenant_id = :tenant")
    if conn is None:
        with engine().connect() as own:
            row = run_sql(own, sql, {"id": batch_id, "tenant": tenant_id}).mappings().first()
    else:
        row = run_sql(conn, sql, {"id": batch_id, "tenant": tenant_id}).mappings().first()
    if row is None:
        return None
    counts = {s: row[s] for s in _STATUSES}
    unfinished = counts["queued"] + counts["running"]
    status = "completed" if unfinished == 0 else "queued" if counts["queued"] == len(row["job_ids"]) else "running"
    return {"id": row["id"], "atomic": row["atomic"], "status": status, "size": row["size"], "counts": counts,
            "job_ids": row["job_ids"], "created_at": timestamp(row["created_at"]),
            "completed_at": timestamp(row["last_completed_at"]) if status == "completed" else None}


def batch_jobs(batch_id: str, tenant_id: str | None, status: str | None, limit: int, cursor: str | None) -> dict:
    """The batch's jobs as job resources, in command order, `limit` at a time."""
    (after,) = (-1,) if cursor is None else cursors.BATCH_JOBS.decode(cursor)
    with engine().connect() as conn:
        rows = run_sql(conn, f"""
            SELECT {JOB_COLUMNS}, j.batch_index FROM jobs j
             WHERE j.batch_id = CAST(:id AS uuid) AND j.batch_index > :after
                   {'' if status is None else 'AND j.status = :status'}
                   {'' if tenant_id is None else 'AND j.tenant_id = :tenant'}
             ORDER BY j.batch_index LIMIT :n
        """, {"id": batch_id, "after": after, "status": status, "tenant": tenant_id, "n": limit + 1}).mappings().all()
    items = rows[:limit]
    next_cursor = cursors.BATCH_JOBS.encode(items[-1]["batch_index"]) if len(rows) > limit else None
    return {"items": [job_view(r) for r in items], "next_cursor": next_cursor}


def is_completed(batch: dict) -> bool:
    return batch["status"] == "completed"


def exists(batch_id: str, tenant_id: str | None) -> bool:
    """Whether the tenant has this batch (one index lookup, without reading its jobs)."""
    with engine().connect() as conn:
        return run_sql(conn, "SELECT 1 FROM batches b WHERE b.id = CAST(:id AS uuid)"
                       + ("" if tenant_id is None else " AND b.tenant_id = :tenant"),
                       {"id": batch_id, "tenant": tenant_id}).first() is not None
