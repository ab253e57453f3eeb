"""The write side's SQL: every statement a command runs, on one connection.

A `WalletStore` never commits; the caller's transaction is the unit of work,
so balances, journal rows, outbox rows and the job's status commit together.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import Connection, CursorResult
from sqlalchemy.exc import DBAPIError, IntegrityError

from app.adapters.db import json_rows, run_sql
from app.config import settings
from app.domain.errors import (
    BusinessRuleViolation, CaptureExceedsHold, ConcurrencyConflict, InsufficientFunds, ReversalExceedsOriginal,
    VersionMismatch,
)
from app.domain.holds import Hold
from app.domain.ledger import Entry, Limits, OriginalEntry, Wallet


# What `expect_rows` (migration 0007) raises when a checked write matched the wrong number of rows.
_CONFLICT = "40001"  # serialization_failure: a wallet changed since it was read
_DEADLOCK = "40P01"  # two commands locked the same wallets in opposite orders: retry like a conflict
_NOT_RUNNING = "WJ001"  # the job is final already: another delivery applied it
# CHECK constraints that are a rule of money: a command the worker let through and the database
# refused for one of them is that business rejection, not a fault to retry.
_BUSINESS_CONSTRAINTS = {
    "ck_wallets_balance_within_overdraft": InsufficientFunds,
    "ck_journal_entries_reversal_within_amount": ReversalExceedsOriginal,
    "ck_holds_capture_within_amount": CaptureExceedsHold,
}


def business_error_of(error: IntegrityError) -> BusinessRuleViolation | None:
    """The business rejection a constraint violation stands for, or None (then it is a bug)."""
    diag = getattr(error.orig, "diag", None)
    kind = _BUSINESS_CONSTRAINTS.get(getattr(diag, "constraint_name", None) or "")
    if kind is None:
        return None
    return kind(f"refused by the ledger's constraint {diag.constraint_name}")


class JobNotRunning(Exception):
    """The job was no longer running when its command tried to finish it."""


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    tenant_id: str
    type: str
    payload: dict
    request_id: str
    lost_deliveries: int
    batch_id: str | None = None  # the bulk submission it came in
    if_match_version: int | None = None  # sent with If-Match: its wallet must still be at this version
    metadata: dict = field(default_factory=dict)  # the client's labels on the command


# The claim is bookkeeping, so its commit need not wait for the WAL flush
# (synchronous_commit off for this transaction only): if PostgreSQL crashed
# before the flush, the job would just read queued again and be re-enqueued.
_CLAIMED = ("id::text AS id, tenant_id, type, payload, request_id, lost_deliveries, batch_id::text AS batch_id,"
            " if_match_version, metadata")

# The job's task claims it; a canceled or final job is not claimed (the task then does nothing).
_CLAIM = f"""
    UPDATE jobs
       SET status = 'running',
           attempts = attempts + 1,
           -- a delivery that finds the job already running means the last one died
           lost_deliveries = lost_deliveries + CASE WHEN status = 'running' THEN 1 ELSE 0 END,
           updated_at = now()
      FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
     WHERE id = :id AND status IN ('queued', 'running')
 RETURNING {_CLAIMED}
"""

# The jobs of a wallet.execute_batch task, claimed together, returned in batch order.
_CLAIM_MANY = f"""
    WITH claimed AS (
        UPDATE jobs
           SET status = 'running',
               attempts = attempts + 1,
               lost_deliveries = lost_deliveries + CASE WHEN status = 'running' THEN 1 ELSE 0 END,
               updated_at = now()
          FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
         WHERE id = ANY(CAST(:ids AS uuid[])) AND status IN ('queued', 'running')
     RETURNING {_CLAIMED}, batch_index)
    SELECT id, tenant_id, type, payload, request_id, lost_deliveries, batch_id, if_match_version, metadata
      FROM claimed ORDER BY batch_index, id
