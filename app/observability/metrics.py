"""Prometheus metrics.

Two kinds:
- Per-process HTTP metrics of the APIs (prometheus-client, multiprocess mode
  under gunicorn: PROMETHEUS_MULTIPROC_DIR is set by gunicorn.conf.py).
- Cluster-wide counters of what workers, relay and history workers do (jobs
  completed, conflicts, events published...). Those processes run on any
  number of hosts, so they add their counts to Redis hashes (one pipelined
  round trip per job); every API's /metrics renders them, together with
  gauges read at scrape time (queue depth, outbox backlog, history lag).
"""
from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from app.adapters import redis_client

log = logging.getLogger(__name__)

PREFIX = "wallet:metrics:"
JOB_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LABEL_SEP = "\x1f"

# Cluster-wide counters: name -> (help, label names).
SHARED_COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "wallet_jobs_completed_total": ("Jobs that became final, by command type, status and error code",
                                    ("type", "status", "code")),
    "wallet_optimistic_lock_conflicts_total": ("Optimistic-lock conflicts met while executing commands", ()),
    "wallet_command_retries_total": ("Deliberate task retries (conflicts past the in-task budget, faults)",
                                     ("reason",)),
    "wallet_events_published_total": ("Outbox events the relay published to Kafka", ()),
    "wallet_history_events_applied_total": ("Kafka events the history worker applied", ()),
    "wallet_history_dead_letters_total": ("Messages the history worker sent to the dead-letter table", ()),
}
SHARED_HISTOGRAMS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    "wallet_job_duration_seconds": ("Time from a command's acceptance to its job being final", ("type",),
                                    JOB_DURATION_BUCKETS),
}
SHARED_GAUGES: dict[str, str] = {
    "wallet_history_lag_seconds": "Age of the newest event in the history worker's last batch, when it was stored",
}
# Gauges with one label, one hash field per label value.
SHARED_LABELED_GAUGES: dict[str, tuple[str, str]] = {
    "wallet_history_consumer_lag": ("Messages on a partition not yet consumed by the history workers", "partition"),
}

# Per-process HTTP metrics of the APIs.
HTTP_REQUESTS = Counter("wallet_http_requests_total", "HTTP requests by route, method and status",
                        ("route", "method", "status"))
HTTP_LATENCY = Histogram("wallet_http_request_duration_seconds", "HTTP request latency by route",
                         ("route", "method"), buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30))
COMMANDS_ACCEPTED = Counter("wallet_commands_accepted_total", "Commands accepted (jobs created) by type", ("type",))

def _field(labels: tuple[str, ...]) -> str:
    return _LABEL_SEP.join(labels)


class SharedMetrics:
    """Batches counter increments and histogram observations into one Redis pipeline."""

    def __init__(self):
        self._pipe = redis_client.client().pipeline(transaction=False)
        self._empty = True

    def inc(self, name: str, *labels: str, amount: float = 1) -> "SharedMetrics":
        self._pipe.hincrbyfloat(PREFIX + name, _field(labels), amount)
        self._empty = False
        return self

    def observe(self, name: str, value: float, *labels: str) -> "SharedMetrics":
        buckets = SHARED_HISTOGRAMS[name][2]
        index = bisect_left(buckets, value)
        bucket = str(buckets[index]) if index < len(buckets) else "+Inf"
        key = PREFIX + name
        self._pipe.hincrbyfloat(key, _field((*labels, "bucket", bucket)), 1)
        self._pipe.hincrbyfloat(key, _field((*labels, "sum")), value)
        self._empty = False
        return self

    def set(self, name: str, value: float) -> "SharedMetrics":
        self._pipe.hset(PREFIX + name, "value", value)
        self._pipe.hset(PREFIX + name, "at", time.time())
        self._empty = False
        return self

    def set_labeled(self, name: str, label: str, value: float) -> "SharedMetrics":
        self._pipe.hset(PREFIX + name, label, value)
        self._empty = False
        return self

    def send(self) -> None:
        """Best effort: metrics never fail the work they describe."""
        if self._empty:
            return
        try:
            self._pipe.execute()
        except redis.RedisError:
            log.debug("could not record metrics in Redis", exc_info=True)


def shared() -> SharedMetrics:
    return SharedMetrics()


