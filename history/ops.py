"""Operator tasks of the read model: rebuild, compare with the ledger, backlog and consumer lag.

Rebuild replays the event journal, the `outbox` table: every event exactly as
it was published, written in the same transaction as the ledger change it
describes (Kafka only transports it), so replaying it reproduces what
consumption produced, for every event type. Compare checks the read model
both against that journal (every column of every row) and against the
ledger itself (wallets, postings), independently of the event format.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Column, Connection, MetaData, Table, text

from app.adapters.db import engine
from history import store
from history.projector import InvalidEvent, project
from history.tables import history_events

BATCH = 5000


# --------------------------------------------------------------------------- journal → rows


def journal_size(conn: Connection) -> int:
    return conn.execute(text("SELECT count(*) FROM outbox")).scalar()


def _journal_rows(conn: Connection, skipped: list) -> Iterator[list[dict]]:
    """Batches of history rows projected from the whole event journal, in commit (id) order."""
    # execution_options on the statement: on the Connection they would stick to every later statement.
    result = conn.execute(text("SELECT id, payload FROM outbox ORDER BY id"),
                          execution_options={"stream_results": True, "yield_per": BATCH})
    for partition in result.partitions():
        rows = []
        for outbox_id, payload in partition:
            try:
                rows.extend(project(payload))
            except InvalidEvent as e:
                skipped.append((outbox_id, str(e)))
        yield rows, len(partition)


@dataclass
class RebuildResult:
    events: int
    rows: int
    skipped: list  # (outbox id, error) of events the projector refused


def rebuild(progress: Callable[[int], None] | None = None) -> RebuildResult:
    """Replace the read model with the projection of the event journal, in one transaction.

    Readers keep seeing the old rows until the commit. The DELETE runs before the
    journal is read, so a row the history worker wrote earlier is always in the
    snapshot being replayed, and a row it writes later is simply not duplicated.
    """
    skipped: list = []
    events = rows = 0
    with engine().begin() as conn:
        conn.execute(text("SET LOCAL statement_timeout = 0"))
        conn.execute(history_events.delete())
        for batch, n in _journal_rows(conn, skipped):
            rows += store.insert_rows(conn, batch)
            events += n
            if progress:
                progress(n)
    return RebuildResult(events, rows, skipped)


# --------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Difference:
    kind: str  # missing, unexpected, differs, ledger
    wallet_id: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind:<10} wallet {self.wallet_id}: {self.detail}"


_COMPARED = [c.name for c in history_events.columns if c.name != "recorded_at"]

_JOURNAL_DIFF = f"""
    SELECT to_jsonb(e) AS expected, to_jsonb(h) AS actual
      FROM expected_history e
      FULL JOIN (SELECT * FROM history_events WHERE occurred_at <= :cutoff) h
        ON h.event_id = e.event_id AND h.wallet_id = e.wallet_id
     WHERE e.event_id IS NULL OR h.event_id IS NULL
        OR ({", ".join("e." + c for c in _COMPARED)}) IS DISTINCT FROM ({", ".join("h." + c for c in _COMPARED)})
     ORDER BY coalesce(e.wallet_id, h.wallet_id), coalesce(e.wallet_version, h.wallet_version)
