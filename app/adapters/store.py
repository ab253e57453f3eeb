"""The write side's SQL: every statement a command runs, on one connection.

A `WalletStore` never commits; the caller's transaction is the unit of work,
so balances, journal rows, outbox rows and the job's status commit together.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, CursorResult

from app.adapters.db import run_sql

from app.domain.errors import ConcurrencyConflict
from app.domain.holds import Hold
from app.domain.ledger import Entry, Limits, OriginalEntry, Wallet


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    tenant_id: str
    type: str
    payload: dict
    request_id: str
    lost_deliveries: int


# The claim is bookkeeping, so its commit need not wait for the WAL flush
# (synchronous_commit off for this transaction only): if PostgreSQL crashed
# before the flush, the job would just read queued again and be re-enqueued.
_CLAIMED = "id::text AS id, tenant_id, type, payload, request_id, lost_deliveries"

# A job's own task claims it: claimed_by = the job id puts it on the per-job path for good.
_CLAIM = f"""
    UPDATE jobs
       SET status = 'running',
           attempts = attempts + 1,
           -- a delivery that finds the job already running means the last one died
           lost_deliveries = lost_deliveries + CASE WHEN status = 'running' THEN 1 ELSE 0 END,
           claimed_by = id::text,
           updated_at = now()
      FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
     WHERE id = :id AND status IN ('queued', 'running')
 RETURNING {_CLAIMED}
"""

# A batch task claims up to :limit jobs nobody has claimed yet, oldest first, and
# gets them in the order they were accepted; SKIP LOCKED lets concurrent batch
# tasks take disjoint jobs without waiting.
_CLAIM_BATCH = f"""
    WITH claimed AS (
        UPDATE jobs
           SET status = 'running', attempts = attempts + 1, claimed_by = :delivery, updated_at = now()
          FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
         WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' AND claimed_by IS NULL
                       ORDER BY enqueued_at LIMIT :limit FOR UPDATE SKIP LOCKED)
     RETURNING {_CLAIMED}, enqueued_at, created_at)
    SELECT {_CLAIMED.replace("id::text AS id", "id")} FROM claimed ORDER BY enqueued_at, created_at
"""

# Jobs an earlier delivery of this batch task claimed and never finished: it died.
# They go to their own tasks (claimed_by = job id), still `running`, so each
# per-job claim counts the lost delivery and a job that kills workers is capped.
_HAND_OFF_ORPHANS = """
    UPDATE jobs SET claimed_by = id::text, updated_at = now()
     WHERE status = 'running' AND claimed_by = :delivery
 RETURNING id::text
"""

_SAVE_WALLET = """
    UPDATE wallets SET balance = :balance, version = :version, status = :status,
           per_transaction_limit = :per_transaction, daily_debit_limit = :daily_debit,
           debit_day = :debit_day, debited_today = :debited_today, updated_at = :now
     WHERE id = :id AND version = :expected_version
"""

# `held` counts active holds not yet past expiry: an expired hold stops
# reserving money at expires_at, before the sweeper marks it.
_LOAD_WALLETS = """
    SELECT w.id::text AS id, w.tenant_id, w.user_id, w.currency, w.balance, w.status, w.version,
           w.per_transaction_limit, w.daily_debit_limit, w.debit_day, w.debited_today,
           coalesce((SELECT sum(h.amount) FROM holds h
                      WHERE h.wallet_id = w.id AND h.status = 'active' AND h.expires_at > now()), 0) AS held
      FROM wallets w WHERE w.id = ANY(CAST(:ids AS uuid[]))
"""

# A wallet as clients see it: `held` is what active, unexpired holds reserve.
WALLET_VIEW_COLUMNS = """w.id, w.tenant_id, w.user_id, w.currency, w.balance, w.status, w.version,
    w.per_transaction_limit, w.daily_debit_limit, w.created_at, w.updated_at,
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


