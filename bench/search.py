"""The `search` scenario: transaction search over a million transactions (issue 19).

A database of its own (`bench_<run>_search`) on the bench's PostgreSQL,
migrated to head, then filled with set-based SQL (INSERT ... SELECT over
generate_series): several tenants of different sizes, 10,000 wallets of which
three are hot, every transaction type, unique and shared references,
log-uniform amounts with a share of round ones, a year of timestamps in
insertion order, and the postings of every transaction. The search indexes
are dropped during the load and built afterwards (as fast as CREATE INDEX
gets), then VACUUM ANALYZE.

Each case (a filter, a combination, a second page, the wallet list) then runs
`--search-iterations` times through app.services.transaction_search, the
code the routes call, in a child process whose DATABASE_URL is that database,
with parameters drawn afresh each time (another wallet, reference or window);
p50/p99 per case, and the EXPLAIN (ANALYZE, BUFFERS) of one call of each
case in search_plans.md. The database is dropped at the end (--keep-db keeps it).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import subprocess
import sys
import time
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from bench.stack import REPO, libpq

TARGET_P99_MS = 50.0

# tenant, share of the transactions, wallets, currency. The first is searched: the largest.
TENANTS = (("bench-search-1", 0.70, 7000, "USD"), ("bench-search-2", 0.20, 2000, "EUR"),
           ("bench-search-3", 0.07, 700, "GBP"), ("bench-search-4", 0.03, 300, "USD"))
# The searched tenant's hot wallets (its first three) and the share of its transactions each one makes.
HOT_SHARES = (0.05, 0.03, 0.02)
# Transaction types by cumulative share.
TYPE_SHARES = (("FUND", 0.30), ("TRANSFER", 0.80), ("WITHDRAWAL", 0.92), ("CAPTURE", 0.98), ("REVERSAL", 1.0))
SHARED_REFERENCES = 200  # 'payroll-0' ... 'payroll-199', a tenth of the transactions


def _load_sql(n: int) -> list[str]:
    """The statements that fill an empty, migrated database with n transactions."""
    tenants = []
    low = 0.0
    first = 0
    for no, (tenant, share, wallets, currency) in enumerate(TENANTS, 1):
        tenants.append(f"({no}, '{tenant}', {low}, {low + share if no < len(TENANTS) else 1.01}, {first}, "
                       f"{wallets}, '{currency}')")
        low += share
        first += wallets
    hot = len(HOT_SHARES)
    cumulative = [sum(HOT_SHARES[:k + 1]) for k in range(hot)]

    def wallet_no(r: str) -> str:
        """A wallet of the row's tenant: the hot ones by their shares (searched tenant), the others uniformly."""
        picks = " ".join(f"WHEN tno = 1 AND {r} < {c} THEN {k}" for k, c in enumerate(cumulative))
        return (f"CASE {picks} WHEN tno = 1 THEN {hot} + floor(random() * (cnt - {hot}))::int "
                f"ELSE lo + floor(random() * cnt)::int END")

    types = " ".join(f"WHEN ry < {share} THEN '{t}'" for t, share in TYPE_SHARES)
    wallet = "md5('bench-search-wallet-' || {})::uuid"
    return [
        "SET work_mem = '256MB'",
        "SET maintenance_work_mem = '512MB'",
        "SET max_parallel_workers_per_gather = 0",
        "SELECT setseed(0.19)",
        "CREATE TEMP TABLE tenants (tno int, tenant text, share_lo float8, share_hi float8, lo int, cnt int, "
        "currency text)",
        f"INSERT INTO tenants VALUES {', '.join(tenants)}",
        "CREATE TEMP TABLE clock AS SELECT date_trunc('day', now()) - interval '365 days' AS start",
        f"""INSERT INTO wallets (id, tenant_id, user_id, currency, balance, status, version, created_at, updated_at)
            SELECT {wallet.format('w')}, t.tenant, 'user-' || w, t.currency, 1000000, 'active', 1, c.start, c.start
              FROM tenants t, clock c, generate_series(t.lo, t.lo + t.cnt - 1) AS w""",
        # One row per transaction: its tenant, wallet, counterparty, type, amount, reference.
        f"""CREATE TEMP TABLE gen AS
            SELECT i, tno, tenant, currency, wallet_no, type,
                   CASE WHEN type = 'TRANSFER' OR (type IN ('CAPTURE', 'REVERSAL') AND rc < 0.5) THEN
                        CASE WHEN cp_no = wallet_no THEN lo + (cp_no - lo + 1) % cnt ELSE cp_no END END AS cp_no,
                   CASE WHEN ra < 0.2 THEN (10 ^ floor(rx * 5))::numeric
                        ELSE round(exp(ln(0.01) + rx * ln(10000000))::numeric, 2) END AS amount,
                   CASE WHEN rr < 0.55 THEN 'inv-' || i
                        WHEN rr < 0.65 THEN 'payroll-' || floor(random() * {SHARED_REFERENCES})::int END AS reference,
                   start + (i - 1 + random()) / {n} * interval '365 days' AS created_at
              FROM (SELECT g.*, {wallet_no('rw')} AS wallet_no, {wallet_no('rv')} AS cp_no,
                           CASE {types} END AS type
                      FROM (SELECT x.*, t.*
                              FROM (SELECT i, random() AS rt, random() AS rw, random() AS rv, random() AS ry,
                                           random() AS rc, random() AS ra, random() AS rx, random() AS rr
                                      FROM generate_series(1, {n}) AS i) AS x
                              JOIN tenants t ON x.rt >= t.share_lo AND x.rt < t.share_hi) AS g) AS r, clock""",
        # A job per thousand transactions of a tenant (the journal's job_id; item keeps (job_id, item) unique).
        """INSERT INTO jobs (id, tenant_id, type, status, payload, request_id, created_at, updated_at, completed_at)
           SELECT md5('bench-search-job-' || tno || '-' || i / 1000)::uuid, min(tenant), 'batch', 'succeeded',
                  '{}'::jsonb, 'bench-search', min(created_at), min(created_at), min(created_at)
             FROM gen GROUP BY tno, i / 1000""",
        f"""INSERT INTO journal_entries (id, job_id, item, tenant_id, type, currency, amount, wallet_id,
                                        counterparty_wallet_id, balance_after, counterparty_balance_after, reference,
                                        request_id, metadata, created_at)
            SELECT gen_random_uuid(), md5('bench-search-job-' || tno || '-' || i / 1000)::uuid, i, tenant, type,
                   currency, amount, {wallet.format('wallet_no')}, {wallet.format('cp_no')}, amount * 7,
                   CASE WHEN cp_no IS NOT NULL THEN amount * 3 END, reference, 'bench-search-' || i,
                   -- 30% carry metadata: a unique order id and one of three channels (10% each)
                   CASE WHEN i % 10 < 3 THEN jsonb_build_object('order_id', 'o-' || i,
                                                                'channel', (ARRAY['web', 'app', 'pos'])[1 + (i / 10) % 3])
                        ELSE '{{}}'::jsonb END,
                   created_at
              FROM gen ORDER BY i""",
        # The postings: the wallet's leg, the counterparty's, or a system account's.
        """INSERT INTO postings (entry_id, job_id, item, account, wallet_id, currency, amount, balance_after,
                                 wallet_version, created_at)
           SELECT entry_id, job_id, item, account, wallet_id, currency, amount, balance_after,
                  CASE WHEN wallet_id IS NOT NULL THEN
                       1 + row_number() OVER (PARTITION BY wallet_id ORDER BY created_at, entry_id) END, created_at
             FROM (SELECT id AS entry_id, job_id, item, wallet_id::text AS account, wallet_id, currency,
                          CASE WHEN type = 'FUND' THEN amount ELSE -amount END AS amount, balance_after, created_at
                     FROM journal_entries
                   UNION ALL
                   SELECT id, job_id, item, counterparty_wallet_id::text, counterparty_wallet_id, currency, amount,
                          counterparty_balance_after, created_at
                     FROM journal_entries WHERE counterparty_wallet_id IS NOT NULL
                   UNION ALL
                   SELECT id, job_id, item, CASE WHEN type = 'FUND' THEN 'system:funding' ELSE 'system:withdrawals'
                          END, NULL, currency, CASE WHEN type = 'FUND' THEN -amount ELSE amount END, NULL, created_at
                     FROM journal_entries WHERE counterparty_wallet_id IS NULL) AS legs
            ORDER BY created_at""",
        """UPDATE wallets w SET version = 1 + c.n, updated_at = c.last
             FROM (SELECT wallet_id, count(*) AS n, max(created_at) AS last FROM postings
                    WHERE wallet_id IS NOT NULL GROUP BY wallet_id) AS c
            WHERE w.id = c.wallet_id""",
    ]


