"""The printed table, the targets of issues 7, 16 and 19 with pass/fail, and the PNG plots."""
from __future__ import annotations

import math
from pathlib import Path

MEMORY_FLAT_MB_PER_100K = 5.0
BULK_OVER_PGBENCH = 0.5  # applied transfers/s through POST /batches ÷ pgbench's TPC-B tps (issue 16)
BULK_OVER_UNIFORM = 5.0  # ÷ the one-command-per-request uniform rate of the same run


def targets(results: dict) -> list[dict]:
    """Issue 7's targets evaluated on this run (None = not measured in this run)."""
    sc = results["scenarios"]
    ceiling = sc.get("ceiling", {}).get("completed_per_s")
    uni, hot, half, mem = sc.get("uniform"), sc.get("hot"), sc.get("half_load"), sc.get("memory")
    out = []

    def add(name, value, target, ok):
        out.append({"target": name, "value": value, "goal": target, "pass": ok, "issue": 7})

    if uni and ceiling:
        r = uni["ratio_to_ceiling"]
        add("uniform: completed/s ÷ ceiling", r, "≥ 0.30", r >= 0.30)
        lag = uni["history_lag_ms"]["p99"]
        add("uniform: history lag p99 (ms)", lag, "≤ 1000", lag is not None and lag <= 1000)
    if hot and uni:
        r = round(hot["completed_per_s"] / max(1e-6, uni["completed_per_s"]), 3)
        add("hot wallet: completed/s ÷ uniform", r, "≥ 0.60", r >= 0.60)
        check = results.get("hot_wallet_check", {})
        audit = results.get("audit", {})
        lost = check.get("lost_updates")
        add("hot wallet: lost updates (balance check + ledger audit)",
            "none" if lost is False and audit.get("ok") else f"balance={check.get('hot_wallet_balance')} "
            f"expected={check.get('expected')} audit_ok={audit.get('ok')}", "none",
            lost is False and bool(audit.get("ok")))
        failed = sum(hot["failed_by_code"].values())
        add("hot wallet: jobs failed (e.g. conflict retries ran out)", failed, "0", failed == 0)
    if half:
        p99 = half["completion_latency_ms"]["p99"]
        add("half load: completion latency p99 (ms)", p99, "≤ 100", p99 is not None and p99 <= 100)
        lag = half["history_lag_ms"]["p99"]
        add("half load: history lag p99 (ms)", lag, "≤ 250", lag is not None and lag <= 250)
    if mem:
        for kind, s in mem.get("rss_slope", {}).items():
            v = s["mb_per_100k_commands"]
            add(f"memory: {kind} RSS growth (MB per 100k commands)", v, f"≤ {MEMORY_FLAT_MB_PER_100K}",
                v <= MEMORY_FLAT_MB_PER_100K)
    drain = results.get("drain", {})
    if len(drain) >= 2:
        few, many = sorted(drain.values(), key=lambda d: d["workers"])[::len(drain) - 1]
        r = round(many["drained_per_s"] / max(1e-6, few["drained_per_s"]), 3)
        add(f"drain: {many['workers']} worker processes ÷ {few['workers']}", r, "≥ 1.6", r >= 1.6)
    cmp = results.get("comparison")
    if cmp:
        worst = max((abs(v["change"]) for v in cmp.values() if v["change"] is not None), default=0.0)
        add(f"reproducible vs {results.get('compared_with')} (worst ratio change)", round(worst, 3), "≤ 0.15",
            worst <= 0.15)
    out += bulk_targets(results)
    from bench import search

    out += search.targets(results)
    return out


