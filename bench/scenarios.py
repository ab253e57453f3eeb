"""The scenarios of `make bench`: ceiling, uniform, hot wallet, half load, memory; and the figures of each."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from dataclasses import asdict
from itertools import accumulate
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench import noop_task
from bench.loadgen import LoadSpec
from bench.rates import counter_rates
from bench.stack import REPO, Stack

FINAL = ("succeeded", "failed")


def pct(values, ps=(50, 95, 99), scale=1000.0) -> dict:
    """Percentiles in ms (nearest-rank on sorted values); empty → None."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    if arr.size == 0:
        return {f"p{p}": None for p in ps}
    return {f"p{p}": round(float(np.percentile(arr, p, method="inverted_cdf")) * scale, 2) for p in ps}


class Runner:
    def __init__(self, stack: Stack, sampler, out_dir: Path, run_id: str, clients: int, progress: bool = True):
        self.stack = stack
        self.sampler = sampler
        self.out = out_dir
        self.run_id = run_id
        self.clients = clients
        self.progress = progress
        self.conn = stack.pg()
        self.wallets: list[str] = []
        self.hot_wallet: str | None = None
        self.ctx = mp.get_context("spawn")

    # ------------------------------------------------------------------ helpers

    def unfinished(self) -> int:
        return self.conn.execute("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0]

    def pg_now(self) -> float:
        return float(self.conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])

    def _spec(self, **kw) -> LoadSpec:
        kw.setdefault("clients", self.clients)
        return LoadSpec(api_url=self.stack.api_url, token=self.stack.token, database_url=self.stack.env["DATABASE_URL"],
                        wallets=self.wallets, hot_wallet=self.hot_wallet, **kw)

    def drive(self, spec, label: str, drain_timeout: float = 180.0, target=None) -> dict:
        """Run the load generator process with a progress bar, then wait until every job is final (unless 0).

        `spec` is a LoadSpec run by bench.loadgen, or what `target` (a module's `_main`) takes, e.g. a
        bench.bulkgen.BulkSpec; `progress` counts commands either way."""
        progress = self.ctx.Value("l", 0)
        stop = self.ctx.Event()
        if target is None:
            from bench.loadgen import _main as target

        proc = self.ctx.Process(target=target, args=(asdict(spec), progress, stop), name=f"loadgen-{label}")
        t0 = time.time()
        proc.start()
        self.sampler.add_root("loadgen", proc.pid)
        total = spec.count if spec.count else spec.duration
        unit = "cmd" if spec.count else "s"
        bar = tqdm(total=total, desc=f"{label:>10}", unit=unit, disable=not self.progress, leave=True,
                   bar_format="{desc}: {percentage:3.0f}%|{bar:30}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}]{postfix}")
        last_u = 0
        try:
            while proc.is_alive():
                proc.join(0.5)
                sent = progress.value
                try:
                    last_u = self.unfinished()
                except Exception:  # noqa: BLE001
                    pass
                bar.n = sent if spec.count else min(total, time.time() - t0)
                bar.set_postfix_str(f"sent {sent} backlog {last_u} ~{(sent - last_u) / max(1e-6, time.time() - t0):.0f}/s")
                bar.refresh()
        except KeyboardInterrupt:
            stop.set()
            proc.join(30)
            raise
        finally:
            bar.close()
        if proc.exitcode != 0:
            raise RuntimeError(f"load generator of {label} exited with {proc.exitcode}")
        t_stop = time.time()
        deadline = time.monotonic() + drain_timeout
        while drain_timeout and self.unfinished() and time.monotonic() < deadline:
            time.sleep(0.2)
        data = np.load(spec.out_path + ("" if spec.out_path.endswith(".npz") else ".npz"))
        run = {"t_start": float(data["started"]), "t_stop": float(data["stopped"]), "t_drained": time.time(),
               "wall_start": t0, "wall_stop": t_stop, "latency": data["latency"], "status": data["status"],
               "t_send": data["t_send"]}
        if "batch_ids" in data.files:
            run["batch_ids"] = [str(b) for b in data["batch_ids"]]
        return run

    def jobs_of(self, prefix: str) -> list[tuple]:
        return self.conn.execute("""
            SELECT extract(epoch FROM created_at)::float8, extract(epoch FROM completed_at)::float8, attempts, status,
                   error->>'code', result
              FROM jobs WHERE request_id LIKE %s""", (prefix + "%",)).fetchall()

    def wait_history(self, prefix: str, expected: int, timeout: float = 90.0) -> int:
        deadline = time.monotonic() + timeout
        n = -1
        while time.monotonic() < deadline:
            n = self.conn.execute("SELECT count(*) FROM history_events WHERE request_id LIKE %s",
                                  (prefix + "%",)).fetchone()[0]
            if n >= expected:
                break
            time.sleep(0.25)
        return n

    def redis_stats(self) -> dict:
        import redis

        info = redis.Redis.from_url(self.stack.env["REDIS_URL"]).info("commandstats")
        return {k.removeprefix("cmdstat_"): v["calls"] for k, v in info.items()}

    def pg_stats(self) -> dict:
        row = self.conn.execute("""SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_fetched
                                     FROM pg_stat_database WHERE datname = current_database()""").fetchone()
        return dict(zip(("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_fetched"), row,
                        strict=True))

    # ------------------------------------------------------------------ setup

    def setup_wallets(self, n: int) -> None:
        """n wallets plus one hot wallet, created and funded through the API."""
        prefix = f"b{self.run_id}-create-"
        self.drive(self._spec(kind="create", prefix=prefix, count=n + 1, max_outstanding=500,
                              out_path=str(self.out / "raw" / "setup-create")), "create")
        ids = [r[5]["id"] for r in self.jobs_of(prefix) if r[3] == "succeeded"]
        if len(ids) != n + 1:
            raise RuntimeError(f"created {len(ids)} wallets of {n + 1}")
        self.hot_wallet, self.wallets = ids[0], ids[1:]
        prefix = f"b{self.run_id}-fund-"
        self.wallets = ids  # fund all, hot one included (index 0)
        self.drive(self._spec(kind="fund", prefix=prefix, count=n + 1, amount="1000000000.00", max_outstanding=500,
                              out_path=str(self.out / "raw" / "setup-fund")), "fund")
        self.wallets = ids[1:]
        failed = [r for r in self.jobs_of(prefix) if r[3] != "succeeded"]
        if failed:
            raise RuntimeError(f"{len(failed)} funding jobs failed: {failed[:3]}")
        # The history consumer joins its group lazily: wait until setup's events are projected.
        self.wait_history(f"b{self.run_id}-fund-", n + 1, timeout=120)

    # ------------------------------------------------------------------ scenarios

    def ceiling(self, tasks: int) -> dict:
        """Celery no-op tasks drained by the same worker: consumer paused, queue filled, consumer resumed.

        What is left is read from Redis (the queue, and the tasks delivered and not acked yet). Tasks done
        count from a reading taken once every task is published and before the consumer resumes, not from
        `tasks`: other tasks in Redis then (a sweeper's duplicate, an upkeep task) cannot start the count
        below zero.
        """
        app = self.stack.celery_app()
        import redis

        r = redis.Redis.from_url(self.stack.env["REDIS_URL"])
        dest = [self.stack.worker_hostname] if getattr(self.stack, "worker_hostname", None) else None
        _check_workers_run(app, dest, noop_task.NAME)
        app.control.cancel_consumer("commands", destination=dest, reply=True, timeout=5)
        time.sleep(0.5)
        with app.producer_or_acquire() as producer:
            for _ in tqdm(range(tasks), desc="   ceiling", unit="task", disable=not self.progress, leave=False,
                          bar_format="{desc}: publishing {n}/{total}"):
                app.send_task(noop_task.NAME, queue="commands", producer=producer)

        def left() -> int:
            return r.llen("commands") + r.hlen("unacked")

        samples = [(time.time(), left())]  # the consumer is paused: nothing drained yet
        t0, at_start = samples[0]
        app.control.add_consumer("commands", exchange="commands", routing_key="commands", destination=dest,
                                 reply=True, timeout=5)
        bar = tqdm(total=tasks, desc="   ceiling", unit="task", disable=not self.progress)
        t_first = None
        while True:
            n = left()
            now = time.time()
            samples.append((now, n))
            if t_first is None and n < at_start:
                t_first = samples[-2][0]
            bar.n = min(tasks, at_start - n)
            bar.refresh()
            if n == 0:
                break
            if now - t0 > 600:
                raise RuntimeError("the no-op tasks were not drained within 600 s")
            time.sleep(0.02)
        bar.close()
        t_end = samples[-1][0]
        t_first = t_first or t0
        rate = tasks / max(1e-6, t_end - t_first)
        # A worker pops a task from the queue before it records it as unacked, so `left` can read low for a
        # moment (a task in neither place): the tasks done by a sample are the most seen done up to it.
        done = accumulate((at_start - n for _, n in samples), max)
        timeline = counter_rates([(t, d) for (t, _), d in zip(samples, done, strict=True) if t >= t_first], t_first)
        return {"name": "ceiling", "tasks": tasks, "drain_s": round(t_end - t_first, 3),
                "completed_per_s": round(rate, 1), "t0": t_first, "t1": t_end, "timeline": timeline,
                "processes": self._procs(t_first, t_end, tasks)}

    def drain(self, commands: int, workers: int, pool: str = "prefork") -> dict:
        """A backlog of `commands` transfers queued while no worker consumes, then drained by `workers` processes.

        The worker is restarted with that concurrency, its consumer of `commands` cancelled while the load
        generator submits every command over HTTP (each one a task in Redis), and added back: the figure is
        commands ÷ seconds from then until every job is final.
        """
        self.stack.restart_worker(workers, pool)
        self.sampler.add_root("celery", self.stack.roots["celery"])
        app = self.stack.celery_app()
        dest = [self.stack.worker_hostname]
        app.control.cancel_consumer("commands", destination=dest, reply=True, timeout=5)
        time.sleep(0.5)
        label = f"drain_{workers}"
        prefix = f"b{self.run_id}-{label}-"
        self.drive(self._spec(kind="transfer", prefix=prefix, count=commands, max_outstanding=commands + 1,
                              out_path=str(self.out / "raw" / label)), label, drain_timeout=0)
        queued = self.unfinished()
        t0 = time.time()
        app.control.add_consumer("commands", exchange="commands", routing_key="commands", destination=dest,
                                 reply=True, timeout=5)
        bar = tqdm(total=queued, desc=f"{label:>10}", unit="job", disable=not self.progress)
        while True:
            left = self.unfinished()
            bar.n = queued - left
            bar.refresh()
            if not left:
                break
            if time.time() - t0 > 900:
                raise RuntimeError(f"{label}: {left} jobs still open after 900 s")
            time.sleep(0.05)
        t1 = time.time()
        bar.close()
        jobs = self.jobs_of(prefix)
        return {"name": label, "workers": workers, "pool": pool, "commands": len(jobs), "queued_at_start": queued,
                "drain_s": round(t1 - t0, 3), "drained_per_s": round(queued / max(1e-6, t1 - t0), 1),
                "succeeded": sum(1 for j in jobs if j[3] == "succeeded"),
                "attempts_per_command": round(sum(j[2] for j in jobs) / max(1, len(jobs)), 3),
                "processes": self._procs(t0, t1, queued)}

    def load_scenario(self, name: str, kind: str, duration: float, warmup: float, ceiling_rate: float | None,
                      rate: float | None = None, max_outstanding: int | None = None, count: int | None = None,
                      profiler=None) -> dict:
        prefix = f"b{self.run_id}-{name}-"
        spec = self._spec(kind=kind, prefix=prefix, duration=None if count else duration, count=count, rate=rate,
                          max_outstanding=max_outstanding, out_path=str(self.out / "raw" / name))
        if rate:  # open loop: enough clients that a slow answer does not delay the schedule
            spec.clients = max(self.clients, 16)
        load0 = os.getloadavg()
        redis0, pg0 = self.redis_stats(), self.pg_stats()
        if profiler is not None:
            profiler.start(duration)
        run = self.drive(spec, name)
        if profiler is not None:
            profiler.stop()
        redis1, pg1 = self.redis_stats(), self.pg_stats()
        load1 = os.getloadavg()
        jobs = self.jobs_of(prefix)
        t_start, t_stop = run["t_start"], run["t_stop"]
        w0, w1 = t_start + warmup, t_stop
        if w1 - w0 < 1.0:
            w0 = t_start
        completed_at = np.array([j[1] for j in jobs if j[1] is not None])
        in_window = int(((completed_at >= w0) & (completed_at <= w1)).sum())
        per_s = in_window / max(1e-6, w1 - w0)
        done = [j for j in jobs if j[3] in FINAL]
        ok = [j for j in done if j[3] == "succeeded"]
        failed: dict[str, int] = {}
        for j in done:
            if j[3] == "failed":
                failed[j[4] or "?"] = failed.get(j[4] or "?", 0) + 1
        statuses: dict[str, int] = {}
        for s in run["status"]:
            statuses[str(int(s))] = statuses.get(str(int(s)), 0) + 1
        accepted = sum(v for k, v in statuses.items() if k in ("200", "202"))
        expected_rows = 2 * len(ok)  # a transfer is one event with a row per wallet
        rows = self.wait_history(prefix, expected_rows)
        lag = self.conn.execute("""
            SELECT extract(epoch FROM occurred_at)::float8, extract(epoch FROM recorded_at - occurred_at)::float8
              FROM history_events WHERE request_id LIKE %s""", (prefix + "%",)).fetchall()
        lags = [x[1] for x in lag]
        n_done = max(1, len(done))
        fig = {
            "name": name, "kind": kind, "duration_s": round(t_stop - t_start, 2), "window_s": round(w1 - w0, 2),
            "offered_rate": rate, "max_outstanding": max_outstanding, "clients": spec.clients,
            "submitted": int(len(run["status"])), "accepted": accepted, "http_status": statuses,
            "completed": len(done), "succeeded": len(ok), "completed_per_s": round(per_s, 1),
            "ratio_to_ceiling": round(per_s / ceiling_rate, 3) if ceiling_rate else None,
            "accept_latency_ms": pct(run["latency"]),
            "completion_latency_ms": pct([j[1] - j[0] for j in done if j[1] is not None]),
            "attempts_per_command": round(sum(j[2] for j in done) / n_done, 3),
            "attempts_max": max((j[2] for j in done), default=0),
            "failed_by_code": failed,
            "history_rows": rows, "history_rows_expected": expected_rows,
            "history_lag_ms": {**pct(lags, (50, 99)), "max": round(max(lags) * 1000, 1) if lags else None},
            "load_avg_start": [round(x, 2) for x in load0], "load_avg_end": [round(x, 2) for x in load1],
            "redis_calls_per_command": _per(redis0, redis1, n_done),
            "pg_per_command": _per(pg0, pg1, n_done),
            "processes": self._procs(t_start, max(t_stop, run["t_drained"]), len(done)),
            "timeline": _per_second(sorted(completed_at.tolist()), list(range(1, len(completed_at) + 1)), t_start),
            "lag_series": _lag_series(lag, t_start),
            "t0": t_start, "t1": t_stop, "kafka_topic": self.stack.env.get("KAFKA_TOPIC"),
        }
        return fig

    def memory(self, commands: int, max_outstanding: int) -> dict:
        """`commands` uniform transfers in a row, RSS of API and worker sampled over time; slope per 100k."""
        fig = self.load_scenario("memory", "transfer", duration=0, warmup=0, ceiling_rate=None, count=commands,
                                 max_outstanding=max_outstanding)
        kinds = ("api", "celery-main", "celery-pool")
        # One sample interval either side: a short run (the smoke test) still gets two points.
        pad = self.sampler.interval
        series = self.sampler.rss_series(kinds, fig["t0"] - pad, fig["t1"] + pad)
        rate = max(1e-6, fig["completed_per_s"])
        slopes = {}
        for kind in kinds:
            pts = [(t - fig["t0"], s.get(kind)) for t, s in series if s.get(kind)]
            half = pts[len(pts) // 2:]  # past the warm-up: caches filled, pools opened
            if len(half) < 3:
                half = pts  # a short run (the smoke test): all of it
            if len(half) >= 2:
                x, y = np.array([p[0] for p in half]), np.array([p[1] for p in half])
                slope_per_s = float(np.polyfit(x, y, 1)[0])
                slopes[kind] = {"mb_per_100k_commands": round(slope_per_s / rate * 100_000, 2),
                                "rss_start_mb": round(pts[0][1], 1), "rss_end_mb": round(pts[-1][1], 1)}
        fig["rss_series"] = [(round(t - fig["t0"], 2), s) for t, s in series]
        fig["rss_slope"] = slopes
        return fig

    def hot_wallet_check(self, hot_fig: dict, amount: str, funded: str) -> dict:
        from decimal import Decimal

        balance = self.conn.execute("SELECT balance FROM wallets WHERE id = %s", (self.hot_wallet,)).fetchone()[0]
        expected = Decimal(funded) - Decimal(amount) * hot_fig["succeeded"]
        return {"hot_wallet_balance": str(balance), "expected": str(expected), "lost_updates": balance != expected}

    def audit(self) -> dict:
        r = subprocess.run([sys.executable, "-m", "app.cli", "audit", "run", "--no-record"], cwd=REPO,
                           env=self.stack.env, capture_output=True, text=True, timeout=600)
        return {"ok": r.returncode == 0, "output": (r.stdout + r.stderr)[-2000:]}

    def _procs(self, t0: float, t1: float, commands: int) -> dict:
        time.sleep(self.sampler.interval * 1.2)  # one more sample past the window end
        out = self.sampler.window(t0, t1 + self.sampler.interval * 1.5)
        for v in out.values():
            v["cpu_ms_per_command"] = round(v["cpu_s"] * 1000 / max(1, commands), 3)
        return out


def _per(a: dict, b: dict, n: int) -> dict:
    out = {}
    for k, v in b.items():
        d = v - a.get(k, 0)
        if d:
            out[k] = round(d / n, 3)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _per_second(times: list[float], cumulative: list[int], t0: float) -> list[list[float]]:
    """Completions per second since t0: [[second, count], ...]."""
    if not times:
        return []
    counts: dict[int, int] = {}
    prev = 0
    for t, c in zip(times, cumulative, strict=True):
        sec = int(t - t0)
        counts[sec] = counts.get(sec, 0) + (c - prev)
        prev = c
    return [[s, counts.get(s, 0)] for s in range(min(counts), max(counts) + 1)]


def _check_workers_run(app, destination: list[str] | None, task: str) -> None:
    """Raise unless every worker answering runs `task` (a stack started without the bench would drop it)."""
    registered = app.control.inspect(destination=destination, timeout=2.0).registered() or {}
    if not registered or not all(any(name.split(" ", 1)[0] == task for name in names)
                                 for names in registered.values()):
        raise RuntimeError(f"not every Celery worker runs {task}: start them with `-I bench.noop_task`, "
                           "or leave the ceiling out (--scenarios)")


def _lag_series(rows: list[tuple], t0: float, max_points: int = 4000) -> list[list[float]]:
    rows = sorted(rows)
    step = max(1, len(rows) // max_points)
    return [[round(o - t0, 3), round(lag * 1000, 1)] for o, lag in rows[::step]]


def dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str))
