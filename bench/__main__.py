"""`make bench` / `python -m bench`: throughput, latency, history lag and cost per command of the wallet stack.

Starts its own stack (state in .dev/bench, free ports, a fresh database and
topic; embedded PostgreSQL/Redis/Kafka unless --database-url/--redis-url/--kafka
or the usual env vars are given) or drives a running one (--use-running URL),
then runs the scenarios of issue 7 (and pgbench and bulk, issue 16, and search, issue 19) and writes
bench-results/<timestamp>/:
results.json (every figure), throughput.png, latency.png, history_lag.png,
memory.png, raw/ (per-request samples), logs/, and with --profile profile/
(py-spy flame graphs, speedscope files, SQL statement counts, analysis.md).

    python -m bench                          # ceiling, uniform, hot, half_load, pgbench, bulk, drain (20 s each),
                                             # search (1M transactions)
    python -m bench --scenarios search       # PostgreSQL only: no API, worker or Kafka is started
    python -m bench --scenarios uniform,pgbench,bulk --duration 30
    python -m bench --scenarios bulk --bulk-memory 1000000   # RSS of every process over 1M batched commands
    python -m bench --duration 60 --memory 100000
    python -m bench --profile                # + py-spy and SQL counts during uniform
    python -m bench --compare bench-results/<earlier>/results.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path

from bench import report
from bench.stack import REPO, Stack, StackOptions

DEFAULT_SCENARIOS = ("ceiling", "uniform", "webhooks", "hot", "half_load", "pgbench", "bulk", "drain", "search")
DATABASE_ONLY = {"search"}  # scenarios that need PostgreSQL and none of the stack's processes


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                   help="comma-separated subset of " + ",".join(DEFAULT_SCENARIOS) + " (default: all)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load per scenario")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds left out of completed/s at the start")
    p.add_argument("--ceiling-tasks", type=int, default=10_000,
                   help="no-op tasks per drain; the ceiling is the median of three drains, taken before uniform, "
                        "after uniform and after hot")
    p.add_argument("--wallets", type=int, default=1000)
    p.add_argument("--clients", type=int, default=32, help="concurrent HTTP clients of the load generator")
    p.add_argument("--max-outstanding", type=int, default=64,
                   help="closed loop: submit while fewer commands than this are unfinished")
    p.add_argument("--half-rate", type=float, default=None, help="fixed rate of half_load (default: 50%% of uniform)")
    p.add_argument("--drain-commands", type=int, default=3000, help="backlog of the drain scenario")
    p.add_argument("--drain-workers", default="1,4",
                   help="worker process counts the backlog is drained with, in turn (default 1,4)")
    p.add_argument("--drain-pool", default="prefork", help="Celery pool of the drain workers (prefork, threads)")
    p.add_argument("--memory", type=int, default=0, metavar="N", help="also run N commands in a row, RSS over time")
    p.add_argument("--pgbench-scale", type=int, default=10, help="pgbench -i -s (default 10)")
    p.add_argument("--pgbench-clients", type=int, default=8, help="pgbench -c (default 8)")
    p.add_argument("--pgbench-threads", type=int, default=2, help="pgbench -j (default 2)")
    p.add_argument("--bulk-size", type=int, default=100, help="transfers per POST /batches of the bulk scenario")
    p.add_argument("--bulk-clients", type=int, default=4, help="concurrent submitting clients of the bulk scenario")
    p.add_argument("--bulk-outstanding", type=int, default=3, metavar="K",
                   help="closed loop: each bulk client keeps at most K of its batches unfinished (default 3)")
    p.add_argument("--bulk-wallets", type=int, default=None,
                   help="wallets the bulk transfers move money between (default 10 × --wallets = 10,000)")
    p.add_argument("--bulk-memory", type=int, default=0, metavar="N",
                   help="also submit N commands through batches in a row, RSS of every process over time "
                        "(the target run is 1000000)")
    p.add_argument("--search-transactions", type=int, default=1_000_000,
                   help="transactions loaded for the search scenario (default 1,000,000)")
    p.add_argument("--search-iterations", type=int, default=200, help="calls per search case (default 200)")
    p.add_argument("--api-workers", type=int, default=int(os.environ.get("GUNICORN_WORKERS", 2)))
    p.add_argument("--api-threads", type=int, default=int(os.environ.get("GUNICORN_THREADS", 8)))
    p.add_argument("--celery-workers", type=int, default=int(os.environ.get("WORKERS", 4)),
                   help="Celery prefork concurrency")
    p.add_argument("--no-beat", action="store_true", help="do not run celery beat (sweeper, audit, expiries)")
    p.add_argument("--log-level", default="info", help="of every process (default info, as in the Procfile)")
    p.add_argument("--rate-limit", type=int, default=100_000, help="RATE_LIMIT of the API (per key per second)")
    p.add_argument("--profile", action="store_true", help="py-spy + SQL statement counts during uniform")
    p.add_argument("--use-running", metavar="URL", help="drive a running stack's API instead of starting one")
    p.add_argument("--token", help="API key for --use-running (default: env WALLET_API_KEY)")
    p.add_argument("--database-url")
    p.add_argument("--redis-url")
    p.add_argument("--kafka", help="Kafka bootstrap servers")
    p.add_argument("--state-dir", default=str(REPO / ".dev" / "bench"))
    p.add_argument("--out", default=str(REPO / "bench-results"))
    p.add_argument("--compare", metavar="RESULTS_JSON", help="an earlier results.json: ratios must agree within 15%%")
    p.add_argument("--keep-db", action="store_true", help="keep the bench_<run> database afterwards")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(scenarios) - set(DEFAULT_SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {sorted(unknown)}")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_id = f"{stamp.replace('-', '')}{os.getpid() % 1000:03d}"
    out = Path(args.out) / stamp
    if out.exists():
        out = Path(args.out) / f"{stamp}-{os.getpid()}"
    (out / "raw").mkdir(parents=True)
    opts = StackOptions(
        state_dir=Path(args.state_dir).resolve(), log_dir=out / "logs", run_id=run_id,
        api_workers=args.api_workers, api_threads=args.api_threads, celery_workers=args.celery_workers,
        beat=not args.no_beat, rate_limit=args.rate_limit, database_url=args.database_url, redis_url=args.redis_url,
        kafka=args.kafka, use_running=args.use_running, token=args.token,
        count_sql_dir=(out / "profile" / "sqlcount") if args.profile else None, keep_db=args.keep_db,
        log_level=args.log_level, database_only=set(scenarios) <= DATABASE_ONLY,
    )
    results: dict = {
        "run_id": run_id, "started": datetime.now().isoformat(timespec="seconds"), "argv": sys.argv[1:],
        "machine": {"cpus": os.cpu_count(), "load_avg_before": [round(x, 2) for x in os.getloadavg()],
                    "python": sys.version.split()[0]},
        "config": {k: v for k, v in vars(args).items() if k not in ("token",)},
        "code": _git_state(),
        "scenarios": {},
    }
    say(f"results in {out}; load average {results['machine']['load_avg_before']} on {os.cpu_count()} CPUs")
    stack = Stack(opts)
    sampler = None
    try:
        t = time.monotonic()
        stack.start()
        if opts.database_only:
            say(f"PostgreSQL up in {time.monotonic() - t:.1f}s (no process of the stack: {', '.join(scenarios)} "
                "needs none)")
        else:
            say(f"stack up in {time.monotonic() - t:.1f}s: API {stack.api_url}, {args.api_workers}×"
                f"{args.api_threads} gunicorn gthread, {args.celery_workers} Celery pool processes")
        from bench.procstats import Sampler
        from bench.scenarios import Runner

        sampler = Sampler(stack.roots, pg_conn_factory=stack.pg, postmaster=stack.postmaster).start()
        runner = Runner(stack, sampler, out, run_id, clients=args.clients, progress=not args.no_progress)
        if not opts.database_only:
            runner.setup_wallets(args.wallets)
        sc = results["scenarios"]
        # The ceiling is the median of three no-op drains (~10 s each) taken around the load scenarios: one drain
        # moved ±10 % between runs on a shared 2-core VM, and the machine's slow spells come and go within a run.
        drains: list[dict] = []

        def drain_ceiling() -> None:
            if "ceiling" in scenarios:
                drains.append(runner.ceiling(args.ceiling_tasks))
                say(f"ceiling drain {len(drains)}: {drains[-1]['completed_per_s']:.0f} no-op tasks/s")

        drain_ceiling()
        ceiling_rate = None  # the load scenarios' ratios are set once every drain is in

        def fresh_topic(scenario: str, webhooks: bool = False) -> None:
            """Each load scenario on its own Kafka topic (see Stack.fresh_topic), the sampler told the new pids."""
            stack.fresh_topic(scenario, webhooks=webhooks)
            for kind in ("relay", "history-worker", *stack.WEBHOOK_KINDS):
                if kind in stack.roots:
                    sampler.add_root(kind, stack.roots[kind])

        if "uniform" in scenarios:
            fresh_topic("uniform")
        profiler = None
        if args.profile and stack.procs:
            from bench.profile import Profiler, sql_counts

            targets = {k: stack.roots[k] for k in ("api", "celery", "relay", "history-worker") if k in stack.roots}
            profiler = Profiler(out / "profile", targets)
            sql_before = sql_counts(opts.count_sql_dir)
        if "uniform" in scenarios:
            sc["uniform"] = runner.load_scenario("uniform", "transfer", args.duration, args.warmup, ceiling_rate,
                                                 max_outstanding=args.max_outstanding, profiler=profiler)
            say(f"uniform: {sc['uniform']['completed_per_s']:.0f} completed/s")
            drain_ceiling()
            if profiler is not None:
                time.sleep(1.5)  # the counters are written every second
                results["profile"] = analyse_profile(out / "profile", stack, sampler, sql_before,
                                                     sql_counts(opts.count_sql_dir), sc["uniform"])
        if "webhooks" in scenarios:
            from bench import webhooks

            fresh_topic("webhooks", webhooks=True)
            sc["webhooks"] = webhooks.run(runner, args.duration, args.warmup, ceiling_rate, args.max_outstanding,
                                          say=say)
        if "hot" in scenarios:
            fresh_topic("hot")
            sc["hot"] = runner.load_scenario("hot", "hot", args.duration, args.warmup, ceiling_rate,
                                             max_outstanding=args.max_outstanding)
            results["hot_wallet_check"] = runner.hot_wallet_check(sc["hot"], "0.01", "1000000000.00")
            say(f"hot: {sc['hot']['completed_per_s']:.0f} completed/s")
            drain_ceiling()
        if "half_load" in scenarios:
            rate = args.half_rate or (0.5 * sc["uniform"]["completed_per_s"] if "uniform" in sc else None)
            if not rate:
                raise SystemExit("half_load needs uniform in the same run or --half-rate")
            fresh_topic("half_load")
            sc["half_load"] = runner.load_scenario("half_load", "transfer", args.duration, args.warmup, ceiling_rate,
                                                   rate=rate)
        if "pgbench" in scenarios:
            from bench import pgbench

            results["pgbench"] = pgbench.run(stack, run_id, args.duration, out, sampler, scale=args.pgbench_scale,
                                             clients=args.pgbench_clients, threads=args.pgbench_threads, say=say)
            pgb = results["pgbench"]
            say(f"pgbench: {pgb['tps']:.0f} tps (without initial connection time), latency average "
                f"{pgb['latency_avg_ms']} ms, PostgreSQL {pgb['server_version']}")
        bulk_runner = None
        if "bulk" in scenarios or args.bulk_memory:
            from bench.bulk import BulkRunner

            bulk_runner = BulkRunner(runner, size=args.bulk_size, clients=args.bulk_clients,
                                     per_client=args.bulk_outstanding)
            bulk_runner.setup_wallets(args.bulk_wallets or 10 * args.wallets)
        if "bulk" in scenarios:
            fresh_topic("bulk")
            results["bulk"] = bulk_runner.run("bulk", args.duration, args.warmup)
            b = results["bulk"]
            say(f"bulk: {b['applied_per_s']:.0f} applied transfers/s ({b['size']} per batch, {b['clients']} clients "
                f"× {b['per_client']} batches, {b['wallets']} wallets)")
        while drains and len(drains) < 3:
            drain_ceiling()
        if drains:
            median = sorted(drains, key=lambda d: d["completed_per_s"])[1]
            sc = results["scenarios"] = {"ceiling": {**median, "drains_per_s": [d["completed_per_s"] for d in drains]},
                                         **sc}
            ceiling_rate = median["completed_per_s"]
            for fig in sc.values():
                if "ratio_to_ceiling" in fig:
                    fig["ratio_to_ceiling"] = round(fig["completed_per_s"] / ceiling_rate, 3)
            say(f"ceiling: {ceiling_rate:.0f} no-op tasks/s (median of the drains "
                f"{' / '.join(f'{d:.0f}' for d in sc['ceiling']['drains_per_s'])})")
        if "drain" in scenarios and stack.procs:
            fresh_topic("drain")
            drains_by_workers = {}
            for workers in (int(w) for w in args.drain_workers.split(",")):
                fig = runner.drain(args.drain_commands, workers, args.drain_pool)
                drains_by_workers[str(workers)] = fig
                say(f"drain with {workers} {args.drain_pool} worker processes: {fig['drained_per_s']:.0f} jobs/s")
            results["drain"] = drains_by_workers
            stack.restart_worker(args.celery_workers)  # as the other scenarios ran
            sampler.add_root("celery", stack.roots["celery"])
        if args.memory:
            fresh_topic("memory")
            sc["memory"] = runner.memory(args.memory, args.max_outstanding)
        if args.bulk_memory:
            fresh_topic("bulk_memory")
            results["bulk_memory"] = bulk_runner.memory(args.bulk_memory, args.warmup)
        if "search" in scenarios:
            from bench import search

            results["search"] = search.run(stack.env["DATABASE_URL"], run_id, out, args.search_transactions,
                                           args.search_iterations, keep_db=args.keep_db, say=say)
        if stack.procs:
            results["audit"] = runner.audit()
        results["machine"]["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
        if _git_state() != results["code"]:
            results["code_changed_during_run"] = _git_state()
            say("warning: the checkout changed during the run (processes started before it keep the old code)")
        if args.compare:
            previous = json.loads(Path(args.compare).read_text())
            results["compared_with"] = args.compare
            results["comparison"] = report.compare(results, previous)
        results["ratios"] = {k: round(v, 3) for k, v in report.ratios(results).items()}
        results["targets"] = report.targets(results)
        results["plots"] = report.plots(results, out)
    finally:
        if sampler is not None:
            sampler.stop()
        stack.stop()
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    text = report.table(results)
    (out / "table.txt").write_text(text + "\n")
    print("\n" + text, flush=True)
    if args.profile and "profile" in results:
        print(f"\nprofile: {out / 'profile' / 'analysis.md'}")
    print(f"\nresults: {out}")
    return 0


def _git_state() -> dict:
    """The commit measured, and whether the working tree differed from it (figures belong to code)."""
    import subprocess

    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True)
        return r.stdout.rstrip("\n") if r.returncode == 0 else ""

    return {"commit": git("rev-parse", "--short", "HEAD").strip(),
            # Only code counts: notes and docs edited during a run do not change what was measured.
            "dirty": sorted(p for p in (line[3:] for line in git("status", "--porcelain", "--untracked-files=no")
                                        .splitlines()) if not p.endswith((".md", ".txt")))}


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def analyse_profile(pdir: Path, stack: Stack, sampler, sql_before: dict, sql_after: dict, uni: dict) -> dict:
    """py-spy summaries, SQL statements per command per process kind, and analysis.md."""
    from bench.profile import diff_sql, read_collapsed, summarise

    commands = max(1, uni["completed"])
    kinds = sampler._kinds()

    def kind_of(pid: int, d: dict) -> str:
        if pid in kinds:
            return kinds[pid]
        return "celery-pool" if d.get("ppid") == stack.roots.get("celery") else f"other:{' '.join(d['argv'][:3])}"

    sql = diff_sql(sql_before, sql_after, kind_of)
    sql_per = {k: {s: round(n / commands, 3) for s, n in c.most_common()} for k, c in sql.items()}
    summaries = {}
    for kind, pid in stack.roots.items():
        path = pdir / f"{kind}.collapsed.txt"
        if not path.exists():
            continue

        def role(proc: str, kind=kind, pid=pid) -> str:
            if not proc:
                return kind
            m = re.match(r"process (\d+)", proc)
            own = m.group(1) if m else ""
            if kind == "celery":
                return "celery-main" if own == str(pid) else "celery-pool"
            if kind == "api":
                return "gunicorn-master" if own == str(pid) else "gunicorn-worker"
            return kind

        summaries[kind] = summarise(read_collapsed(path), commands, role)
    doc = {"commands": commands, "cpu_per_command_ms": {k: v["cpu_ms_per_command"] for k, v in uni["processes"].items()},
           "sql_per_command": sql_per, "py_spy": summaries,
           "redis_calls_per_command": uni["redis_calls_per_command"], "pg_per_command": uni["pg_per_command"]}
    (pdir / "profile.json").write_text(json.dumps(doc, indent=2))
    lines = [f"# Profile of the uniform scenario ({commands} commands, {uni['completed_per_s']} completed/s, "
             f"load {uni['load_avg_end']})", "",
             "py-spy (100 Hz, --nonblocking, --gil: only the GIL holder is sampled, so samples ≈ Python CPU) and the SQL counters slow the processes down: the figures of this run "
             "are not the benchmark's; the shares are what matter.", "",
             "## CPU per completed command (psutil, ms)", ""]
    for k, v in sorted(doc["cpu_per_command_ms"].items(), key=lambda kv: -kv[1]):
        lines.append(f"- {k}: {v}")
    lines.append(f"- **total: {sum(doc['cpu_per_command_ms'].values()):.3f}**")
    lines += ["", "## Round trips per command", "",
              f"- Redis calls: {sum(uni['redis_calls_per_command'].values()):.2f} "
              f"({', '.join(f'{k} {v}' for k, v in uni['redis_calls_per_command'].items())})",
              f"- PostgreSQL: {uni['pg_per_command']}", ""]
    for kind, stmts in sorted(sql_per.items()):
        total = sum(v for s, v in stmts.items() if not s.startswith("many-rows"))
        lines.append(f"### SQL calls per command from {kind}: {total:.2f} (each also pays BEGIN)")
        lines += [f"- {v} × `{s}`" for s, v in stmts.items()]
        lines.append("")
    for kind, s in summaries.items():
        lines += [f"## py-spy: {kind} — {s['ms_per_command']} ms CPU per command", ""]
        for role, ms in s["by_role"].items():
            lines.append(f"### {role}: {ms} ms per command")
            lines.append("Self time by package: " + ", ".join(
                f"{p} {v}" for p, v in s["self_by_package"].get(role, {}).items()))
            lines.append("")
            lines.append("Inclusive, top functions (ms per command):")
            lines += [f"- {v} {f}" for f, v in list(s["inclusive_top"].get(role, {}).items())[:25]]
            lines.append("")
    (pdir / "analysis.md").write_text("\n".join(lines) + "\n")
    return {"analysis": str(pdir / "analysis.md"), "sql_per_command": sql_per,
            "py_spy_ms_per_command": {k: v["by_role"] for k, v in summaries.items()}}


if __name__ == "__main__":
    sys.exit(main())