def bulk_targets(results: dict) -> list[dict]:
    """Issue 16's targets (bulk submissions) evaluated on this run."""
    from bench.bulk import PYTHON_KINDS

    bulk, mem = results.get("bulk"), results.get("bulk_memory")
    out = []

    def add(name, value, target, ok):
        out.append({"target": name, "value": value, "goal": target, "pass": bool(ok), "issue": 16})

    r = ratios(results)
    if "bulk/pgbench" in r:
        add("bulk: applied transfers/s ÷ pgbench tps", round(r["bulk/pgbench"], 3), f"≥ {BULK_OVER_PGBENCH}",
            r["bulk/pgbench"] >= BULK_OVER_PGBENCH)
    if "bulk/uniform" in r:
        add("bulk: applied transfers/s ÷ uniform completed/s", round(r["bulk/uniform"], 3), f"≥ {BULK_OVER_UNIFORM}",
            r["bulk/uniform"] >= BULK_OVER_UNIFORM)
    for fig in (bulk, mem):
        if fig:
            failed = sum(fig["failed_by_code"].values())
            add(f"{fig['name']}: jobs failed (every wallet is funded enough)", failed, "0", failed == 0)
            add(f"{fig['name']}: history rows (2 per applied transfer)",
                f"{fig['history_rows']} of {fig['history_rows_expected']}", "all",
                fig["history_rows"] >= fig["history_rows_expected"])
    if mem:
        for kind in PYTHON_KINDS:
            s = mem.get("rss_slope", {}).get(kind)
            if s:
                v = s["mb_per_100k_commands"]
                add(f"bulk memory: {kind} RSS growth (MB per 100k commands)", v, f"≤ {MEMORY_FLAT_MB_PER_100K}",
                    v <= MEMORY_FLAT_MB_PER_100K)
    return out


def ratios(results: dict) -> dict[str, float]:
    sc = results["scenarios"]
    out = {}
    ceiling = sc.get("ceiling", {}).get("completed_per_s")
    if ceiling and "uniform" in sc:
        out["uniform/ceiling"] = sc["uniform"]["completed_per_s"] / ceiling
    if "hot" in sc and "uniform" in sc:
        out["hot/uniform"] = sc["hot"]["completed_per_s"] / max(1e-6, sc["uniform"]["completed_per_s"])
    if ceiling and "hot" in sc:
        out["hot/ceiling"] = sc["hot"]["completed_per_s"] / ceiling
    drain = results.get("drain", {})
    if len(drain) >= 2:
        few, many = sorted(drain.values(), key=lambda d: d["workers"])[::len(drain) - 1]
        out[f"drain {many['workers']}/{few['workers']}"] = many["drained_per_s"] / max(1e-6, few["drained_per_s"])
    bulk, pgb = results.get("bulk"), results.get("pgbench")
    if bulk and pgb and pgb.get("tps"):
        out["bulk/pgbench"] = bulk["applied_per_s"] / pgb["tps"]
    if bulk and "uniform" in sc and sc["uniform"]["completed_per_s"]:
        out["bulk/uniform"] = bulk["applied_per_s"] / sc["uniform"]["completed_per_s"]
    return out


def compare(results: dict, previous: dict) -> dict:
    now, then = ratios(results), ratios(previous)
    return {k: {"now": round(v, 3), "then": round(then[k], 3) if k in then else None,
                "change": round(v / then[k] - 1, 3) if then.get(k) else None} for k, v in now.items()}


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"
    return str(v)


