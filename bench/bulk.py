"""The `bulk` scenario: applied transfers per second through `POST /batches`, and where the time goes per transfer.

Setup: `wallets` wallets (the load scenarios' ones plus new ones created
through `POST /wallets`, the new ones funded through batches of fund
commands), enough money on each that no transfer can fail.

Load: bench.bulkgen, `clients` clients each keeping up to `per_client` batches
of `size` independent transfers unfinished, for `duration` seconds (or
`count` commands in a row for the memory run).

Every figure comes from PostgreSQL: the scenario's jobs are those whose
`batch_id` is one of the batches the generator got a 202 for (a temporary table
of the ids, joined to `jobs.batch_id`). Applied transfers per second = jobs
`succeeded` with `completed_at` inside the steady window (the load's start +
warm-up to its end) ÷ the window; job latency = completed_at − created_at;
history lag = history_events.recorded_at − occurred_at of those jobs' events;
CPU per applied transfer per process kind from the psutil sampler, over the
steady window (per transfer applied in it) and over the whole run up to the
history being complete (per transfer applied).
"""
from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from bench.bulkgen import BulkSpec
from bench.scenarios import _per, pct

FINAL = ("succeeded", "failed", "canceled")
# Processes whose RSS must stay flat over a long bulk run (the others are servers with caches: PostgreSQL's
# backends map more of shared_buffers as they touch it, tansu keeps each topic in memory).
PYTHON_KINDS = ("api", "celery-main", "celery-pool", "relay", "history-worker")


