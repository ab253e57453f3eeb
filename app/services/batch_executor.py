"""Executes the jobs of a bulk submission, a chunk at a time, each exactly once.

A `wallet.execute_batch` task carries the ids of up to 100 jobs: the commands
of an independent batch (a job each), or the one job of an atomic batch. The
chunk is claimed in one statement; then, in one transaction, its wallets are
read and locked in id order (one statement), every command is planned in
memory in batch order (app.domain.batches), and everything is written in one
more statement: the wallets (each only if still at the version read), the
journal entries, postings and outbox rows of the accepted commands, and every
job's outcome (only if still running, so a second delivery applies nothing).

Why lock: a chunk of 100 transfers touches up to 200 wallets, so two chunks
running at once almost always share one; with optimistic checks alone they
would abort each other over and over. Locked in one order, overlapping chunks
queue behind each other and cannot deadlock, and the version checks stay as
the guard against any writer that does not lock (a single command). A
conflict or deadlock still rolls the chunk back to be planned again.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from app.adapters.db import autocommit, engine
from app.adapters.store import ClaimedJob, JobNotRunning, WalletStore, business_error_of
from app.config import settings
from app.domain import batches, commands, events
from app.domain.errors import AttemptsExhausted, BusinessRuleViolation, ConcurrencyConflict
from app.observability import metrics
from app.services import executor
from app.services.handlers import entry_result

log = logging.getLogger(__name__)


@dataclass
class _Chunk:
    """What one attempt writes: wallets, entries, events, and each job's outcome."""

    read_versions: dict[str, int]
    changed: dict = field(default_factory=dict)  # wallet id -> Wallet after the chunk
    recorded: list = field(default_factory=list)  # (entry, transaction id, job, item, metadata)
    events: list = field(default_factory=list)
    outcomes: list = field(default_factory=list)  # {"id", "status", "result", "error"}


def atomic_commands(job: ClaimedJob) -> list:
    return [commands.from_payload(c["type"], {k: v for k, v in c.items() if k not in ("type", "metadata")})
            for c in job.payload["commands"]]


def _metadata(job: ClaimedJob, item: int | None) -> dict:
    """The metadata of a job's command: an atomic batch's item carries its own."""
    return job.metadata if item is None else job.payload["commands"][item].get("metadata", {})


def _commands(job: ClaimedJob) -> list:
    """The job's command(s): an atomic batch's in order, or the one of a job of its own."""
    return atomic_commands(job) if job.type == batches.BATCH else [commands.from_payload(job.type, job.payload)]


def _error(error: BusinessRuleViolation) -> dict:
    body = {"code": error.code, "message": error.message}
    if isinstance(error, batches.ItemRejected):
        body["index"] = error.index
    return body


def _record(chunk: _Chunk, job: ClaimedJob, entry, item: int | None, now: datetime) -> dict:
    transaction_id = str(uuid.uuid4())
    metadata = _metadata(job, item)
    chunk.recorded.append((entry, transaction_id, job, item or 0, metadata))
    chunk.events.append(events.entry_recorded(entry, transaction_id, now, job.request_id, job.id,
                                              batch_id=job.batch_id, item=item, metadata=metadata))
    for wallet in entry.wallets_after:
        chunk.changed[wallet.id] = wallet
    return entry_result(entry, transaction_id, now, metadata)


def _plan(jobs: list[ClaimedJob], store: WalletStore) -> _Chunk:
    """Every job's command(s) against the wallets as read (and locked) now, in batch order.

    The database's clock (store.now()) dates the chunk and names the day its daily limits count.
    """
    planned_commands = {job.id: _commands(job) for job in jobs}
    wallet_ids = {w for cmds in planned_commands.values() for command in cmds for w in batches.wallet_ids(command)}
    wallets = store.load_wallets(sorted(wallet_ids), lock=True)
    chunk = _Chunk(read_versions={w.id: w.version for w in wallets.values()})
    now = store.now()
    today = now.date()
    for job in jobs:
        if job.type == batches.BATCH:
            try:
                entries = batches.plan_atomic(wallets, planned_commands[job.id], today)
            except batches.ItemRejected as rejected:
                chunk.outcomes.append({"id": job.id, "status": "failed", "result": None, "error": _error(rejected)})
                continue
            result = {"transactions": [_record(chunk, job, entry, item, now) for item, entry in enumerate(entries)]}
            chunk.outcomes.append({"id": job.id, "status": "succeeded", "result": result, "error": None})
            continue
        (planned,) = batches.plan(wallets, planned_commands[job.id], today)
        if planned.error is not None:
            chunk.outcomes.append({"id": job.id, "status": "failed", "result": None, "error": _error(planned.error)})
        else:
            result = _record(chunk, job, planned.entry, None, now)
            chunk.outcomes.append({"id": job.id, "status": "succeeded", "result": result, "error": None})
    return chunk