def table(results: dict) -> str:
    sc = results["scenarios"]
    lines = []
    head = ("scenario", "done/s", "×ceil", "accept p50/95/99 ms", "complete p50/95/99 ms", "attempts",
            "failed", "hist lag p50/99 ms", "load avg")
    rows = []
    for name, f in sc.items():
        if name == "ceiling":
            rows.append((name, _fmt(f["completed_per_s"]), "1.000", "-", "-", "-", "-", "-",
                         ""))
            continue
        a, c, lag = f["accept_latency_ms"], f["completion_latency_ms"], f["history_lag_ms"]
        rows.append((
            name + (f" @{f['offered_rate']:.0f}/s" if f.get("offered_rate") else ""),
            _fmt(f["completed_per_s"]), _fmt(f["ratio_to_ceiling"]),
            "/".join(_fmt(a[k]) for k in ("p50", "p95", "p99")), "/".join(_fmt(c[k]) for k in ("p50", "p95", "p99")),
            _fmt(f["attempts_per_command"]), str(sum(f["failed_by_code"].values()) or 0)
            + (f" {f['failed_by_code']}" if f["failed_by_code"] else ""),
            "/".join(_fmt(lag[k]) for k in ("p50", "p99")),
            "/".join(f"{x:.1f}" for x in f["load_avg_end"]),
        ))
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*head))
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt.format(*r) for r in rows]
    lines.append("")
    # CPU and memory per process kind.
    kinds = sorted({k for f in sc.values() for k in f.get("processes", {})})
    if kinds:
        lines.append("CPU ms per completed command (peak RSS MB) by process kind:")
        names = list(sc)
        w0 = max(len(k) for k in kinds)
        lines.append(" " * (w0 + 2) + "  ".join(f"{n:>18}" for n in names))
        for k in kinds:
            cells = []
            for n in names:
                p = sc[n].get("processes", {}).get(k)
                cells.append(f"{p['cpu_ms_per_command']:>8.3f} ({p['peak_rss_mb']:>6.0f})" if p else " " * 18)
            lines.append(f"{k:<{w0}}  " + "  ".join(f"{c:>18}" for c in cells))
        tot = []
        for n in names:
            procs = sc[n].get("processes", {})
            tot.append(f"{sum(p['cpu_ms_per_command'] for p in procs.values()):>8.3f}         ")
        lines.append(f"{'total':<{w0}}  " + "  ".join(f"{c:>18}" for c in tot))
        lines.append("")
    for name in ("uniform", "hot"):
        if name in sc:
            rc = sc[name].get("redis_calls_per_command", {})
            pg = sc[name].get("pg_per_command", {})
            lines.append(f"{name}: per command: Redis calls {sum(rc.values()):.1f} "
                         f"({', '.join(f'{k} {v}' for k, v in list(rc.items())[:6])}); "
                         f"PostgreSQL transactions {pg.get('xact_commit', 0) + pg.get('xact_rollback', 0):.2f}, "
                         f"rows inserted {pg.get('tup_inserted', 0)}, updated {pg.get('tup_updated', 0)}")
    for fig in results.get("drain", {}).values():
        cpu = sum(p["cpu_ms_per_command"] for p in fig.get("processes", {}).values())
        lines.append(f"drain: {fig['queued_at_start']} queued jobs, {fig['workers']} {fig['pool']} worker processes: "
                     f"{fig['drained_per_s']:.0f} jobs/s ({fig['drain_s']:.1f} s, {fig['attempts_per_command']} "
                     f"attempts per command, {cpu:.2f} ms CPU per command)")
    lines += bulk_lines(results)
    from bench import search

    lines += search.lines(results)
    lines.append("")
    code = results.get("code", {})
    m = results.get("machine", {})
    lines.append(f"commit {code.get('commit')}{' (+ uncommitted changes)' if code.get('dirty') else ''}; "
                 f"{m.get('cpus')} CPUs, load average before {m.get('load_avg_before')} after {m.get('load_avg_after')}"
                 + ("; THE CHECKOUT CHANGED DURING THE RUN" if results.get("code_changed_during_run") else ""))
    lines.append("")
    for issue, title in ((7, "Targets (issue 7):"), (16, "Targets (issue 16, bulk submissions):"),
                         (19, "Targets (issue 19, search):")):
        chosen = [t for t in results.get("targets", []) if t.get("issue", 7) == issue]
        if issue == 7 or chosen:
            lines.append(title)
        for t in chosen:
            mark = "PASS" if t["pass"] else "FAIL"
            lines.append(f"  [{mark}] {t['target']}: {t['value']} (goal {t['goal']})")
    return "\n".join(lines)