class BulkRunner:
    def __init__(self, runner, size: int = 100, clients: int = 4, per_client: int = 3, amount: str = "0.01"):
        self.r = runner
        self.size = size
        self.clients = clients
        self.per_client = per_client
        self.amount = amount
        self.wallets: list[str] = []
        self.setup: dict = {}

    # ------------------------------------------------------------------ API (harness side, setup and checks only)

    def _http(self, method: str, path: str, body: dict | None = None, request_id: str | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.r.stack.api_url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.r.stack.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if request_id:
            req.add_header("X-Request-ID", request_id)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def submit(self, commands: list[dict], request_id: str) -> str:
        status, answer = self._http("POST", "/batches", {"atomic": False, "commands": commands}, request_id)
        if status != 202 or not isinstance(answer, dict) or "id" not in answer:
            raise RuntimeError(f"POST /batches answered {status}: {str(answer)[:1000]}")
        return answer["id"]

    # ------------------------------------------------------------------ SQL on the scenario's batches

    def _load_ids(self, table: str, ids: list[str]) -> None:
        conn = self.r.conn
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} (id uuid PRIMARY KEY)")
        conn.execute(f"TRUNCATE {table}")
        with conn.cursor().copy(f"COPY {table} (id) FROM STDIN") as copy:
            for i in ids:
                copy.write_row((i,))
        conn.execute(f"ANALYZE {table}")

    def _history_source(self, table: str) -> str:
        """The history rows of the table's batches: by history_events.batch_id, else through the journal."""
        has = self.r.conn.execute("""SELECT 1 FROM information_schema.columns
                                      WHERE table_name = 'history_events' AND column_name = 'batch_id'""").fetchone()
        if has:
            return f"history_events h JOIN {table} b ON h.batch_id = b.id"
        return (f"history_events h JOIN journal_entries e ON e.id = h.transaction_id "
                f"JOIN jobs j ON j.id = e.job_id JOIN {table} b ON j.batch_id = b.id")

    def _unfinished(self, table: str) -> int:
        return self.r.conn.execute(f"""SELECT count(*) FROM jobs j JOIN {table} b ON j.batch_id = b.id
                                        WHERE j.status IN ('queued', 'running')""").fetchone()[0]

    def _wait_history(self, table: str, expected: int, timeout: float = 120.0) -> int:
        src = self._history_source(table)
        deadline = time.monotonic() + timeout
        n = -1
        while time.monotonic() < deadline:
            n = self.r.conn.execute(f"SELECT count(*) FROM {src}").fetchone()[0]
            if n >= expected:
                break
            time.sleep(0.5)
        return n

    # ------------------------------------------------------------------ setup

    def setup_wallets(self, n: int, fund: str = "1000000.00") -> list[str]:
        """`n` funded wallets: the load scenarios' ones first, then new ones funded through batches."""
        r = self.r
        have = list(r.wallets)[:n]
        need = n - len(have)
        t0 = time.time()
        if need > 0:
            prefix = f"b{r.run_id}-bulkwallet-"
            r.drive(r._spec(kind="create", prefix=prefix, count=need, max_outstanding=500,
                            user_prefix=f"bulk-{r.run_id}-", out_path=str(r.out / "raw" / "bulk-setup-create")),
                    "bulk-create")
            new = [row[5]["id"] for row in r.jobs_of(prefix) if row[3] == "succeeded"]
            if len(new) != need:
                raise RuntimeError(f"bulk setup: created {len(new)} wallets of {need}")
            ids = []
            for i in range(0, len(new), 1000):  # the largest batch the contract allows
                ids.append(self.submit([{"type": "fund", "wallet_id": w, "amount": fund} for w in new[i:i + 1000]],
                                       f"b{r.run_id}-bulkfund-{i // 1000}"))
            self._load_ids("bench_bulk_fund", ids)
            deadline = time.monotonic() + 300
            while self._unfinished("bench_bulk_fund"):
                if time.monotonic() > deadline:
                    raise RuntimeError("bulk setup: funding batches not final after 300 s")
                time.sleep(0.2)
            rows = r.conn.execute("""SELECT j.status, count(*) FROM jobs j JOIN bench_bulk_fund b
                                       ON j.batch_id = b.id GROUP BY 1""").fetchall()
            done = dict(rows)
            if done.get("succeeded", 0) != len(new):
                raise RuntimeError(f"bulk setup: funding jobs by status {done}, expected {len(new)} succeeded")
            # Let the event pipeline catch up, or the scenario's history lag would include the setup's backlog.
            got = self._wait_history("bench_bulk_fund", len(new), timeout=180)
            if got < len(new):
                raise RuntimeError(f"bulk setup: {got} history rows of {len(new)} funds after 180 s")
            have += new
        self.wallets = have
        self.setup = {"wallets": len(have), "created": max(0, need), "funded_with": fund,
                      "setup_s": round(time.time() - t0, 1)}
        return have

    # ------------------------------------------------------------------ scenario

    def run(self, name: str, duration: float | None, warmup: float, count: int | None = None) -> dict:
        r = self.r
        if len(self.wallets) < 2:
            raise RuntimeError("bulk: setup_wallets first")
        prefix = f"b{r.run_id}-{name}-"
        spec = BulkSpec(api_url=r.stack.api_url, token=r.stack.token, prefix=prefix,
                        out_path=str(r.out / "raw" / name), database_url=r.stack.env["DATABASE_URL"],
                        wallets=self.wallets, size=self.size, amount=self.amount, clients=self.clients,
                        per_client=self.per_client, duration=None if count else duration, count=count)
        from bench.bulkgen import _main

        load0 = os.getloadavg()
        redis0, pg0 = r.redis_stats(), r.pg_stats()
        queue = _QueueSampler(r.stack.env["REDIS_URL"]).start()
        try:
            run = r.drive(spec, name, target=_main, drain_timeout=max(180.0, (count or 0) / 200))
        finally:
            queue.stop()
        redis1, pg1 = r.redis_stats(), r.pg_stats()
        load1 = os.getloadavg()
        t_start, t_stop = run["t_start"], run["t_stop"]
        w0, w1 = t_start + warmup, t_stop
        if w1 - w0 < 1.0:
            w0 = t_start
        batch_ids = [b for b in run["batch_ids"] if b]
        statuses: dict[str, int] = {}
        for s in run["status"]:
            statuses[str(int(s))] = statuses.get(str(int(s)), 0) + 1
        table = "bench_bulk_" + name.replace("-", "_")
        self._load_ids(table, batch_ids)
        conn = r.conn
        jobs_src = f"jobs j JOIN {table} b ON j.batch_id = b.id"
        row = conn.execute(f"""
            SELECT count(*),
                   count(*) FILTER (WHERE j.status IN ('succeeded', 'failed', 'canceled')),
                   count(*) FILTER (WHERE j.status = 'succeeded'),
                   count(*) FILTER (WHERE j.status = 'succeeded'
                                      AND j.completed_at BETWEEN to_timestamp(%(w0)s) AND to_timestamp(%(w1)s)),
                   coalesce(sum(j.attempts) FILTER (WHERE j.status IN ('succeeded', 'failed', 'canceled')), 0),
                   coalesce(max(j.attempts), 0),
                   extract(epoch FROM min(j.created_at))::float8, extract(epoch FROM max(j.completed_at))::float8
              FROM {jobs_src}""", {"w0": w0, "w1": w1}).fetchone()
        total, done, ok, ok_window, attempts, attempts_max, first_created, last_completed = row
        failed = dict(conn.execute(f"""SELECT coalesce(j.error->>'code', '?'), count(*) FROM {jobs_src}
                                        WHERE j.status IN ('failed', 'canceled') GROUP BY 1""").fetchall())
        lat_all = self._pcts(f"""SELECT extract(epoch FROM j.completed_at - j.created_at)::float8 FROM {jobs_src}
                                   WHERE j.status = 'succeeded'""")
        lat_window = self._pcts(f"""SELECT extract(epoch FROM j.completed_at - j.created_at)::float8 FROM {jobs_src}
                                      WHERE j.status = 'succeeded'
                                        AND j.completed_at BETWEEN to_timestamp(%(w0)s) AND to_timestamp(%(w1)s)""",
                                {"w0": w0, "w1": w1})
        timeline = conn.execute(f"""
            SELECT floor(extract(epoch FROM j.completed_at) - %(t0)s)::int AS s, count(*) FROM {jobs_src}
             WHERE j.status = 'succeeded' GROUP BY 1 ORDER BY 1""", {"t0": t_start}).fetchall()
        # History: a transfer is one event with a row per wallet.
        expected_rows = 2 * ok
        rows = self._wait_history(table, expected_rows)
        t_history = time.time()
        src = self._history_source(table)
        lag = self._pcts(f"SELECT extract(epoch FROM h.recorded_at - h.occurred_at)::float8 FROM {src}", ps=(50, 99),
                         with_max=True)
        step = max(1, rows // 4000)
        lag_series = conn.execute(f"""
            SELECT round((o - %(t0)s)::numeric, 3)::float8, round((lag * 1000)::numeric, 1)::float8 FROM (
                SELECT extract(epoch FROM h.occurred_at)::float8 AS o,
                       extract(epoch FROM h.recorded_at - h.occurred_at)::float8 AS lag,
                       row_number() OVER (ORDER BY h.occurred_at) AS rn
                  FROM {src}) x
             WHERE rn %% %(step)s = 0 ORDER BY 1""", {"t0": t_start, "step": step}).fetchall()
        window_s = w1 - w0
        rate = ok_window / max(1e-6, window_s)
        n_done = max(1, done)
        fig = {
            "name": name, "size": self.size, "clients": self.clients, "per_client": self.per_client,
            "max_unfinished_commands": self.clients * self.per_client * self.size, "wallets": len(self.wallets),
            "amount": self.amount, "duration_s": round(t_stop - t_start, 2), "window_s": round(window_s, 2),
            "batches_submitted": int(len(run["status"])), "batches_accepted": len(batch_ids),
            "http_status": statuses, "accept_latency_ms": pct(run["latency"][np.isin(run["status"], (200, 202))]),
            "jobs": total, "completed": done, "succeeded": ok, "succeeded_in_window": ok_window,
            "applied_per_s": round(rate, 1),
            "completion_latency_ms": lat_all, "completion_latency_window_ms": lat_window,
            "attempts_per_command": round(attempts / n_done, 3), "attempts_max": attempts_max,
            "failed_by_code": failed,
            "history_rows": rows, "history_rows_expected": expected_rows, "history_lag_ms": lag,
            "history_complete_s_after_load": round(t_history - t_stop, 1),
            # Saturation: tasks waiting in Redis for a free worker process; 0 in a sample = workers may idle.
            "queue_empty_fraction": queue.empty_fraction(w0, w1), "queue_length_median": queue.median(w0, w1),
            "load_avg_start": [round(x, 2) for x in load0], "load_avg_end": [round(x, 2) for x in load1],
            "redis_calls_per_command": _per(redis0, redis1, n_done), "pg_per_command": _per(pg0, pg1, n_done),
            "timeline": [[s, c] for s, c in _fill(timeline)], "lag_series": [list(x) for x in lag_series],
            "t0": t_start, "t1": t_stop, "w0": w0, "w1": w1, "first_created": first_created,
            "last_completed": last_completed, "kafka_topic": r.stack.env.get("KAFKA_TOPIC"),
            "setup": self.setup,
        }
        time.sleep(r.sampler.interval * 1.2)
        fig["processes"] = _per_transfer(r.sampler.window(w0, w1), ok_window)
        fig["processes_run"] = _per_transfer(r.sampler.window(t_start, t_history + r.sampler.interval), ok)
        fig["cpu_ms_per_transfer"] = by_group(fig["processes"])
        fig["cpu_ms_per_transfer_run"] = by_group(fig["processes_run"])
        fig["api_check"] = self.api_check(batch_ids)
        return fig

    def memory(self, commands: int, warmup: float) -> dict:
        """`commands` transfers in a row through batches, RSS of every process over time; slope per 100k."""
        fig = self.run("bulk_memory", duration=None, warmup=warmup, count=commands)
        s = self.r.sampler
        pad = s.interval
        series = s.rss_series(tuple(_kinds_between(s, fig["t0"] - pad, fig["t1"] + pad)), fig["t0"] - pad,
                              fig["t1"] + pad)
        rate = max(1e-6, fig["applied_per_s"])
        slopes = {}
        for kind in sorted({k for _, per in series for k in per}):
            pts = [(t - fig["t0"], per[kind]) for t, per in series if per.get(kind)]
            half = pts[len(pts) // 2:]  # past the warm-up: caches filled, pools opened
            if len(half) < 3:
                half = pts
            if len(half) >= 2:
                x, y = np.array([p[0] for p in half]), np.array([p[1] for p in half])
                slope_per_s = float(np.polyfit(x, y, 1)[0])
                slopes[kind] = {"mb_per_100k_commands": round(slope_per_s / rate * 100_000, 2),
                                "rss_start_mb": round(pts[0][1], 1), "rss_end_mb": round(pts[-1][1], 1),
                                "rss_max_mb": round(max(p[1] for p in pts), 1)}
        fig["commands"] = commands
        # At most ~2000 points: a 1M-command run lasts long, the sampler takes two a second.
        step = max(1, len(series) // 2000)
        fig["rss_series"] = [(round(t - fig["t0"], 2), {k: round(v, 1) for k, v in per.items()})
                             for t, per in series[::step]]
        fig["rss_slope"] = slopes
        return fig

    def api_check(self, batch_ids: list[str]) -> dict:
        """GET /batches/{id} of the first and the last batch: completed, every job succeeded (the contract)."""
        out = {"checked": 0, "ok": True, "problems": []}
        for bid in {batch_ids[0], batch_ids[-1]} if batch_ids else ():
            status, batch = self._http("GET", f"/batches/{bid}")
            out["checked"] += 1
            good = (status == 200 and isinstance(batch, dict) and batch.get("status") == "completed"
                    and batch.get("size") == self.size and (batch.get("counts") or {}).get("succeeded") == self.size
                    and len(batch.get("job_ids") or ()) == self.size)
            if not good:
                out["ok"] = False
                out["problems"].append({"batch": bid, "status": status, "answer": str(batch)[:500]})
        return out

    def _pcts(self, query: str, params: dict | None = None, ps=(50, 95, 99), with_max: bool = False) -> dict:
        """Percentiles (ms) of the one-column query's seconds, computed in PostgreSQL (percentile_disc = the
        nearest rank, as bench.scenarios.pct)."""
        fractions = ", ".join(f"percentile_disc({p / 100}) WITHIN GROUP (ORDER BY v)" for p in ps)
        row = self.r.conn.execute(f"SELECT {fractions}, max(v) FROM ({query}) AS q(v)", params).fetchone()
        out = {f"p{p}": (round(v * 1000, 2) if v is not None else None) for p, v in zip(ps, row[:-1], strict=True)}
        if with_max:
            out["max"] = round(row[-1] * 1000, 1) if row[-1] is not None else None
        return out


class _QueueSampler:
    """LLEN of the Celery `commands` queue every 0.25 s in a thread: tasks published, not yet taken by the worker."""

    def __init__(self, redis_url: str, queue: str = "commands", interval: float = 0.25):
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.queue, self.interval = queue, interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-queue-sampler", daemon=True)

    def start(self) -> "_QueueSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), int(self.client.llen(self.queue))))
            except Exception:  # noqa: BLE001 - a sampler must not take the benchmark down
                pass
            self._stop.wait(self.interval)

    def _within(self, t0: float, t1: float) -> list[int]:
        return [n for t, n in self.samples if t0 <= t <= t1]

    def empty_fraction(self, t0: float, t1: float) -> float | None:
        xs = self._within(t0, t1)
        return round(sum(1 for n in xs if n == 0) / len(xs), 3) if xs else None

    def median(self, t0: float, t1: float) -> float | None:
        xs = self._within(t0, t1)
        return float(np.median(xs)) if xs else None


def _per_transfer(procs: dict, transfers: int) -> dict:
    for v in procs.values():
        v["cpu_ms_per_transfer"] = round(v["cpu_s"] * 1000 / max(1, transfers), 3)
        v["cpu_ms_per_command"] = v["cpu_ms_per_transfer"]  # the name bench.report's process table reads
    return procs


GROUPS = (("API", ("api",)), ("Celery main", ("celery-main",)), ("Celery children", ("celery-pool",)),
          ("relay", ("relay",)), ("history worker", ("history-worker",)), ("Kafka (tansu)", ("kafka",)),
          ("Redis", ("redis",)), ("load generator", ("loadgen",)))


def by_group(procs: dict) -> dict[str, float]:
    """CPU ms per transfer by process group, each PostgreSQL backend counted with the process it serves."""
    out: dict[str, float] = {}
    for group, kinds in GROUPS:
        own = sum(procs[k]["cpu_ms_per_transfer"] for k in kinds if k in procs)
        pg = sum(procs[f"pg:{k}"]["cpu_ms_per_transfer"] for k in kinds if f"pg:{k}" in procs)
        out[group] = round(own, 3)
        if pg:
            out[f"{group}: its PostgreSQL"] = round(pg, 3)
    known = {k for _, kinds in GROUPS for k in kinds}
    rest = [k for k in procs if k not in known and not (k.startswith("pg:") and k[3:] in known)]
    # The postmaster, checkpointer, WAL writer, autovacuum, the harness's own queries.
    out["PostgreSQL (other)"] = round(
        sum(procs[k]["cpu_ms_per_transfer"] for k in rest if k.startswith("pg:")), 3)
    out["other (beat, ...)"] = round(sum(procs[k]["cpu_ms_per_transfer"] for k in rest if not k.startswith("pg:")), 3)
    out["PostgreSQL (all)"] = round(sum(v["cpu_ms_per_transfer"] for k, v in procs.items() if k.startswith("pg:")), 3)
    out["total"] = round(sum(v["cpu_ms_per_transfer"] for v in procs.values()), 3)
    return out


def _kinds_between(sampler, t0: float, t1: float) -> set[str]:
    return {kind for t, snap in sampler.samples if t0 <= t <= t1 for kind, _cpu, _rss in snap.values()}


def _fill(rows: list[tuple]) -> list[tuple[int, int]]:
    counts = {int(s): int(c) for s, c in rows if s is not None}
    if not counts:
        return []
    return [(s, counts.get(s, 0)) for s in range(min(counts), max(counts) + 1)]


def write_raw(path: Path, fig: dict) -> None:
    path.write_text(json.dumps(fig, indent=2, default=str))