class SharedMetricsCollector:
    """Renders the Redis-held cluster-wide metrics at scrape time."""

    def collect(self):
        try:
            pipe = redis_client.client().pipeline(transaction=False)
            names = [*SHARED_COUNTERS, *SHARED_HISTOGRAMS, *SHARED_GAUGES, *SHARED_LABELED_GAUGES]
            for name in names:
                pipe.hgetall(PREFIX + name)
            values = dict(zip(names, pipe.execute()))
        except redis.RedisError:
            return
        for name, (help_text, label_names) in SHARED_COUNTERS.items():
            family = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=label_names)
            if not label_names:  # exists from the start, at 0
                family.add_metric([], sum(float(v) for v in values[name].values()))
            for field, value in values[name].items() if label_names else ():
                labels = field.decode().split(_LABEL_SEP)
                if len(labels) == len(label_names):
                    family.add_metric(labels, float(value))
            yield family
        for name, (help_text, label_names, buckets) in SHARED_HISTOGRAMS.items():
            yield from _histogram(name, help_text, label_names, buckets, values[name])
        for name, help_text in SHARED_GAUGES.items():
            stored = values[name]
            if b"value" in stored:
                family = GaugeMetricFamily(name, help_text)
                family.add_metric([], float(stored[b"value"]))
                yield family
        for name, (help_text, label_name) in SHARED_LABELED_GAUGES.items():
            family = GaugeMetricFamily(name, help_text, labels=[label_name])
            for label, value in sorted(values[name].items()):
                family.add_metric([label.decode()], float(value))
            yield family


def _histogram(name, help_text, label_names, buckets, stored):
    series: dict[tuple, dict] = {}
    for field, value in stored.items():
        parts = field.decode().split(_LABEL_SEP)
        labels, rest = tuple(parts[:len(label_names)]), parts[len(label_names):]
        entry = series.setdefault(labels, {"buckets": {}, "sum": 0.0})
        if rest[:1] == ["bucket"]:
            entry["buckets"][rest[1]] = float(value)
        elif rest == ["sum"]:
            entry["sum"] = float(value)
    family = HistogramMetricFamily(name, help_text, labels=label_names)
    for labels, entry in series.items():
        cumulative, points = 0.0, []
        for bound in [*map(str, buckets), "+Inf"]:
            cumulative += entry["buckets"].get(bound, 0.0)
            points.append((bound, cumulative))
        family.add_metric(list(labels), points, entry["sum"])
    yield family


def render(extra_collectors=()) -> bytes:
    """The /metrics body: this API's processes, the cluster-wide metrics, and scrape-time gauges."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY
        registry = REGISTRY
    scrape_registry = CollectorRegistry()
    scrape_registry.register(SharedMetricsCollector())
    for collector in extra_collectors:
        scrape_registry.register(collector)
    return generate_latest(registry) + generate_latest(scrape_registry)


class SystemGaugesCollector:
    """Gauges read at scrape time from PostgreSQL and Redis: backlogs, ages, the last audit."""

    def collect(self):
        from sqlalchemy import text

        from app.adapters.db import engine

        try:
            pipe = redis_client.client().pipeline(transaction=False)
            for queue in ("commands", "maintenance"):
                pipe.llen(queue)
            depths = pipe.execute()
            family = GaugeMetricFamily("wallet_queue_depth", "Tasks waiting in a Celery queue", labels=["queue"])
            for queue, depth in zip(("commands", "maintenance"), depths):
                family.add_metric([queue], depth)
            yield family
        except redis.RedisError:
            pass
        try:
            with engine().connect() as conn:
                row = conn.execute(text("""
                    SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS backlog,
                           (SELECT extract(epoch FROM now() - min(created_at)) FROM outbox
                             WHERE published_at IS NULL) AS oldest_age,
                           (SELECT count(*) FROM jobs WHERE status = 'queued') AS queued,
                           (SELECT count(*) FROM jobs WHERE status = 'running') AS running,
                           (SELECT ok FROM audit_runs ORDER BY id DESC LIMIT 1) AS audit_ok,
                           (SELECT extract(epoch FROM finished_at) FROM audit_runs ORDER BY id DESC LIMIT 1)
                               AS audit_at,
                           (SELECT count(*) FROM history_dead_letters) AS dead_letters
                """)).mappings().one()
        except Exception:  # noqa: BLE001 - the database is away: no gauges this scrape
            log.debug("could not read gauges", exc_info=True)
            return
        yield _gauge("wallet_outbox_backlog", "Outbox events not yet published to Kafka", row["backlog"])
        yield _gauge("wallet_outbox_oldest_unpublished_age_seconds", "Age of the oldest unpublished outbox event",
                     float(row["oldest_age"] or 0))
        jobs = GaugeMetricFamily("wallet_jobs_unfinished", "Jobs not yet final", labels=["status"])
        jobs.add_metric(["queued"], row["queued"])
        jobs.add_metric(["running"], row["running"])
        yield jobs
        if row["audit_ok"] is not None:
            yield _gauge("wallet_audit_last_ok", "1 when the last ledger audit passed", 1 if row["audit_ok"] else 0)
            yield _gauge("wallet_audit_last_run_timestamp_seconds", "When the last ledger audit finished",
                         float(row["audit_at"]))
        yield _gauge("wallet_history_dead_letters", "Messages in the history dead-letter table", row["dead_letters"])


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text)
    family.add_metric([], value)
    return family