def bulk_lines(results: dict) -> list[str]:
    """The pgbench and bulk figures of the summary, with the two ratios and their targets."""
    lines: list[str] = []
    pgb = results.get("pgbench")
    if pgb:
        lines.append("")
        lines.append(f"pgbench (PostgreSQL {pgb['server_version']}, scale {pgb['scale']}, {pgb['clients']} clients, "
                     f"{pgb['threads']} threads, TPC-B-like, prepared, {pgb['duration_s']:.0f} s): "
                     f"{_fmt(pgb['tps'])} tps without initial connection time, latency average "
                     f"{_fmt(pgb['latency_avg_ms'])} ms, {pgb['transactions']} transactions, "
                     f"{pgb.get('failed_transactions') or 0} failed")
        lines.append(f"  {pgb['commands']['env']} {pgb['commands']['run']}")
        if pgb.get("server_settings"):
            lines.append("  server: " + ", ".join(f"{k}={v}" for k, v in sorted(pgb["server_settings"].items())))
    for key in ("bulk", "bulk_memory"):
        b = results.get(key)
        if not b:
            continue
        a, c, lag = b["accept_latency_ms"], b["completion_latency_ms"], b["history_lag_ms"]
        failed = sum(b["failed_by_code"].values())
        lines.append("")
        lines.append(f"{key}: {b['size']} transfers per POST /batches, {b['clients']} clients × {b['per_client']} "
                     f"unfinished batches, {b['wallets']} wallets, {b['duration_s']:.0f} s "
                     f"({b['batches_accepted']} batches = {b['jobs']} jobs; HTTP {b['http_status']})")
        lines.append(f"  applied: {_fmt(b['applied_per_s'])} transfers/s (jobs succeeded by completed_at in the "
                     f"{b['window_s']:.0f} s steady window); failed {failed}"
                     + (f" {b['failed_by_code']}" if failed else "")
                     + f"; attempts per command {b['attempts_per_command']} (max {b['attempts_max']}); "
                     f"commands queue empty in {_fmt(b.get('queue_empty_fraction'))} of the samples "
                     f"(median length {_fmt(b.get('queue_length_median'))} tasks)")
        lines.append(f"  POST /batches p50/95/99 {'/'.join(_fmt(a[k]) for k in ('p50', 'p95', 'p99'))} ms; "
                     f"job latency (completed_at − created_at) p50/95/99 "
                     f"{'/'.join(_fmt(c[k]) for k in ('p50', 'p95', 'p99'))} ms; history lag p50/99/max "
                     f"{'/'.join(_fmt(lag[k]) for k in ('p50', 'p99', 'max'))} ms "
                     f"({b['history_rows']} of {b['history_rows_expected']} rows)")
        steady, whole = b.get("cpu_ms_per_transfer", {}), b.get("cpu_ms_per_transfer_run", {})
        if steady:
            lines.append("  CPU ms per applied transfer (steady window | whole run until the history is complete):")
            w = max(len(k) for k in steady)
            for k, v in steady.items():
                lines.append(f"    {k:<{w}}  {v:>7.3f} | {whole.get(k, 0):>7.3f}")
        if b.get("rss_slope"):
            lines.append("  RSS over the run (MB at start → end, growth per 100k commands over the second half; the "
                         "target is on the stack's Python processes: PostgreSQL backends map more of shared_buffers "
                         "as they touch it, tansu keeps its topic in memory):")
            for kind, sl in b["rss_slope"].items():
                lines.append(f"    {kind:<16} {sl['rss_start_mb']:>8.1f} → {sl['rss_end_mb']:>8.1f}  "
                             f"{sl['mb_per_100k_commands'] + 0.0:+.2f} MB/100k")
    r = ratios(results)
    if "bulk/pgbench" in r or "bulk/uniform" in r:
        lines.append("")
        parts = []
        if "bulk/pgbench" in r:
            parts.append(f"bulk ÷ pgbench {r['bulk/pgbench']:.3f} (target ≥ {BULK_OVER_PGBENCH})")
        if "bulk/uniform" in r:
            parts.append(f"bulk ÷ uniform {r['bulk/uniform']:.2f} (target ≥ {BULK_OVER_UNIFORM:g})")
        lines.append("ratios: " + "; ".join(parts))
    elif results.get("bulk"):
        lines.append("")
        lines.append(f"ratios: bulk ÷ pgbench (target ≥ {BULK_OVER_PGBENCH}) and bulk ÷ uniform (target ≥ "
                     f"{BULK_OVER_UNIFORM:g}) need pgbench / uniform in the same run")
    return lines


def _with_gaps(timeline: list[list[float]]) -> tuple[list[float], list[float]]:
    """x and y of a per-second timeline, broken (NaN) where seconds are missing: no line across the unmeasured."""
    xs: list[float] = []
    ys: list[float] = []
    for x, y in timeline:
        if xs and x - xs[-1] > 1:
            xs.append(math.nan)
            ys.append(math.nan)
        xs.append(x)
        ys.append(y)
    return xs, ys


def plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = results["scenarios"]
    files = []
    # Throughput over time.
    fig, ax = plt.subplots(figsize=(10, 5))
    for name, f in sc.items():
        tl = f.get("timeline") or []
        if tl:
            ax.plot(*_with_gaps(tl), label=f"{name} ({f['completed_per_s']:.0f}/s)")
    for key, rate, what in (("bulk", "applied_per_s", "applied transfers/s"), ("pgbench", "tps", "TPC-B tps")):
        f = results.get(key) or {}
        tl = f.get("timeline") or []
        if tl:
            ax.plot(*_with_gaps(tl), "--" if key == "pgbench" else "-", label=f"{key} ({f[rate]:.0f} {what})")
    ax.set_xlabel("seconds since the scenario started")
    ax.set_ylabel("completed per second")
    ax.set_title("Throughput over time (jobs completed_at; ceiling: no-op tasks drained; pgbench: its progress)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=100)
    plt.close(fig)
    files.append("throughput.png")
    # Latency percentiles.
    names = [n for n in sc if n != "ceiling"]
    bulk = results.get("bulk")
    if names or bulk:
        fig, axes = plt.subplots(1, 2, figsize=(12, 5))
        figs = {**{n: sc[n] for n in names}, **({"bulk": bulk} if bulk else {})}
        for ax, key, title in ((axes[0], "accept_latency_ms", "accept (HTTP round trip; bulk: a whole batch)"),
                               (axes[1], "completion_latency_ms", "completion (created_at → completed_at)")):
            width = 0.25
            for i, p in enumerate(("p50", "p95", "p99")):
                vals = [f[key][p] or 0 for f in figs.values()]
                ax.bar([j + i * width for j in range(len(figs))], vals, width, label=p)
            ax.set_xticks([j + width for j in range(len(figs))], list(figs))
            ax.set_ylabel("ms")
            ax.set_yscale("log")
            ax.set_title(title)
            ax.legend()
            ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=100)
        plt.close(fig)
        files.append("latency.png")
        # History lag over time.
        fig, ax = plt.subplots(figsize=(10, 5))
        for n, f in figs.items():
            s = f.get("lag_series") or []
            if s:
                ax.plot([x[0] for x in s], [x[1] for x in s], ".", markersize=2,
                        label=f"{n} (p99 {f['history_lag_ms']['p99']} ms)")
        ax.set_xlabel("event time, seconds since the scenario started")
        ax.set_ylabel("history lag, ms (recorded_at − occurred_at)")
        ax.set_yscale("log")
        ax.set_title("History lag")
        ax.legend(markerscale=5)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "history_lag.png", dpi=100)
        plt.close(fig)
        files.append("history_lag.png")
    mem = sc.get("memory")
    if mem and mem.get("rss_series"):
        fig, ax = plt.subplots(figsize=(10, 5))
        for kind in ("api", "celery-main", "celery-pool"):
            pts = [(t, s[kind]) for t, s in mem["rss_series"] if kind in s]
            slope = mem.get("rss_slope", {}).get(kind, {}).get("mb_per_100k_commands")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"{kind} (slope {slope} MB/100k)")
        ax.set_xlabel("seconds")
        ax.set_ylabel("RSS MB (sum over the kind's processes)")
        ax.set_title(f"Memory over {mem['submitted']} commands")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "memory.png", dpi=100)
        plt.close(fig)
        files.append("memory.png")
    bmem = results.get("bulk_memory")
    if bmem and bmem.get("rss_series"):
        from bench.bulk import PYTHON_KINDS

        fig, axes = plt.subplots(1, 2, figsize=(14, 5))
        kinds = sorted({k for _, s in bmem["rss_series"] for k in s})
        for ax, chosen, title in ((axes[0], [k for k in kinds if k in PYTHON_KINDS], "the stack's Python processes"),
                                  (axes[1], [k for k in kinds if k not in PYTHON_KINDS], "servers, load generator")):
            for kind in chosen:
                pts = [(t, s[kind]) for t, s in bmem["rss_series"] if kind in s]
                slope = bmem.get("rss_slope", {}).get(kind, {}).get("mb_per_100k_commands")
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"{kind} ({slope} MB/100k)")
            ax.set_xlabel("seconds")
            ax.set_ylabel("RSS MB (sum over the kind's processes)")
            ax.set_title(title)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        fig.suptitle(f"Memory over {bmem['jobs']} commands in batches of {bmem['size']}")
        fig.tight_layout()
        fig.savefig(out / "bulk_memory.png", dpi=100)
        plt.close(fig)
        files.append("bulk_memory.png")
    return files
