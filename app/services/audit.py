"""Ledger audit: the invariants that must hold whatever happened."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import text

from app.adapters.db import engine

log = logging.getLogger(__name__)

# Each check returns rows that break an invariant; an empty result is a pass.
CHECKS: dict[str, str] = {
    "entries balance": """
        SELECT entry_id::text, currency, sum(amount) AS imbalance
          FROM postings GROUP BY entry_id, currency HAVING sum(amount) <> 0""",
    "journal sums to zero per currency": """
        SELECT currency, sum(amount) AS total FROM postings GROUP BY currency HAVING sum(amount) <> 0""",
    "wallet balance equals its postings": """
        SELECT w.id::text, w.balance, coalesce(p.total, 0) AS postings_total
          FROM wallets w LEFT JOIN (SELECT wallet_id, sum(amount) AS total FROM postings
                                     WHERE wallet_id IS NOT NULL GROUP BY wallet_id) p ON p.wallet_id = w.id
         WHERE w.balance <> coalesce(p.total, 0)""",
    "no balance below its overdraft limit": "SELECT id::text, balance FROM wallets WHERE balance < -overdraft_limit",
    "latest posting's balance_after is the balance": """
        SELECT w.id::text, w.balance, last.balance_after
          FROM wallets w JOIN LATERAL (SELECT balance_after FROM postings p WHERE p.wallet_id = w.id
                                        ORDER BY wallet_version DESC LIMIT 1) last ON true
         WHERE last.balance_after <> w.balance""",
    "succeeded money jobs have exactly one entry": """
        SELECT j.id::text, j.type FROM jobs j LEFT JOIN journal_entries e ON e.job_id = j.id
         WHERE j.type IN ('fund', 'transfer', 'withdraw', 'capture_hold', 'reverse')
           AND ((j.status = 'succeeded') <> (e.id IS NOT NULL))""",
    "active holds never exceed the balance and the overdraft limit": """
        SELECT w.id::text, w.balance, w.overdraft_limit, sum(h.amount) AS held
          FROM wallets w JOIN holds h ON h.wallet_id = w.id AND h.status = 'active' AND h.expires_at > now()
         GROUP BY w.id, w.balance, w.overdraft_limit HAVING sum(h.amount) > w.balance + w.overdraft_limit""",
    "holds are in their wallet's currency and settled consistently": """
        SELECT h.id::text, h.status FROM holds h JOIN wallets w ON w.id = h.wallet_id
          LEFT JOIN journal_entries e ON e.hold_id = h.id
         WHERE h.currency <> w.currency
            OR (h.status = 'captured') <> (e.id IS NOT NULL)
            OR (e.id IS NOT NULL AND e.amount <> h.captured_amount)
            OR (h.status <> 'active') <> (h.released_at IS NOT NULL)""",
    "closed wallets are empty": """
        SELECT id::text, balance FROM wallets WHERE status = 'closed' AND balance <> 0""",
    "reversals add up to what their originals record": """
        SELECT o.id::text, o.reversed_amount, coalesce(sum(r.amount), 0) AS reversals
          FROM journal_entries o LEFT JOIN journal_entries r ON r.reverses_entry_id = o.id
         GROUP BY o.id, o.reversed_amount HAVING o.reversed_amount <> coalesce(sum(r.amount), 0)""",
}


@dataclass
class AuditReport:
    problems: dict[str, list[dict]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def run_audit() -> AuditReport:
    """Run every check in one consistent snapshot."""
    report = AuditReport()
    with engine().connect() as conn:
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        for name, sql in CHECKS.items():
            rows = [dict(r) for r in conn.execute(text(sql)).mappings()]
            if rows:
                report.problems[name] = rows
    return report


def run_and_record() -> AuditReport:
    """Run the audit and keep its result in audit_runs (what operators and metrics read)."""
    started = datetime.now(timezone.utc)
    report = run_audit()
    with engine().begin() as conn:
        conn.execute(text("""
            INSERT INTO audit_runs (started_at, finished_at, ok, problems)
            VALUES (:started, now(), :ok, CAST(:problems AS jsonb))
        """), {"started": started, "ok": report.ok, "problems": json.dumps(report.problems, default=str)})
    if not report.ok:
        log.error("ledger audit failed: %s", json.dumps(report.problems, default=str)[:2000])
    return report


def last_run() -> dict | None:
    """The most recent recorded audit, or None if none ran yet."""
    with engine().connect() as conn:
        row = conn.execute(text(
            "SELECT id, started_at, finished_at, ok, problems FROM audit_runs ORDER BY id DESC LIMIT 1")).mappings().first()
    return dict(row) if row else None