_INDEXES_TO_REBUILD = """
    SELECT i.indexname, i.indexdef FROM pg_indexes i
     WHERE i.tablename IN ('journal_entries', 'postings')
       AND i.indexname NOT IN (SELECT conname FROM pg_constraint)
"""


def create_and_load(server_url: str, dbname: str, n: int, say=print) -> tuple[str, dict]:
    """A migrated database `dbname` with n transactions; (its SQLAlchemy URL, the load's figures)."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    admin_url = url.set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(libpq(admin_url), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    db_url = url.set(database=dbname).render_as_string(hide_password=False)
    t = time.monotonic()
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, check=True, capture_output=True,
                   env={**os.environ, "DATABASE_URL": db_url})
    figures: dict = {"migrate_s": round(time.monotonic() - t, 1)}
    with psycopg.connect(libpq(db_url), autocommit=True, application_name="bench-search-load") as conn:
        indexes = conn.execute(_INDEXES_TO_REBUILD).fetchall()
        for name, _ in indexes:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        t = time.monotonic()
        with conn.transaction():
            # A bench database: the foreign keys are right by construction, and checking 3.5M of them row by
            # row would take most of the load. Needs a superuser; without one they are checked.
            try:
                with conn.transaction():
                    conn.execute("SET LOCAL session_replication_role = replica")
            except psycopg.errors.InsufficientPrivilege:
                pass
            for statement in _load_sql(n):
                conn.execute(statement)
        figures["load_s"] = round(time.monotonic() - t, 1)
        say(f"search: {n:,} transactions loaded in {figures['load_s']}s; building {len(indexes)} indexes")
        conn.execute("SET maintenance_work_mem = '512MB'")
        builds = {}
        for name, definition in indexes:
            t = time.monotonic()
            conn.execute(definition)
            builds[name] = round(time.monotonic() - t, 2)
        figures["index_build_s"] = builds
        t = time.monotonic()
        conn.execute("VACUUM (ANALYZE) wallets, jobs, journal_entries, postings")
        figures["vacuum_analyze_s"] = round(time.monotonic() - t, 1)
        figures["rows"] = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                           for table in ("wallets", "jobs", "journal_entries", "postings")}
        figures["rows_by_tenant"] = dict(conn.execute(
            "SELECT tenant_id, count(*) FROM journal_entries GROUP BY 1 ORDER BY 1").fetchall())
        figures["types"] = dict(conn.execute(
            "SELECT type, count(*) FROM journal_entries WHERE tenant_id = %s GROUP BY 1 ORDER BY 1",
            (TENANTS[0][0],)).fetchall())
        figures["sizes_mb"] = {name: round(size / 2**20, 1) for name, size in conn.execute("""
            SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c
             WHERE c.relname IN ('journal_entries', 'postings') OR c.oid IN (
                   SELECT indexrelid FROM pg_index WHERE indrelid IN ('journal_entries'::regclass,
                                                                      'postings'::regclass))
             ORDER BY 1""").fetchall()}
        figures["server"] = conn.execute("SHOW server_version").fetchone()[0]
        figures["settings"] = dict(conn.execute("""
            SELECT name, reset_val || coalesce(unit, '') FROM pg_settings
             WHERE name IN ('shared_buffers', 'work_mem', 'effective_cache_size', 'random_page_cost', 'jit')
        """).fetchall())
    return db_url, figures


def parameter_pools(db_url: str) -> dict:
    """What the cases draw from: wallets (hot and typical), references, the time span, as plain values."""
    import psycopg

    tenant = TENANTS[0][0]
    with psycopg.connect(libpq(db_url), autocommit=True) as conn:
        hot = [str(r[0]) for r in conn.execute(
            "SELECT id FROM wallets WHERE user_id = ANY(%s) ORDER BY user_id",
            ([f"user-{k}" for k in range(len(HOT_SHARES))],)).fetchall()]
        typical = [str(r[0]) for r in conn.execute(
            "SELECT id FROM wallets WHERE tenant_id = %s AND NOT (id = ANY(%s::uuid[])) ORDER BY random() LIMIT 300",
            (tenant, hot)).fetchall()]
        unique = [r[0] for r in conn.execute(
            "SELECT reference FROM journal_entries TABLESAMPLE SYSTEM (2) REPEATABLE (19)"
            " WHERE tenant_id = %s AND reference LIKE 'inv-%%' LIMIT 300", (tenant,)).fetchall()]
        first, last = conn.execute("SELECT min(created_at), max(created_at) FROM journal_entries").fetchone()
        per_hot = {w: conn.execute("SELECT count(*) FROM postings WHERE wallet_id = %s", (w,)).fetchone()[0]
                   for w in hot}
    return {"tenant": tenant, "hot": hot, "typical": typical, "unique_references": unique,
            "shared_references": [f"payroll-{k}" for k in range(SHARED_REFERENCES)],
            "first": first, "last": last, "hot_wallet_transactions": per_hot}


# ------------------------------------------------------------------------------------------------------ cases

def _window(r: random.Random, p: dict, days: float) -> dict:
    span = (p["last"] - p["first"]).total_seconds() - days * 86400
    since = p["first"] + timedelta(seconds=r.uniform(0, span))
    return {"since": since, "until": since + timedelta(days=days)}


def _typical(r, p):
    return r.choice(p["typical"])


def _hot(r, p):
    return p["hot"][0]  # the hottest


def _shared(r, p):
    return r.choice(p["shared_references"])


def _order(r):
    """An order id some transaction carries in its metadata (of any tenant: the searched one has 70% of them)."""
    return f"o-{r.randrange(0, 100_000) * 10 + r.randrange(3)}"


# name -> (list, wallet chooser or None, filters builder, page). "tenant": GET /transactions;
# "wallet": GET /wallets/{id}/transactions. Builders return TransactionFilters keyword arguments.
CASES: dict[str, tuple] = {
    "no filter": ("tenant", None, lambda r, p: {}, 1),
    "wallet_id (typical wallet)": ("tenant", None, lambda r, p: {"wallet_id": _typical(r, p)}, 1),
    "wallet_id (hot wallet)": ("tenant", None, lambda r, p: {"wallet_id": _hot(r, p)}, 1),
    "type=TRANSFER (50%)": ("tenant", None, lambda r, p: {"types": ("TRANSFER",)}, 1),
    "type=REVERSAL (2%)": ("tenant", None, lambda r, p: {"types": ("REVERSAL",)}, 1),
    "type=CAPTURE,REVERSAL (8%)": ("tenant", None, lambda r, p: {"types": ("CAPTURE", "REVERSAL")}, 1),
    "reference (unique)": ("tenant", None, lambda r, p: {"reference": r.choice(p["unique_references"])}, 1),
    "reference (shared by ~0.05%)": ("tenant", None, lambda r, p: {"reference": _shared(r, p)}, 1),
    "reference (absent)": ("tenant", None, lambda r, p: {"reference": f"absent-{r.random()}"}, 1),
    "metadata order_id (unique)": ("tenant", None, lambda r, p: {"metadata": (("order_id", _order(r)),)}, 1),
    "metadata channel=web (10%)": ("tenant", None, lambda r, p: {"metadata": (("channel", "web"),)}, 1),
    "metadata channel + order_id": ("tenant", None, lambda r, p: {"metadata": (("channel", "app"),
                                                                               ("order_id", _order(r)))}, 1),
    "min_amount=10000": ("tenant", None, lambda r, p: {"min_amount": Decimal("10000")}, 1),
    "max_amount=0.05": ("tenant", None, lambda r, p: {"max_amount": Decimal("0.05")}, 1),
    "amount 123.00-124.00": ("tenant", None, lambda r, p: {"min_amount": Decimal("123.00"),
                                                           "max_amount": Decimal("124.00")}, 1),
    "amount = 100.00": ("tenant", None, lambda r, p: {"min_amount": Decimal("100"), "max_amount": Decimal("100")},
                        1),
    "from/to (1 day)": ("tenant", None, lambda r, p: _window(r, p, 1), 1),
    "from/to (30 days)": ("tenant", None, lambda r, p: _window(r, p, 30), 1),
    "hot wallet + type=REVERSAL": ("tenant", None, lambda r, p: {"wallet_id": _hot(r, p), "types": ("REVERSAL",)},
                                   1),
    "typical wallet + from/to (30 days)": ("tenant", None, lambda r, p: {"wallet_id": _typical(r, p),
                                                                         **_window(r, p, 30)}, 1),
    "type=WITHDRAWAL + min_amount=1000": ("tenant", None, lambda r, p: {"types": ("WITHDRAWAL",),
                                                                        "min_amount": Decimal("1000")}, 1),
    "reference (shared) + type=TRANSFER": ("tenant", None, lambda r, p: {"reference": _shared(r, p),
                                                                         "types": ("TRANSFER",)}, 1),
    "type=TRANSFER + 1 day + min_amount=100": ("tenant", None, lambda r, p: {
        "types": ("TRANSFER",), "min_amount": Decimal("100"), **_window(r, p, 1)}, 1),
    "hot wallet + min_amount=50000": ("tenant", None, lambda r, p: {"wallet_id": _hot(r, p),
                                                                    "min_amount": Decimal("50000")}, 1),
    "hot wallet + amount 123.00-124.00": ("tenant", None, lambda r, p: {
        "wallet_id": _hot(r, p), "min_amount": Decimal("123.00"), "max_amount": Decimal("124.00")}, 1),
    "type=REVERSAL + max_amount=0.05": ("tenant", None, lambda r, p: {"types": ("REVERSAL",),
                                                                      "max_amount": Decimal("0.05")}, 1),
    "hot wallet + REVERSAL + min_amount=90000 (few)": ("tenant", None, lambda r, p: {
        "wallet_id": _hot(r, p), "types": ("REVERSAL",), "min_amount": Decimal("90000")}, 1),
    "page 2: no filter": ("tenant", None, lambda r, p: {}, 2),
    "page 2: hot wallet": ("tenant", None, lambda r, p: {"wallet_id": _hot(r, p)}, 2),
    "page 2: type=REVERSAL": ("tenant", None, lambda r, p: {"types": ("REVERSAL",)}, 2),
    "page 2: from/to (30 days)": ("tenant", None, lambda r, p: _window(r, p, 30), 2),
    "page 2: type=TRANSFER + min_amount=1000": ("tenant", None, lambda r, p: {
        "types": ("TRANSFER",), "min_amount": Decimal("1000")}, 2),
    "wallet list: hot, no filter": ("wallet", _hot, lambda r, p: {}, 1),
    "wallet list: hot + type=REVERSAL": ("wallet", _hot, lambda r, p: {"types": ("REVERSAL",)}, 1),
    "wallet list: hot + reference (shared)": ("wallet", _hot, lambda r, p: {"reference": _shared(r, p)}, 1),
    "wallet list: hot + metadata channel=web": ("wallet", _hot, lambda r, p: {"metadata": (("channel", "web"),)}, 1),
    "type=TRANSFER + metadata channel=pos": ("tenant", None, lambda r, p: {"types": ("TRANSFER",),
                                                                         "metadata": (("channel", "pos"),)}, 1),
    "wallet list: hot + min_amount=50000": ("wallet", _hot, lambda r, p: {"min_amount": Decimal("50000")}, 1),
    "wallet list: hot + from/to (1 day)": ("wallet", _hot, lambda r, p: _window(r, p, 1), 1),
    "wallet list: typical + type=CAPTURE": ("wallet", _typical, lambda r, p: {"types": ("CAPTURE",)}, 1),
    "wallet list: hot, page 2 + type=TRANSFER": ("wallet", _hot, lambda r, p: {"types": ("TRANSFER",)}, 2),
}


def _measure(db_url: str, pools: dict, iterations: int, warmup: int, limit: int, results) -> None:
    """In a child process: every case `iterations` times through the service, then its plan."""
    os.environ["DATABASE_URL"] = db_url
    from app.config import settings

    settings.cache_clear()
    import numpy as np
    from psycopg.types.json import Jsonb

    from app.adapters.db import engine
    from app.services import transaction_search as ts

    tenant = pools["tenant"]

    def call(kind, wallet, filters, cursor):
        if kind == "tenant":
            return ts.search(tenant, filters, limit, cursor)
        return ts.wallet_transactions(wallet, tenant, filters, limit, cursor)

    def statement(kind, wallet, filters, cursor):
        """The statement call() runs (ts.wallet_transactions: a search once filtered)."""
        if kind == "wallet" and not ts.is_filtered(filters):
            return ts.wallet_statement(wallet, tenant, limit, cursor)
        if kind == "wallet":
            filters = replace(filters, wallet_id=wallet)
        return ts.search_statement(tenant, filters, limit, cursor)

    def draw(name, r):
        kind, choose_wallet, build, page = CASES[name]
        wallet = choose_wallet(r, pools) if choose_wallet else None
        filters = ts.TransactionFilters(**build(r, pools))
        cursor = None
        for _ in range(page - 1):  # the pages before are not timed
            cursor = call(kind, wallet, filters, None)["next_cursor"]
        return kind, wallet, filters, cursor

    out = {}
    for name in CASES:
        r = random.Random(f"19-{name}")
        times, returned = [], []
        for i in range(warmup + iterations):
            kind, wallet, filters, cursor = draw(name, r)
            t = time.perf_counter()
            page = call(kind, wallet, filters, cursor)
            elapsed = time.perf_counter() - t
            if i >= warmup:
                times.append(elapsed * 1000)
                returned.append(len(page["items"]))
        kind, wallet, filters, cursor = draw(name, random.Random(f"plan-{name}"))
        compiled = statement(kind, wallet, filters, cursor).compile(
            dialect=engine().dialect, compile_kwargs={"render_postcompile": True})
        with engine().connect() as conn:
            params = {k: Jsonb(v) if isinstance(v, dict) else v for k, v in compiled.params.items()}  # metadata
            plan = "\n".join(row[0] for row in conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, BUFFERS) " + str(compiled), params))
        arr = np.asarray(times)
        out[name] = {"p50_ms": round(float(np.percentile(arr, 50, method="inverted_cdf")), 2),
                     "p99_ms": round(float(np.percentile(arr, 99, method="inverted_cdf")), 2),
                     "max_ms": round(float(arr.max()), 2), "iterations": len(times),
                     "rows_median": int(np.median(returned)), "plan": plan,
                     "plan_parameters": {k: str(v) for k, v in vars(filters).items() if v not in (None, ())}
                     | ({"wallet": wallet} if wallet else {}) | ({"cursor": cursor} if cursor else {})}
    results.put(out)


def run(server_url: str, run_id: str, out_dir: Path, transactions: int = 1_000_000, iterations: int = 200,
        keep_db: bool = False, say=print) -> dict:
    """Load, measure every case, write search_plans.md; the figures."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    dbname = f"bench_{run_id}_search"
    load_before = [round(x, 2) for x in os.getloadavg()]
    t = time.monotonic()
    db_url, load = create_and_load(server_url, dbname, transactions, say=say)
    try:
        say(f"search: database ready in {time.monotonic() - t:.0f}s ({load['rows']}); {len(CASES)} cases × "
            f"{iterations}")
        pools = parameter_pools(db_url)
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        measure_load_before = [round(x, 2) for x in os.getloadavg()]
        t0 = time.time()
        child = ctx.Process(target=_measure, args=(db_url, pools, iterations, 5, 50, results), name="search-cases")
        child.start()
        while True:
            try:
                cases = results.get(timeout=5)
                break
            except queue.Empty:
                if not child.is_alive():
                    raise RuntimeError(f"the search cases' process exited with {child.exitcode}") from None
        child.join(60)
        t1 = time.time()
    finally:
        if not keep_db:
            admin = make_url(server_url).set(database="postgres").render_as_string(hide_password=False)
            with psycopg.connect(libpq(admin), autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
    fig = {"database": dbname, "kept": keep_db, "transactions": transactions, "iterations": iterations,
           "limit": 50, "load": load, "hot_wallet_transactions": pools["hot_wallet_transactions"],
           "load_avg_before_load": load_before, "load_avg_before_cases": measure_load_before,
           "load_avg_after": [round(x, 2) for x in os.getloadavg()], "cases_s": round(t1 - t0, 1),
           "target_p99_ms": TARGET_P99_MS,
           "cases": {name: {k: v for k, v in c.items() if k != "plan"} for name, c in cases.items()}}
    (out_dir / "search_plans.md").write_text(plans_markdown(fig, cases))
    return fig


def plans_markdown(fig: dict, cases: dict) -> str:
    lines = [f"# Search plans ({fig['transactions']:,} transactions, PostgreSQL {fig['load']['server']})", ""]
    for name, c in cases.items():
        lines += [f"## {name}: p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms", "",
                  f"Parameters: {c['plan_parameters']}", "", "```", c["plan"], "```", ""]
    return "\n".join(lines)


def lines(results: dict) -> list[str]:
    """The search figures of the summary table."""
    s = results.get("search")
    if not s:
        return []
    load = s["load"]
    out = ["", f"search: {s['transactions']:,} transactions ({', '.join(f'{k} {v:,}' for k, v in load['rows'].items())}"
               f"; searched tenant {TENANTS[0][0]}: {load['rows_by_tenant'].get(TENANTS[0][0], 0):,}; hot wallets "
               f"{', '.join(f'{v:,}' for v in s['hot_wallet_transactions'].values())} transactions); loaded in "
               f"{load['load_s']} s + indexes {sum(load['index_build_s'].values()):.0f} s + VACUUM ANALYZE "
               f"{load['vacuum_analyze_s']} s; {s['iterations']} calls per case, limit {s['limit']}, load average "
               f"{s['load_avg_before_cases']} → {s['load_avg_after']}"]
    width = max(len(n) for n in s["cases"])
    out.append(f"  {'case':<{width}}  {'p50 ms':>8}  {'p99 ms':>8}  {'max ms':>8}  {'rows':>5}")
    for name, c in s["cases"].items():
        flag = "" if c["p99_ms"] <= s["target_p99_ms"] else f"  > {s['target_p99_ms']:g} ms"
        out.append(f"  {name:<{width}}  {c['p50_ms']:>8.2f}  {c['p99_ms']:>8.2f}  {c['max_ms']:>8.2f}  "
                   f"{c['rows_median']:>5}{flag}")
    return out


def targets(results: dict) -> list[dict]:
    s = results.get("search")
    if not s:
        return []
    worst = max(s["cases"].items(), key=lambda kv: kv[1]["p99_ms"])
    return [{"target": f"search: worst p99 of {len(s['cases'])} cases ({worst[0]}), ms", "value": worst[1]["p99_ms"],
             "goal": f"≤ {s['target_p99_ms']:g}", "pass": worst[1]["p99_ms"] <= s["target_p99_ms"], "issue": 19}]