"""

# A command's rows travel as JSON, one parameter per row or set of rows (db.json_rows),
# read back with json_populate_record(set).
_SAVE_WALLET = """
    UPDATE wallets AS w
       SET balance = r.balance, version = r.version, status = r.status,
           per_transaction_limit = r.per_transaction_limit, daily_debit_limit = r.daily_debit_limit,
           overdraft_limit = r.overdraft_limit, debit_day = r.debit_day, debited_today = r.debited_today, updated_at = r.updated_at
      FROM json_populate_record(NULL::wallets, CAST(:row AS json)) AS r
     WHERE w.id = r.id AND w.version = r.version - 1
 RETURNING 1
"""

# Many wallets at once (a batch chunk): each must still be at the version it was read at.
_SAVE_WALLETS = """
    UPDATE wallets AS w
       SET balance = r.balance, version = r.version, debit_day = r.debit_day, debited_today = r.debited_today,
           updated_at = r.updated_at
      FROM json_to_recordset(CAST(:rows AS json)) AS r(id uuid, read_version bigint, balance numeric, version bigint,
                                                     debit_day date, debited_today numeric, updated_at timestamptz)
     WHERE w.id = r.id AND w.version = r.read_version
 RETURNING 1
"""

_ENTRY_COLUMNS = ("id, job_id, item, tenant_id, type, currency, amount, wallet_id, counterparty_wallet_id, balance_after,"
                  " counterparty_balance_after, reference, request_id, created_at, reverses_entry_id, hold_id, metadata")
_INSERT_ENTRY = f"""
    INSERT INTO journal_entries ({_ENTRY_COLUMNS})
    SELECT {_ENTRY_COLUMNS} FROM json_populate_record(NULL::journal_entries, CAST(:row AS json))
"""
_INSERT_ENTRIES = f"""
    INSERT INTO journal_entries ({_ENTRY_COLUMNS})
    SELECT {_ENTRY_COLUMNS} FROM json_populate_recordset(NULL::journal_entries, CAST(:rows AS json))
"""

_POSTING_COLUMNS = "entry_id, job_id, item, account, wallet_id, currency, amount, balance_after, wallet_version, created_at"
_INSERT_POSTINGS = f"""
    INSERT INTO postings ({_POSTING_COLUMNS})
    SELECT {_POSTING_COLUMNS} FROM json_populate_recordset(NULL::postings, CAST(:rows AS json))
"""

# Outbox ids follow the events' order in the command (the relay publishes in id order).
_INSERT_EVENTS = """
    INSERT INTO outbox (aggregatetype, aggregateid, type, payload, created_at)
    SELECT 'wallet', e.payload->>'wallet_id', e.payload->>'event_type', e.payload, now()
      FROM jsonb_array_elements(CAST(:events AS jsonb)) WITH ORDINALITY AS e(payload, n)
     ORDER BY e.n
"""

# `held` counts active holds not yet past expiry: an expired hold stops
# reserving money at expires_at, before the sweeper marks it. `db_now` is the
# instant that decided it, the command's clock (WalletStore.now).
_LOAD_WALLETS = """
    SELECT w.id::text AS id, w.tenant_id, w.user_id, w.currency, w.balance, w.status, w.version,
           w.per_transaction_limit, w.daily_debit_limit, w.overdraft_limit, w.debit_day, w.debited_today,
           coalesce((SELECT sum(h.amount) FROM holds h
                      WHERE h.wallet_id = w.id AND h.status = 'active' AND h.expires_at > now()), 0) AS held,
           now() AS db_now
      FROM wallets w WHERE w.id = ANY(CAST(:ids AS uuid[]))
"""

# A wallet as clients see it: `held` is what active, unexpired holds reserve.
WALLET_VIEW_COLUMNS = """w.id, w.tenant_id, w.user_id, w.currency, w.balance, w.status, w.version,
    w.per_transaction_limit, w.daily_debit_limit, w.overdraft_limit, w.metadata, w.created_at, w.updated_at,
    coalesce((SELECT sum(h.amount) FROM holds h
               WHERE h.wallet_id = w.id AND h.status = 'active' AND h.expires_at > now()), 0) AS held"""

_HOLD_COLUMNS = "id::text AS id, wallet_id::text AS wallet_id, amount, captured_amount, status, expires_at, reference"

_FINISH = """
    UPDATE jobs
       SET status = :status, result = CAST(:result AS jsonb), error = CAST(:error AS jsonb),
           attempts = attempts + :extra_attempts, updated_at = now(), completed_at = now()
     WHERE id = :id AND status = 'running'
 RETURNING extract(epoch FROM completed_at - created_at) AS seconds
