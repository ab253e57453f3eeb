"""Ledger audit: the invariants that must hold whatever happened."""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text

from app.adapters.db import engine

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
    "no negative balance": "SELECT id::text, balance FROM wallets WHERE balance < 0",
    "latest posting's balance_after is the balance": """
        SELECT w.id::text, w.balance, last.balance_after
          FROM wallets w JOIN LATERAL (SELECT balance_after FROM postings p WHERE p.wallet_id = w.id
                                        ORDER BY wallet_version DESC LIMIT 1) last ON true
         WHERE last.balance_after <> w.balance""",
    "succeeded money jobs have exactly one entry": """
        SELECT j.id::text, j.type FROM jobs j LEFT JOIN journal_entries e ON e.job_id = j.id
         WHERE j.type IN ('fund', 'transfer') AND ((j.status = 'succeeded') <> (e.id IS NOT NULL))""",
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
