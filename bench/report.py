"""The printed table, the targets of issue 7 with pass/fail, and the PNG plots."""
from __future__ import annotations

from pathlib import Path

MEMORY_FLAT_MB_PER_100K = 5.0


def targets(results: dict) -> list[dict]:
    """Issue 7's targets evaluated on this run (None = not measured in this run)."""
    sc = results["scenarios"]
    ceiling = sc.get("ceiling", {}).get("completed_per_s")
    uni, hot, half, mem = sc.get("uniform"), sc.get("hot"), sc.get("half_load"), sc.get("memory")
    out = []

    def add(name, value, target, ok):
        out.append({"target": name, "value": value, "goal": target, "pass": ok})

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
    lines.append("")
    code = results.get("code", {})
    m = results.get("machine", {})
    lines.append(f"commit {code.get('commit')}{' (+ uncommitted changes)' if code.get('dirty') else ''}; "
                 f"{m.get('cpus')} CPUs, load average before {m.get('load_avg_before')} after {m.get('load_avg_after')}"
                 + ("; THE CHECKOUT CHANGED DURING THE RUN" if results.get("code_changed_during_run") else ""))
    lines.append("")
    lines.append("Targets (issue 7):")
    for t in results.get("targets", []):
        mark = "PASS" if t["pass"] else "FAIL"
        lines.append(f"  [{mark}] {t['target']}: {t['value']} (goal {t['goal']})")
    return "\n".join(lines)


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
            ax.plot([x[0] for x in tl], [x[1] for x in tl], label=f"{name} ({f['completed_per_s']:.0f}/s)")
    ax.set_xlabel("seconds since the scenario started")
    ax.set_ylabel("completed per second")
    ax.set_title("Throughput over time (jobs completed_at; ceiling: no-op tasks drained)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=100)
    plt.close(fig)
    files.append("throughput.png")
    # Latency percentiles.
    names = [n for n in sc if n != "ceiling"]
    if names:
        fig, axes = plt.subplots(1, 2, figsize=(12, 5))
        for ax, key, title in ((axes[0], "accept_latency_ms", "accept (HTTP round trip)"),
                               (axes[1], "completion_latency_ms", "completion (created_at → completed_at)")):
            width = 0.25
            for i, p in enumerate(("p50", "p95", "p99")):
                vals = [sc[n][key][p] or 0 for n in names]
                ax.bar([j + i * width for j in range(len(names))], vals, width, label=p)
            ax.set_xticks([j + width for j in range(len(names))], names)
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
        for n in names:
            s = sc[n].get("lag_series") or []
            if s:
                ax.plot([x[0] for x in s], [x[1] for x in s], ".", markersize=2,
                        label=f"{n} (p99 {sc[n]['history_lag_ms']['p99']} ms)")
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
    return files