"""

# Many jobs made final at once, each with its own outcome (a batch chunk).
_FINISH_MANY = """
    UPDATE jobs AS j
       SET status = r.status, result = r.result, error = r.error, attempts = j.attempts + :extra_attempts,
           updated_at = now(), completed_at = now()
      FROM json_to_recordset(CAST(:outcomes AS json)) AS r(id uuid, status text, result jsonb, error jsonb)
     WHERE j.id = r.id AND j.status = 'running'
 RETURNING j.id::text AS id, extract(epoch FROM j.completed_at - j.created_at) AS seconds
"""

# The job's final UPDATE after the command's checked writes: the checks run
# first, in order (wallets in id order), so the wallet rows are locked before
# the journal and outbox inserts (unreferenced CTEs, run after the main query)
# take their ids; a job no longer running aborts the statement too.
_FINISH_CHECKED = """
    job AS ({finish})
    SELECT {checks} AND expect_rows((SELECT count(*) FROM job), {jobs}, '{not_running}', 'a job is final already'),
           (SELECT json_object_agg(id, seconds) FROM job)
"""


class WalletStore:
    """SQL of the command path, bound to one connection.

    A command's writes are kept and sent with the job's final UPDATE as one
    statement. With `one_statement=True` the connection is in autocommit and
    that statement is the whole transaction (one round trip, no BEGIN or
    COMMIT): the command may read, but any write sent on its own raises.
    """

    def __init__(self, conn: Connection, *, one_statement: bool = False,
                 expected_versions: dict[str, int] | None = None):
        self.conn = conn
        self.one_statement = one_statement
        # If-Match: wallet id -> the version it must be read at (else VersionMismatch, never retried)
        self.expected_versions = expected_versions or {}
        self._pending: list[tuple[str, dict]] = []
        self._checks: list[str] = []  # expect_rows(...) over pending statements
        self._now: datetime | None = None

    def _run(self, sql: str, params: dict) -> CursorResult:
        return run_sql(self.conn, sql, params)

    def _write(self, sql: str, params: dict) -> CursorResult:
        """A write sent on its own: only inside a transaction, never in one-statement mode."""
        if self.one_statement:
            raise RuntimeError("a one-statement command may not send a write on its own")
        return self._run(sql, params)

    def _run_checked(self, sql: str, params: dict) -> CursorResult:
        """Run a statement holding expect_rows checks; a failed check becomes a domain exception."""
        try:
            return self._run(sql, params)
        except DBAPIError as e:
            sqlstate = getattr(e.orig, "sqlstate", None)
            if sqlstate in (_CONFLICT, _DEADLOCK):
                raise ConcurrencyConflict(e.orig.diag.message_primary or "a wallet changed") from None
            if sqlstate == _NOT_RUNNING:
                raise JobNotRunning() from None
            raise

    # the clock --------------------------------------------------------------

    def now(self) -> datetime:
        """The command's clock: the database's now() at its first read, in UTC.

        Inside a transaction that is the transaction's start, the same now()
        its SQL sees. Hold expiry, the day daily limits count and every
        timestamp a command writes come from here, never from the worker's
        clock, so they agree with the statements that compare expires_at with
        now() (the held amount, due holds, the audit). Read with the wallets
        or the hold when the command reads them; otherwise one SELECT.
        """
        if self._now is None:
            self._saw_clock(self._run("SELECT now()", {}).scalar())
        return self._now

    def _saw_clock(self, db_now: datetime) -> None:
        if self._now is None:
            self._now = db_now.astimezone(timezone.utc)

    # jobs -----------------------------------------------------------------

    def claim_job(self, job_id: str) -> ClaimedJob | None:
        """Mark a job running and count the try; None when it is already final."""
        row = self._run(_CLAIM, {"id": job_id}).mappings().first()
        return ClaimedJob(**row) if row else None

    def finish_job(self, job_id: str, *, status: str, result: dict | None = None,
                   error: dict | None = None, extra_attempts: int = 0) -> float | None:
        """Make a running job final; returns seconds since it was accepted, None if another delivery did it."""
        params = {
            "id": job_id, "status": status, "extra_attempts": extra_attempts,
            "result": json.dumps(result) if result is not None else None,
            "error": json.dumps(error) if error is not None else None,
        }
        if not self._pending:
            seconds = self._run(_FINISH, params).scalar()
            return None if seconds is None else float(seconds)
        # With writes, a job no longer running must abort the statement: in autocommit nothing else would undo them.
        try:
            seconds = self._finish_checked(_FINISH.replace("RETURNING", "RETURNING id::text AS id,"), params, 1)
        except JobNotRunning:
            return None
        return seconds[job_id]

    def finish_jobs(self, outcomes: list[dict], extra_attempts: int = 0) -> dict[str, float]:
        """Make many running jobs final ({"id", "status", "result", "error"} each) with the pending writes.

        Seconds since each was accepted, by job id. Raises JobNotRunning (and
        nothing applies) if any of them is no longer running: another delivery
        finished it.
        """
        params = {"outcomes": json.dumps(outcomes, default=str), "extra_attempts": extra_attempts}
        return self._finish_checked(_FINISH_MANY, params, len(outcomes))

    def _finish_checked(self, finish: str, params: dict, jobs: int) -> dict[str, float]:
        """The jobs' final UPDATE after every pending write, in one statement; aborts unless `jobs` rows match."""
        sql, params = self._with_pending(_FINISH_CHECKED.format(
            finish=finish, checks=" AND ".join(self._checks) or "true", jobs=jobs, not_running=_NOT_RUNNING),
            params, last_cte=True)
        seconds = self._run_checked(sql, params).one()[1] or {}
        return {job_id: float(value) for job_id, value in seconds.items()}

    def claim_jobs(self, job_ids: list[str]) -> list[ClaimedJob]:
        """Claim the jobs of a batch chunk that are not final yet (in batch order)."""
        return [ClaimedJob(**row) for row in self._run(_CLAIM_MANY, {"ids": job_ids}).mappings()]

    def running_jobs(self, job_ids: list[str]) -> set[str]:
        """Those of the jobs still running (not finished by another delivery)."""
        return set(self._run("SELECT id::text FROM jobs WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'running'",
                             {"ids": job_ids}).scalars())

    # A released job's task comes back within the retry backoff's cap: until then (plus the sweeper's own
    # delay) it is not stranded, so the sweeper does not publish a second task beside the pending retry
    # (whose claim would then count a lost delivery that never happened).
    _RELEASE = """
        UPDATE jobs SET status = 'queued', attempts = attempts + :extra, updated_at = now(),
               enqueued_at = now() + make_interval(secs => :retry_within_s)
         WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'running'
    """

    def release_jobs(self, job_ids: list[str], extra_attempts: int = 0) -> None:
        """Put running jobs back to queued before their task is retried on purpose."""
        self._run(self._RELEASE, {"ids": job_ids, "extra": extra_attempts,
                                  "retry_within_s": settings().task_retry_backoff_max_s})

    def release_job(self, job_id: str, extra_attempts: int = 0) -> None:
        """Put a running job back to queued before it is retried on purpose."""
        self.release_jobs([job_id], extra_attempts)

    def job_status(self, job_id: str) -> str | None:
        return self._run(("SELECT status FROM jobs WHERE id = :id"), {"id": job_id}).scalar()

    # wallets --------------------------------------------------------------

    def load_wallets(self, ids: list[str], *, lock: bool = False) -> dict[str, Wallet]:
        """The wallets that exist among `ids`; with `lock`, their rows locked in id order until the commit.

        A batch chunk locks what it reads: chunks touching hundreds of wallets
        each would otherwise conflict with almost every concurrent chunk and
        retry without end; locked in one order they queue and never deadlock.
        """
        sql = _LOAD_WALLETS + " ORDER BY w.id FOR UPDATE OF w" if lock else _LOAD_WALLETS
        wallets = {}
        for r in self._run(sql, {"ids": ids}).mappings():
            r = dict(r)
            self._saw_clock(r.pop("db_now"))
            r["limits"] = Limits(r.pop("per_transaction_limit"), r.pop("daily_debit_limit"), r.pop("overdraft_limit"))
            expected = self.expected_versions.get(r["id"])
            if expected is not None and r["version"] != expected:
                raise VersionMismatch(f"wallet {r['id']} is at version {r['version']}, not {expected} as If-Match "
                                      f"required: it changed after the command was accepted")
            wallets[r["id"]] = Wallet(**r)
        return wallets

    def wallet_row(self, wallet_id: str) -> dict:
        """The wallet as clients see it, read inside this transaction (after this command's writes)."""
        self.flush()
        return dict(self._run((f"SELECT {WALLET_VIEW_COLUMNS} FROM wallets w WHERE w.id = :id"),
                                      {"id": wallet_id}).mappings().one())

    def insert_wallet(self, wallet: Wallet, now: datetime, metadata: dict) -> bool:
        """Create a wallet; False if one with that id exists (an earlier delivery)."""
        res = self._write(("""
            INSERT INTO wallets (id, tenant_id, user_id, currency, balance, status, version, metadata, created_at,
                                 updated_at)
            VALUES (:id, :tenant_id, :user_id, :currency, :balance, :status, :version, CAST(:metadata AS jsonb), :now,
                    :now)
            ON CONFLICT (id) DO NOTHING
        """), {"id": wallet.id, "tenant_id": wallet.tenant_id, "user_id": wallet.user_id, "currency": wallet.currency,
               "balance": wallet.balance, "status": wallet.status, "version": wallet.version,
               "metadata": json.dumps(metadata), "now": now})
        return res.rowcount == 1

    def save_wallet(self, wallet: Wallet, now: datetime) -> None:
        """Write a wallet's new state if nobody changed it since it was read (optimistic lock).

        Sent with the job's final UPDATE; if the version moved meanwhile, that
        statement fails as a ConcurrencyConflict and nothing of the command applies.
        """
        n = self._defer(_SAVE_WALLET, {"row": json_rows({
            "id": wallet.id, "balance": wallet.balance, "version": wallet.version, "status": wallet.status,
            "per_transaction_limit": wallet.limits.per_transaction, "daily_debit_limit": wallet.limits.daily_debit,
            "overdraft_limit": wallet.limits.overdraft, "debit_day": wallet.debit_day, "debited_today": wallet.debited_today, "updated_at": now,
        }), "conflict": f"wallet {wallet.id} changed since version {wallet.version - 1}"})
        self._checks.append(f"expect_rows((SELECT count(*) FROM w{n}), 1, '{_CONFLICT}', :d{n}_conflict)")

    def save_wallets(self, read_versions: dict[str, int], wallets: list[Wallet], now: datetime) -> None:
        """Write many wallets' money state at once (a batch chunk), each only if still at the version read.

        Sent with the jobs' final UPDATE; one wallet moved meanwhile fails the
        whole statement as a ConcurrencyConflict and nothing applies.
        """
        if not wallets:
            return
        rows = [{"id": w.id, "read_version": read_versions[w.id], "balance": w.balance, "version": w.version,
                 "debit_day": w.debit_day, "debited_today": w.debited_today, "updated_at": now}
                for w in sorted(wallets, key=lambda w: w.id)]
        n = self._defer(_SAVE_WALLETS, {"rows": json_rows(rows),
                                        "conflict": f"one of {len(rows)} wallets changed since it was read"})
        self._checks.append(f"expect_rows((SELECT count(*) FROM w{n}), {len(rows)}, '{_CONFLICT}', :d{n}_conflict)")

    # holds ----------------------------------------------------------------

    def load_hold(self, hold_id: str) -> Hold | None:
        row = self._run(f"SELECT {_HOLD_COLUMNS}, now() AS db_now FROM holds WHERE id = CAST(:id AS uuid)",
                        {"id": hold_id}).mappings().first()
        if row is None:
            return None
        row = dict(row)
        self._saw_clock(row.pop("db_now"))
        return Hold(**row)

    def hold_row(self, hold_id: str) -> dict:
        self.flush()
        return dict(self._run(("SELECT * FROM holds WHERE id = :id"), {"id": hold_id}).mappings().one())

    def due_holds(self, limit: int) -> list[str]:
        """Ids of active holds past their expiry."""
        return self._run(
            "SELECT id::text FROM holds WHERE status = 'active' AND expires_at <= now() ORDER BY expires_at LIMIT :n",
            {"n": limit}).scalars().all()

    def insert_hold(self, hold: Hold, *, job: ClaimedJob, currency: str, now: datetime) -> None:
        self._write(("""
            INSERT INTO holds (id, job_id, tenant_id, wallet_id, currency, amount, captured_amount, status,
                               expires_at, reference, metadata, created_at, updated_at)
            VALUES (:id, :job_id, :tenant_id, :wallet_id, :currency, :amount, 0, :status, :expires_at, :reference,
                    CAST(:metadata AS jsonb), :now, :now)
        """), {"id": hold.id, "job_id": job.id, "tenant_id": job.tenant_id, "wallet_id": hold.wallet_id,
               "currency": currency, "amount": hold.amount, "status": hold.status, "expires_at": hold.expires_at,
               "reference": hold.reference, "metadata": json.dumps(job.metadata), "now": now})

    def save_hold(self, hold: Hold, now: datetime) -> None:
        """Settle an active hold (captured, voided, expired); conflicts if it was settled meanwhile."""
        res = self._write(("""
            UPDATE holds SET status = :status, captured_amount = :captured, updated_at = :now, released_at = :now
             WHERE id = :id AND status = 'active'
        """), {"id": hold.id, "status": hold.status, "captured": hold.captured_amount, "now": now})
        if res.rowcount != 1:
            raise ConcurrencyConflict(f"hold {hold.id} changed since it was read")

    # journal and outbox ---------------------------------------------------

    def load_entry(self, entry_id: str) -> OriginalEntry | None:
        """An entry and its postings, as a reversal needs them."""
        row = self._run(("""
            SELECT id::text AS id, type, currency, amount, reversed_amount, wallet_id::text AS wallet_id,
                   counterparty_wallet_id::text AS counterparty_wallet_id
              FROM journal_entries WHERE id = CAST(:id AS uuid)
        """), {"id": entry_id}).mappings().first()
        if row is None:
            return None
        postings = self._run(("SELECT account, amount FROM postings WHERE entry_id = CAST(:id AS uuid)"
                                          " ORDER BY id"), {"id": entry_id}).all()
        return OriginalEntry(**row, postings=tuple((a, amt) for a, amt in postings))

    def add_reversed(self, entry_id: str, amount, expected_reversed) -> None:
        """Count a reversal against its original (optimistic: the amount read must be unchanged)."""
        res = self._write(("""
            UPDATE journal_entries SET reversed_amount = reversed_amount + :amount
             WHERE id = CAST(:id AS uuid) AND reversed_amount = :expected
        """), {"id": entry_id, "amount": amount, "expected": expected_reversed})
        if res.rowcount != 1:
            raise ConcurrencyConflict(f"transaction {entry_id} was reversed meanwhile")

    def record_entry(self, entry: Entry, *, job: ClaimedJob, now: datetime, hold_id: str | None = None) -> str:
        """Write a journal entry and its postings (with the job's final status); returns the transaction id."""
        entry_id = str(uuid.uuid4())
        self._defer(_INSERT_ENTRY, {"row": json_rows(_entry_row(entry, entry_id, job, 0, now, hold_id))})
        self._defer(_INSERT_POSTINGS, {"rows": json_rows(_posting_rows(entry, entry_id, job, 0, now))})
        return entry_id

    def record_entries(self, recorded: list[tuple[Entry, str, ClaimedJob, int, dict]], now: datetime) -> None:
        """Write many journal entries and their postings in two set-based inserts (a batch chunk).

        Each is (entry, its transaction id, its job, its item: the command's index
        in an atomic batch job, 0 for a job of its own, and its command's metadata).
        """
        if not recorded:
            return
        self._defer(_INSERT_ENTRIES, {"rows": json_rows([
            _entry_row(entry, entry_id, job, item, now, metadata=metadata)
            for entry, entry_id, job, item, metadata in recorded])})
        self._defer(_INSERT_POSTINGS, {"rows": json_rows([
            row for entry, entry_id, job, item, _ in recorded for row in _posting_rows(entry, entry_id, job, item, now)])})

    def add_events(self, events: list[dict]) -> None:
        """Put events in the outbox (with the job's final status); the relay publishes them after the commit.

        A statement trigger NOTIFYs the relay (migration 0005), so it wakes at commit, not at its next poll.
        """
        self._defer(_INSERT_EVENTS, {"events": json.dumps(events)})

    # one round trip for the writes of a command ------------------------------

    def _defer(self, sql: str, params: dict) -> int:
        """Keep a write to send with the job's final UPDATE: one statement instead of several.

        Returns n: its CTE is `w{n}` and its parameters `d{n}_<name>`. Wallet saves are checked
        there (expect_rows); the journal, postings and outbox inserts run after
        the checks, so outbox ids are allocated after the wallet rows are locked.
        """
        n = len(self._pending)
        renamed = {f"d{n}_{k}": v for k, v in params.items()}
        for key in sorted(params, key=len, reverse=True):
            sql = sql.replace(f":{key}", f":d{n}_{key}")
        self._pending.append((sql, renamed))
        return n

    def _with_pending(self, statement: str, params: dict, last_cte: bool = False) -> tuple[str, dict]:
        """The statement preceded by the deferred writes as data-modifying CTEs.

        With `last_cte`, `statement` starts with one more CTE of its own.
        """
        if not self._pending:
            return (f"WITH {statement}" if last_cte else statement), params
        ctes = ",\n".join(f"w{i} AS ({sql})" for i, (sql, _) in enumerate(self._pending))
        merged = dict(params)
        for _, p in self._pending:
            merged.update(p)
        self._pending.clear()
        self._checks.clear()
        return f"WITH {ctes}{',' if last_cte else ''}\n{statement}", merged

    def flush(self) -> None:
        """Send the deferred writes now (before a read-back, or for a change that does not finish a job)."""
        if not self._pending:
            return
        if self.one_statement:
            raise RuntimeError("a one-statement command may not send its writes before the job's final UPDATE")
        checks = " AND ".join(self._checks) or "true"
        sql, params = self._with_pending(f"SELECT {checks}", {})
        self._run_checked(sql, params)