def _apply(jobs: list[ClaimedJob], conflicts: int) -> tuple[_Chunk, dict[str, float]]:
    """Lock and read the wallets, plan, and write the whole chunk in one more statement, in one transaction."""
    with engine().begin() as conn:
        store = WalletStore(conn)
        chunk = _plan(jobs, store)
        store.save_wallets(chunk.read_versions, list(chunk.changed.values()), store.now())
        store.record_entries(chunk.recorded, store.now())
        if chunk.events:
            store.add_events(chunk.events)
        return chunk, store.finish_jobs(chunk.outcomes, extra_attempts=conflicts)


def execute_chunk(job_ids: list[str]) -> dict[str, int]:
    """Apply the chunk's jobs once; counts by outcome. Raises executor.StillContended to be retried."""
    s = settings()
    with autocommit() as conn:
        jobs = WalletStore(conn).claim_jobs(job_ids)
    counts = {"succeeded": 0, "failed": 0, "already_final": len(job_ids) - len(jobs)}
    lost = [j for j in jobs if j.lost_deliveries >= s.max_lost_deliveries]
    for job in lost:  # a chunk that keeps killing its worker: its jobs fail rather than loop
        outcome = executor.fail_claimed(job, AttemptsExhausted(
            f"the worker running this command was lost {job.lost_deliveries} times"), conflicts=0)
        counts[outcome.status if outcome.status in counts else "already_final"] += 1
    jobs = [j for j in jobs if j not in lost]
    conflicts = 0
    for attempt in range(s.conflict_retries_in_task + 1):
        if not jobs:
            return counts
        try:
            started = time.perf_counter()
            chunk, seconds = _apply(jobs, conflicts)
        except ConcurrencyConflict:  # a wallet moved since it was read: plan the chunk again from fresh reads
            conflicts += 1
            time.sleep(executor.backoff_seconds(attempt))
            continue
        except JobNotRunning:  # another delivery finished some of them: go on with the others
            with autocommit() as conn:
                running = WalletStore(conn).running_jobs([j.id for j in jobs])
            counts["already_final"] += len(jobs) - len(running)
            jobs = [j for j in jobs if j.id in running]
            continue
        except IntegrityError as error:
            # The database refused a write the plan allowed (a rule of money it enforces).
            log.warning("a batch chunk of %d jobs was refused by a constraint", len(jobs), exc_info=True)
            for job in jobs:
                status = _after_refusal(job, error)
                counts[status if status in counts else "already_final"] += 1
            return counts
        _report(jobs, chunk, seconds, conflicts, time.perf_counter() - started)
        for outcome in chunk.outcomes:
            counts[outcome["status"]] += 1
        return counts
    with autocommit() as conn:
        WalletStore(conn).release_jobs([j.id for j in jobs], extra_attempts=conflicts)
    metrics.shared().inc("wallet_optimistic_lock_conflicts_total", amount=conflicts).send()
    raise executor.StillContended(f"{conflicts} optimistic-lock conflicts on a chunk of {len(jobs)} jobs")


def _after_refusal(job: ClaimedJob, error: IntegrityError) -> str:
    """Which command broke the rule is unknown in a chunk: a job of its own runs alone, where a refusal
    names its command; an atomic batch fails with the rule (nothing of it applied), or the error is a bug."""
    if job.type != batches.BATCH:
        return executor.run_claimed(job).status
    business = business_error_of(error)
    if business is None:
        raise error
    return executor.fail_claimed(job, business, conflicts=0).status


def release(job_ids: list[str]) -> None:
    """Hand the chunk's running jobs back to the queue before a deliberate retry."""
    with autocommit() as conn:
        WalletStore(conn).release_jobs(job_ids)


def fail_unexpected(job_ids: list[str]) -> None:
    """End the chunk's unfinished jobs failed INTERNAL_ERROR (a bug keeps raising)."""
    for job_id in job_ids:
        executor.fail_unexpected(job_id)


def _report(jobs: list[ClaimedJob], chunk: _Chunk, seconds: dict[str, float], conflicts: int, took: float) -> None:
    by_id = {j.id: j for j in jobs}
    m = metrics.shared()
    for outcome in chunk.outcomes:
        job = by_id[outcome["id"]]
        code = (outcome["error"] or {}).get("code", "")
        m.inc("wallet_jobs_completed_total", job.type, outcome["status"], code)
        if job.id in seconds:
            m.observe("wallet_job_duration_seconds", seconds[job.id], job.type)
    if conflicts:
        m.inc("wallet_optimistic_lock_conflicts_total", amount=conflicts)
    m.send()
    log.info("batch chunk applied", extra={
        "batch_id": jobs[0].batch_id, "jobs": len(jobs), "entries": len(chunk.recorded),
        "failed": sum(o["status"] == "failed" for o in chunk.outcomes), "conflicts": conflicts,
        "seconds": round(took, 4)})
