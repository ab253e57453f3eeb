"""The Grafana dashboard and the alert rules only use series the system exports."""
import json
import re
from pathlib import Path

import yaml

from app.observability import metrics

OPS = Path(__file__).resolve().parents[2] / "ops"
DASHBOARD = OPS / "grafana" / "wallet-dashboard.json"
EXPORTED = {
    *(name.removesuffix("_total") + "_total" for name in metrics.SHARED_COUNTERS),
    *metrics.SHARED_HISTOGRAMS, *metrics.SHARED_GAUGES, *metrics.SHARED_LABELED_GAUGES,
    "wallet_commands_accepted_total", "wallet_http_requests_total", "wallet_http_request_duration_seconds",
    "wallet_queue_depth", "wallet_jobs_unfinished", "wallet_outbox_backlog",
    "wallet_outbox_oldest_unpublished_age_seconds", "wallet_history_dead_letters_stored", "wallet_audit_last_ok",
    "wallet_pipeline_processes", "wallet_pipeline_stalled_seconds", "wallet_webhook_deliveries_pending",
    "wallet_webhook_oldest_pending_age_seconds",
}


def test_every_panel_queries_an_exported_series():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for series in re.findall(r"wallet_[a-z_]+", target["expr"]):
                base = re.sub(r"_(bucket|count|sum)$", "", series)
                assert base in EXPORTED or series in EXPORTED, (panel["title"], series)


def test_every_alert_rule_is_complete_and_uses_exported_series():
    rules = yaml.safe_load((OPS / "prometheus-alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in alerts}
    assert {"WalletOutboxNotDraining", "WalletRelayStalled", "WalletHistoryStalled", "WalletHistoryLagHigh"} <= names
    for rule in alerts:
        assert rule["expr"] and rule["for"] and rule["labels"]["severity"] and rule["annotations"]["summary"], rule
        for series in re.findall(r"wallet_[a-z_]+", rule["expr"]):
            assert series in EXPORTED, (rule["alert"], series)
    assert "/etc/prometheus/wallet-alerts.yml" in (OPS / "prometheus.yml").read_text()
