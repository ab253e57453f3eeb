"""Figures of the history pipeline: lag at a stated low load, and the time to rebuild 100k events.

    .venv/bin/python -m scripts.measure_history [--rate 20] [--seconds 10] [--events 100000]

Starts its own embedded services (state in .dev/measure), a fresh database and
topic, a Celery worker, the relay and one history worker, then:

1. lag: submits `rate` commands/s for `seconds` s (funds and transfers among 20
   wallets) through the Wallet API (in-process Flask client), waits for the
   pipeline to catch up, and prints p50/p99/max of
   history_events.recorded_at - occurred_at (the event's commit time);
2. rebuild: inserts `events` synthetic events straight into the outbox with SQL
   (30% transfers, so ~1.3 rows per event) and times `history rebuild`.
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KEY = "measure-key"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()

    from scripts.devstack import EmbeddedServices, ensure_topic
    from tests.conftest import _fresh_database

    services = EmbeddedServices(REPO / ".dev" / "measure", env={})
    env = services.start()
    env.update(DATABASE_URL=_fresh_database(env["DATABASE_URL"]), KAFKA_TOPIC=f"measure-{uuid.uuid4().hex[:6]}",
               KAFKA_GROUP_ID=f"measure-{uuid.uuid4().hex[:6]}", WALLET_API_KEYS=f"{KEY}:measure:read|write",
               PYTHONPATH=str(REPO))
    os.environ.update(env)
    procs = []
    try:
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, check=True, capture_output=True)
        ensure_topic(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"], 6)
        log = open(REPO / ".dev" / "measure" / "processes.log", "ab")
        for cmd in (["-m", "celery", "-A", "tasks", "worker", "-Q", "commands,maintenance", "-c", "4", "-l", "warning"],
                    ["-m", "app.relay"], ["-m", "history.worker"]):
            procs.append(subprocess.Popen([sys.executable, *cmd], cwd=REPO, env=os.environ, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
        measure_lag(args.rate, args.seconds)
        measure_rebuild(args.events)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        services.stop()
    return 0


def _client():
    from app.api import create_app

    client = create_app({"TESTING": True}).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {KEY}"
    return client


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def measure_lag(rate: float, seconds: float) -> None:
    from sqlalchemy import text

    from app.adapters.db import engine

    client = _client()

    def final(job_id):
        return client.get(f"/jobs/{job_id}").get_json()["status"] in ("succeeded", "failed")

    wallets = []
    for i in range(20):
        job = client.post("/wallets", json={"user_id": f"measure-{i}"}, headers={"Prefer": "wait=10"}).get_json()
        wallets.append(job["result"]["id"])
    for w in wallets:
        client.post(f"/wallets/{w}/fund", json={"amount": "1000.00"}, headers={"Prefer": "wait=10"})
    _wait(lambda: _caught_up(), 60, "warm-up events in history")  # includes the group join
    time.sleep(1)

    rng = random.Random(1)
    started = time.time()
    t0 = time.monotonic()
    jobs = []
    for n in range(int(rate * seconds)):
        time.sleep(max(0.0, t0 + n / rate - time.monotonic()))
        src, dst = rng.sample(wallets, 2)
        if n % 2:
            r = client.post(f"/wallets/{src}/fund", json={"amount": "1.00"})
        else:
            r = client.post(f"/wallets/{src}/transfer", json={"to_wallet_id": dst, "amount": "1.00"})
        jobs.append(r.get_json()["id"])
    offered = len(jobs) / (time.monotonic() - t0)
    _wait(lambda: all(final(j) for j in jobs), 60, "jobs to finish")
    _wait(lambda: _caught_up(), 60, "history to catch up")
    with engine().connect() as conn:
        p50, p99, worst, rows = conn.execute(text("""
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), percentile_cont(0.99) WITHIN GROUP (ORDER BY lag),
                   max(lag), count(*)
              FROM (SELECT extract(epoch FROM recorded_at - occurred_at) * 1000 AS lag FROM history_events
                     WHERE occurred_at >= to_timestamp(:t)) l"""), {"t": started}).one()
    print(f"history lag at {offered:.1f} commands/s for {seconds:.0f}s ({len(jobs)} commands, {rows} history rows; "
          f"1 Celery worker x4, 1 relay, 1 history worker, embedded PG/Redis/tansu):")
    print(f"  p50 {p50:.1f} ms   p99 {p99:.1f} ms   max {worst:.1f} ms   (recorded_at - occurred_at)")


def _caught_up() -> bool:
    from sqlalchemy import text

    from app.adapters.db import engine

    with engine().connect() as conn:
        return conn.execute(text("""
            SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL) = 0
               AND (SELECT count(*) FROM outbox o WHERE NOT EXISTS (
                        SELECT 1 FROM history_events h WHERE h.event_id = CAST(o.payload->>'event_id' AS uuid))) = 0
        """)).scalar()


def measure_rebuild(events: int) -> None:
    from sqlalchemy import text

    from app.adapters.db import engine
    from history import ops

    # Synthetic but well-formed events (the rebuild replays the outbox; the ledger is not read).
    with engine().begin() as conn:
        conn.execute(text("SET LOCAL statement_timeout = 0"))
        conn.execute(text("""
            INSERT INTO outbox (aggregatetype, aggregateid, type, payload, created_at, published_at)
            SELECT 'wallet', w, t, jsonb_build_object(
                     'event_id', gen_random_uuid(), 'event_type', t, 'occurred_at', now(), 'tenant_id', 'bench',
                     'wallet_id', w, 'user_id', 'bench-user', 'currency', 'USD', 'wallet_version', i,
                     'balance_after', (i * 10)::text || '.00', 'amount', '10.00', 'transaction_id', gen_random_uuid(),
                     'request_id', 'bench', 'job_id', gen_random_uuid())
                   || CASE WHEN t = 'TRANSFER_COMPLETED' THEN jsonb_build_object(
                     'counterparty_wallet_id', gen_random_uuid(), 'counterparty_user_id', 'bench-peer',
                     'counterparty_wallet_version', i, 'counterparty_balance_after', '10.00') ELSE '{}' END,
                   now(), now()
              FROM (SELECT i, gen_random_uuid()::text AS w,
                           CASE WHEN i % 10 < 3 THEN 'TRANSFER_COMPLETED' ELSE 'WALLET_FUNDED' END AS t
                      FROM generate_series(1, :n) i) g"""), {"n": events})
    with engine().connect() as conn:
        total = ops.journal_size(conn)
    t0 = time.monotonic()
    result = ops.rebuild()
    took = time.monotonic() - t0
    print(f"rebuild: {result.events} events ({total} in the journal, {events} synthetic) -> {result.rows} rows "
          f"in {took:.1f}s ({result.events / took:,.0f} events/s)")


if __name__ == "__main__":
    sys.exit(main())