def _entry_row(entry: Entry, entry_id: str, job: ClaimedJob, item: int, now: datetime,
               hold_id: str | None = None, metadata: dict | None = None) -> dict:
    wallet_after = entry.wallet_after(entry.wallet_id)
    counterparty_after = entry.wallet_after(entry.counterparty_wallet_id)
    return {
        "id": entry_id, "job_id": job.id, "item": item, "tenant_id": job.tenant_id, "type": entry.type,
        "currency": entry.currency, "amount": entry.amount, "wallet_id": entry.wallet_id,
        "counterparty_wallet_id": entry.counterparty_wallet_id,
        "balance_after": wallet_after.balance if wallet_after else None,
        "counterparty_balance_after": counterparty_after.balance if counterparty_after else None,
        "reference": entry.reference, "request_id": job.request_id, "created_at": now,
        "reverses_entry_id": entry.reverses_entry_id, "hold_id": hold_id,
        "metadata": job.metadata if metadata is None else metadata,
    }


def _posting_rows(entry: Entry, entry_id: str, job: ClaimedJob, item: int, now: datetime) -> list[dict]:
    return [{
        "entry_id": entry_id, "job_id": job.id, "item": item, "account": p.account, "currency": entry.currency,
        "amount": p.amount, "created_at": now,
        "wallet_id": p.wallet_after.id if p.wallet_after else None,
        "balance_after": p.wallet_after.balance if p.wallet_after else None,
        "wallet_version": p.wallet_after.version if p.wallet_after else None,
    } for p in entry.postings]