class WalletStore:
    """SQL of the command path, bound to one connection inside a transaction."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._pending: list[tuple[str, dict]] = []

    def _run(self, sql: str, params: dict) -> CursorResult:
        return run_sql(self.conn, sql, params)

    # jobs -----------------------------------------------------------------

    def claim_job(self, job_id: str) -> ClaimedJob | None:
        """Mark a job running and count the try; None when it is already final."""
        row = self._run(_CLAIM, {"id": job_id}).mappings().first()
        return ClaimedJob(**row) if row else None

    def claim_batch(self, delivery_id: str, limit: int) -> list[ClaimedJob]:
        """Mark up to `limit` unclaimed queued jobs running for this batch delivery, oldest first."""
        rows = self._run(_CLAIM_BATCH, {"delivery": delivery_id, "limit": limit}).mappings().all()
        return [ClaimedJob(**row) for row in rows]

    def hand_off_orphans(self, delivery_id: str) -> list[str]:
        """Ids of the jobs an earlier delivery of this batch task left running, now on the per-job path."""
        return self._run(_HAND_OFF_ORPHANS, {"delivery": delivery_id}).scalars().all()

    def finish_job(self, job_id: str, *, status: str, result: dict | None = None,
                   error: dict | None = None, extra_attempts: int = 0) -> float | None:
        """Make a running job final; returns seconds since it was accepted, None if another delivery did it."""
        sql, params = self._with_pending(_FINISH, {
            "id": job_id, "status": status, "extra_attempts": extra_attempts,
            "result": json.dumps(result) if result is not None else None,
            "error": json.dumps(error) if error is not None else None,
        })
        seconds = self._run(sql, params).scalar()
        return None if seconds is None else float(seconds)

    def release_job(self, job_id: str, extra_attempts: int = 0) -> None:
        """Put a running job back to queued before it is retried on purpose."""
        self._run(("""
            UPDATE jobs SET status = 'queued', attempts = attempts + :extra, updated_at = now(), enqueued_at = now()
             WHERE id = :id AND status = 'running'
        """), {"id": job_id, "extra": extra_attempts})

    def job_status(self, job_id: str) -> str | None:
        return self._run(("SELECT status FROM jobs WHERE id = :id"), {"id": job_id}).scalar()

    # wallets --------------------------------------------------------------

    def load_wallets(self, ids: list[str]) -> dict[str, Wallet]:
        wallets = {}
        for r in self._run(_LOAD_WALLETS, {"ids": ids}).mappings():
            r = dict(r)
            r["limits"] = Limits(r.pop("per_transaction_limit"), r.pop("daily_debit_limit"))
            wallets[r["id"]] = Wallet(**r)
        return wallets

    def wallet_row(self, wallet_id: str) -> dict:
        """The wallet as clients see it, read inside this transaction."""
        return dict(self._run((f"SELECT {WALLET_VIEW_COLUMNS} FROM wallets w WHERE w.id = :id"),
                                      {"id": wallet_id}).mappings().one())

    def insert_wallet(self, wallet: Wallet, now: datetime) -> bool:
        """Create a wallet; False if one with that id exists (an earlier delivery)."""
        res = self._run(("""
            INSERT INTO wallets (id, tenant_id, user_id, currency, balance, status, version, created_at, updated_at)
            VALUES (:id, :tenant_id, :user_id, :currency, :balance, :status, :version, :now, :now)
            ON CONFLICT (id) DO NOTHING
        """), {"id": wallet.id, "tenant_id": wallet.tenant_id, "user_id": wallet.user_id, "currency": wallet.currency,
               "balance": wallet.balance, "status": wallet.status, "version": wallet.version, "now": now})
        return res.rowcount == 1

    def save_wallet(self, wallet: Wallet, now: datetime) -> None:
        """Write a wallet's new state if nobody changed it since it was read (optimistic lock)."""
        res = self._run(_SAVE_WALLET, {
            "id": wallet.id, "balance": wallet.balance, "version": wallet.version, "status": wallet.status,
            "per_transaction": wallet.limits.per_transaction, "daily_debit": wallet.limits.daily_debit,
            "debit_day": wallet.debit_day, "debited_today": wallet.debited_today,
            "expected_version": wallet.version - 1, "now": now,
        })
        if res.rowcount != 1:
            raise ConcurrencyConflict(f"wallet {wallet.id} changed since version {wallet.version - 1}")

    # holds ----------------------------------------------------------------

    def load_hold(self, hold_id: str) -> Hold | None:
        row = self._run((f"SELECT {_HOLD_COLUMNS} FROM holds WHERE id = CAST(:id AS uuid)"),
                                {"id": hold_id}).mappings().first()
        return Hold(**row) if row else None

    def hold_row(self, hold_id: str) -> dict:
        return dict(self._run(("SELECT * FROM holds WHERE id = :id"), {"id": hold_id}).mappings().one())

    def due_holds(self, limit: int) -> list[str]:
        """Ids of active holds past their expiry."""
        return self._run(
            "SELECT id::text FROM holds WHERE status = 'active' AND expires_at <= now() ORDER BY expires_at LIMIT :n",
            {"n": limit}).scalars().all()

    def insert_hold(self, hold: Hold, *, job: ClaimedJob, currency: str, now: datetime) -> None:
        self._run(("""
            INSERT INTO holds (id, job_id, tenant_id, wallet_id, currency, amount, captured_amount, status,
                               expires_at, reference, created_at, updated_at)
            VALUES (:id, :job_id, :tenant_id, :wallet_id, :currency, :amount, 0, :status, :expires_at, :reference,
                    :now, :now)
        """), {"id": hold.id, "job_id": job.id, "tenant_id": job.tenant_id, "wallet_id": hold.wallet_id,
               "currency": currency, "amount": hold.amount, "status": hold.status, "expires_at": hold.expires_at,
               "reference": hold.reference, "now": now})

    def save_hold(self, hold: Hold, now: datetime) -> None:
        """Settle an active hold (captured, voided, expired); conflicts if it was settled meanwhile."""
        res = self._run(("""
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
        res = self._run(("""
            UPDATE journal_entries SET reversed_amount = reversed_amount + :amount
             WHERE id = CAST(:id AS uuid) AND reversed_amount = :expected
        """), {"id": entry_id, "amount": amount, "expected": expected_reversed})
        if res.rowcount != 1:
            raise ConcurrencyConflict(f"transaction {entry_id} was reversed meanwhile")

    def record_entry(self, entry: Entry, *, job: ClaimedJob, now: datetime, hold_id: str | None = None) -> str:
        """Write a journal entry and its postings (with the job's final status); returns the transaction id."""
        entry_id = str(uuid.uuid4())
        wallet_after = entry.wallet_after(entry.wallet_id)
        counterparty_after = entry.wallet_after(entry.counterparty_wallet_id)
        self._defer("""
            INSERT INTO journal_entries (id, job_id, tenant_id, type, currency, amount, wallet_id,
                counterparty_wallet_id, balance_after, counterparty_balance_after, reference, request_id, created_at,
                reverses_entry_id, hold_id)
            VALUES (CAST(:id AS uuid), CAST(:job_id AS uuid), :tenant_id, :type, :currency, CAST(:amount AS numeric),
                CAST(:wallet_id AS uuid), CAST(:counterparty_wallet_id AS uuid), CAST(:balance_after AS numeric),
                CAST(:counterparty_balance_after AS numeric), :reference, :request_id, CAST(:now AS timestamptz),
                CAST(:reverses_entry_id AS uuid), CAST(:hold_id AS uuid))
        """, {
            "reverses_entry_id": entry.reverses_entry_id, "hold_id": hold_id,
            "id": entry_id, "job_id": job.id, "tenant_id": job.tenant_id, "type": entry.type,
            "currency": entry.currency, "amount": entry.amount, "wallet_id": entry.wallet_id,
            "counterparty_wallet_id": entry.counterparty_wallet_id,
            "balance_after": wallet_after.balance if wallet_after else None,
            "counterparty_balance_after": counterparty_after.balance if counterparty_after else None,
            "reference": entry.reference, "request_id": job.request_id, "now": now,
        })
        rows, params = [], {"entry_id": entry_id, "job_id": job.id, "currency": entry.currency, "now": now}
        for i, p in enumerate(entry.postings):
            rows.append(f"(CAST(:entry_id AS uuid), CAST(:job_id AS uuid), :account{i}, CAST(:wallet{i} AS uuid),"
                        f" :currency, CAST(:amount{i} AS numeric), CAST(:balance{i} AS numeric),"
                        f" CAST(:version{i} AS bigint), CAST(:now AS timestamptz))")
            params.update({
                f"account{i}": p.account, f"amount{i}": p.amount,
                f"wallet{i}": p.wallet_after.id if p.wallet_after else None,
                f"balance{i}": p.wallet_after.balance if p.wallet_after else None,
                f"version{i}": p.wallet_after.version if p.wallet_after else None,
            })
        self._defer("INSERT INTO postings (entry_id, job_id, account, wallet_id, currency, amount, balance_after,"
                    " wallet_version, created_at) VALUES " + ", ".join(rows), params)
        return entry_id

    def add_events(self, events: list[dict]) -> None:
        """Put events in the outbox (with the job's final status); the relay publishes them after the commit.

        A statement trigger NOTIFYs the relay (migration 0005), so it wakes at commit, not at its next poll.
        """
        rows, params = [], {}
        for i, e in enumerate(events):
            rows.append(f"('wallet', :key{i}, :type{i}, CAST(:payload{i} AS jsonb), now())")
            params.update({f"key{i}": e["wallet_id"], f"type{i}": e["event_type"], f"payload{i}": json.dumps(e)})
        self._defer("INSERT INTO outbox (aggregatetype, aggregateid, type, payload, created_at) VALUES "
                    + ", ".join(rows), params)

    # one round trip for the writes of a command ------------------------------

    def _defer(self, sql: str, params: dict) -> None:
        """Keep an INSERT to send with the job's final UPDATE: one statement instead of several.

        Only inserts whose rows nothing in the transaction reads back are deferred
        (journal, postings, outbox); wallet and hold updates run at once, so the
        outbox ids are still allocated after the wallet rows are locked.
        """
        n = len(self._pending)
        renamed = {f"d{n}_{k}": v for k, v in params.items()}
        for key in sorted(params, key=len, reverse=True):
            sql = sql.replace(f":{key}", f":d{n}_{key}")
        self._pending.append((sql, renamed))

    def _with_pending(self, statement: str, params: dict) -> tuple[str, dict]:
        """The statement preceded by the deferred inserts as data-modifying CTEs."""
        if not self._pending:
            return statement, params
        ctes = ",\n".join(f"w{i} AS ({sql})" for i, (sql, _) in enumerate(self._pending))
        merged = dict(params)
        for _, p in self._pending:
            merged.update(p)
        self._pending.clear()
        return f"WITH {ctes}\n{statement}", merged

    def flush(self) -> None:
        """Send the deferred inserts now (for a change that does not finish a job)."""
        if self._pending:
            sql, params = self._with_pending("SELECT 1", {})
            self._run(sql, params)
