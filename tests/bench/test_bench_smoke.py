"""A few seconds of `make bench` (every scenario, tiny durations), so the harness cannot rot."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent

LOAD_FIGURES = {
    "completed_per_s", "ratio_to_ceiling", "accept_latency_ms", "completion_latency_ms", "attempts_per_command",
    "failed_by_code", "history_lag_ms", "processes", "timeline", "load_avg_end", "redis_calls_per_command",
    "pg_per_command", "submitted", "completed",
}


def test_bench_smoke(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "KAFKA_GROUP_ID",
                        "WALLET_API_KEYS")}
    cmd = [sys.executable, "-m", "bench", "--duration", "2", "--warmup", "0.5", "--ceiling-tasks", "200",
           "--wallets", "20", "--memory", "150",
           "--drain-commands", "60", "--drain-workers", "1,2", "--search-transactions", "20000",
           "--search-iterations", "3", "--no-beat", "--no-progress", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    results = json.loads((run_dir / "results.json").read_text())

    sc = results["scenarios"]
    assert set(sc) == {"ceiling", "uniform", "webhooks", "hot", "half_load", "memory"}
    assert sc["ceiling"]["completed_per_s"] > 0
    assert sorted(sc["ceiling"]["drains_per_s"])[1] == sc["ceiling"]["completed_per_s"]  # the median of three
    assert sc["uniform"]["ratio_to_ceiling"] == round(sc["uniform"]["completed_per_s"] / sc["ceiling"]["completed_per_s"], 3)
    hooks = sc["webhooks"]["webhooks"]
    assert hooks["notifications"] > 0 and hooks["deliveries_by_status"] == {"succeeded": hooks["notifications"]}
    assert hooks["delivery_latency_ms"]["p99"] is not None
    for name in ("uniform", "webhooks", "hot", "half_load", "memory"):
        fig = sc[name]
        assert LOAD_FIGURES <= set(fig), (name, LOAD_FIGURES - set(fig))
        assert fig["completed"] == fig["submitted"] > 0, name
        assert fig["completed_per_s"] > 0, name
        for key in ("accept_latency_ms", "completion_latency_ms"):
            assert all(fig[key][p] is not None for p in ("p50", "p95", "p99")), (name, key)
        assert fig["history_lag_ms"]["p50"] is not None and fig["history_lag_ms"]["p99"] is not None, name
        assert fig["history_rows"] == fig["history_rows_expected"], name
        assert fig["attempts_per_command"] >= 1
        for kind in ("api", "celery-main", "celery-pool", "relay", "history-worker", "loadgen"):
            assert kind in fig["processes"], (name, kind)
            assert {"cpu_s", "peak_rss_mb", "cpu_ms_per_command"} <= set(fig["processes"][kind])
    # Each load scenario on its own topic: tansu slows as a topic grows (bench.stack.Stack.fresh_topic).
    assert len({sc[name]["kafka_topic"] for name in ("uniform", "hot", "half_load", "memory")}) == 4
    assert sc["half_load"]["offered_rate"] > 0
    drain = results["drain"]
    assert set(drain) == {"1", "2"}
    for workers, fig in drain.items():
        assert fig["workers"] == int(workers) and fig["commands"] == fig["queued_at_start"] == 60, fig
        assert fig["succeeded"] == 60 and fig["drained_per_s"] > 0, fig
    assert "drain 2/1" in results["ratios"]
    assert set(sc["memory"]["rss_slope"]) == {"api", "celery-main", "celery-pool"}
    assert results["hot_wallet_check"]["lost_updates"] is False
    assert results["audit"]["ok"], results["audit"]
    names = {t["target"] for t in results["targets"]}
    assert any(n.startswith("uniform: completed/s") for n in names)
    assert any(n.startswith("half load: completion latency") for n in names)
    assert all(isinstance(t["pass"], bool) for t in results["targets"])
    search = results["search"]
    assert search["load"]["rows"]["journal_entries"] == 20000 and not search["kept"]
    assert all(c["iterations"] == 3 and c["p99_ms"] > 0 for c in search["cases"].values())
    assert any(t["issue"] == 19 for t in results["targets"])
    assert (run_dir / "search_plans.md").stat().st_size > 1000
    for png in ("throughput.png", "latency.png", "history_lag.png", "memory.png"):
        assert (run_dir / png).stat().st_size > 1000, png
    assert "Targets (issue 7)" in proc.stdout