"""

# Checks of the read model against the ledger; each row found is a difference.
LEDGER_CHECKS: dict[str, str] = {
    "posting without its history row": """
        SELECT p.wallet_id::text AS wallet_id,
               format('version %s transaction %s (%s %s, balance after %s) has no history row',
                      p.wallet_version, p.entry_id, e.type, e.amount, p.balance_after) AS detail
          FROM postings p JOIN journal_entries e ON e.id = p.entry_id
         WHERE p.wallet_id IS NOT NULL AND p.created_at <= :cutoff
           AND NOT EXISTS (SELECT 1 FROM history_events h
                            WHERE h.transaction_id = p.entry_id AND h.wallet_id = p.wallet_id)""",
    "history row disagrees with its posting": """
        SELECT p.wallet_id::text AS wallet_id,
               format('transaction %s: ledger version %s amount %s balance after %s, history %s version %s amount %s balance after %s',
                      p.entry_id, p.wallet_version, e.amount, p.balance_after, h.event_type, h.wallet_version,
                      h.amount, h.balance_after) AS detail
          FROM postings p JOIN journal_entries e ON e.id = p.entry_id
          JOIN history_events h ON h.transaction_id = p.entry_id AND h.wallet_id = p.wallet_id
         WHERE (h.wallet_version, h.amount, h.balance_after) IS DISTINCT FROM (p.wallet_version, e.amount, p.balance_after)""",
    "history row of a transaction not in the ledger": """
        SELECT h.wallet_id::text AS wallet_id,
               format('%s version %s names transaction %s, which has no posting on this wallet',
                      h.event_type, h.wallet_version, h.transaction_id) AS detail
          FROM history_events h
         WHERE h.transaction_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM postings p WHERE p.entry_id = h.transaction_id AND p.wallet_id = h.wallet_id)""",
    "wallet without a matching WALLET_CREATED row": """
        SELECT w.id::text AS wallet_id,
               CASE WHEN h.event_id IS NULL THEN 'no WALLET_CREATED row'
                    ELSE format('WALLET_CREATED row says version %s user %s tenant %s currency %s; wallet: user %s tenant %s currency %s',
                                h.wallet_version, h.user_id, h.tenant_id, h.currency, w.user_id, w.tenant_id, w.currency)
               END AS detail
          FROM wallets w
          LEFT JOIN history_events h ON h.wallet_id = w.id AND h.event_type = 'WALLET_CREATED'
         WHERE w.created_at <= :cutoff
           AND (h.event_id IS NULL
                OR (h.wallet_version, h.user_id, h.tenant_id, h.currency) IS DISTINCT FROM (1, w.user_id, w.tenant_id, w.currency))""",
    "history of a wallet that does not exist": """
        SELECT DISTINCT h.wallet_id::text AS wallet_id, 'the wallet is not in the ledger' AS detail
          FROM history_events h WHERE NOT EXISTS (SELECT 1 FROM wallets w WHERE w.id = h.wallet_id)""",
    "wallet versions missing or repeated in history": """
        SELECT w.id::text AS wallet_id,
               format('wallet is at version %s; history has %s rows, versions %s..%s', w.version,
                      count(h.event_id), min(h.wallet_version), max(h.wallet_version)) AS detail
          FROM wallets w JOIN history_events h ON h.wallet_id = w.id
         WHERE w.updated_at <= :cutoff
         GROUP BY w.id, w.version
        HAVING count(h.event_id) <> w.version OR count(DISTINCT h.wallet_version) <> w.version
            OR max(h.wallet_version) <> w.version""",
}


def compare(grace_seconds: float = 0.0) -> list[Difference]:
    """Every difference between the read model and the event journal, then the ledger.

    Changes younger than `grace_seconds` are left out (they may still be on their way).
    """
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=grace_seconds)
    differences: list[Difference] = []
    with engine().begin() as conn:
        # One snapshot for the journal, the ledger and the read model.
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        conn.execute(text("SET LOCAL statement_timeout = 0"))
        expected = _temp_table()
        conn.execute(text("CREATE TEMP TABLE expected_history (LIKE history_events INCLUDING ALL) ON COMMIT DROP"))
        skipped: list = []
        for batch, _ in _journal_rows(conn, skipped):
            store.insert_rows(conn, [r for r in batch if r["occurred_at"] <= cutoff], table=expected)
        for outbox_id, error in skipped:
            differences.append(Difference("journal", "-", f"outbox event {outbox_id} cannot be projected: {error}"))
        for e, h in conn.execute(text(_JOURNAL_DIFF), {"cutoff": cutoff}):
            differences.append(_journal_difference(e, h))
        for name, sql in LEDGER_CHECKS.items():
            for row in conn.execute(text(sql), {"cutoff": cutoff}).mappings():
                differences.append(Difference("ledger", row["wallet_id"], f"{name}: {row['detail']}"))
    return differences


def _temp_table() -> Table:
    return Table("expected_history", MetaData(), *[Column(c.name, c.type, primary_key=c.primary_key)
                                                   for c in history_events.columns])


def _describe(row: dict) -> str:
    return f"{row['event_type']} version {row['wallet_version']} event {row['event_id']}"


def _journal_difference(expected: dict | None, actual: dict | None) -> Difference:
    if actual is None:
        return Difference("missing", expected["wallet_id"], f"{_describe(expected)} is in the journal, not in history")
    if expected is None:
        return Difference("unexpected", actual["wallet_id"], f"{_describe(actual)} is in history, not in the journal")
    changed = ", ".join(f"{c}: journal {expected[c]!r}, history {actual[c]!r}"
                        for c in _COMPARED if expected[c] != actual[c])
    return Difference("differs", expected["wallet_id"], f"{_describe(expected)}: {changed}")


# --------------------------------------------------------------------------- backlog and lag


@dataclass(frozen=True)
class Backlog:
    unpublished: int
    oldest_created_at: datetime | None


def outbox_backlog() -> Backlog:
    with engine().connect() as conn:
        count, oldest = conn.execute(text(
            "SELECT count(*), min(created_at) FROM outbox WHERE published_at IS NULL")).one()
    return Backlog(count, oldest)


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group never committed on this partition
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


def consumer_lag(group_id: str | None = None, topic: str | None = None) -> list[PartitionLag] | None:
    """Committed offset and end offset of every partition of the topic; None when the topic is unknown."""
    from kafka import KafkaAdminClient, TopicPartition

    from app.adapters import kafka as kafka_clients
    from app.config import settings

    s = settings()
    topic, group_id = topic or s.kafka_topic, group_id or s.kafka_group_id
    consumer = kafka_clients.admin_consumer()
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap_servers.split(","), client_id="wallet-admin")
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return None
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = _end_offsets(consumer, tps)
        committed = admin.list_group_offsets({group_id: tps}).get(group_id, {})
        return [PartitionLag(tp.partition, committed[tp].offset if tp in committed and committed[tp].offset >= 0
                             else None, ends[tp]) for tp in tps]
    finally:
        consumer.close()
        admin.close()


def _end_offsets(consumer, tps: list) -> dict:
    """End offset (high watermark) per partition.

    ListOffsets is asked first; tansu answers it with the base offset of the last
    record batch + 1, so one fetch from just before that end reads the true high
    watermark (on Apache Kafka both agree and the fetch changes nothing).
    """
    import time

    ends = consumer.end_offsets(tps)
    pending = [tp for tp in tps if ends[tp] > 0]
    if not pending:
        return ends
    consumer.assign(pending)
    for tp in pending:
        consumer.seek(tp, ends[tp] - 1)
    deadline = time.monotonic() + 5
    while pending and time.monotonic() < deadline:
        consumer.poll(timeout_ms=200)
        for tp in list(pending):
            highwater = consumer.highwater(tp)
            if highwater is not None:
                ends[tp] = max(ends[tp], highwater)
                pending.remove(tp)
    return ends
