"""Prometheus metrics.

Two kinds:
- Per-process HTTP metrics of the APIs (prometheus-client, multiprocess mode
  under gunicorn: PROMETHEUS_MULTIPROC_DIR is set by gunicorn.conf.py).
- Cluster-wide counters of what workers, relay and history workers do (jobs
  completed, conflicts, events published...). Those processes run on any
  number of hosts, so they add their counts to Redis hashes; every API's
  /metrics renders them, together with gauges read at scrape time (queue
  depth, outbox backlog, history lag). Each process sums its increments in
  memory and sends them in one pipeline at most once per
  METRICS_FLUSH_INTERVAL_S (1 s), so Redis sees a few calls per second per
  process, not several per job; the series trail the work by up to that long.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from bisect import bisect_left

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from app.adapters import redis_client
from app.config import settings

log = logging.getLogger(__name__)

PREFIX = "wallet:metrics:"
JOB_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LABEL_SEP = "\x1f"
# Distinct (hash, field) pairs a process keeps while Redis is away; past this, new series are dropped
# (existing ones keep adding up, so a long outage costs memory bounded by the label cardinality).
MAX_PENDING_FIELDS = 10_000

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
    "wallet_webhook_deliveries_created_total": ("Webhook deliveries fanned out from events (one per endpoint)", ()),
    "wallet_webhook_attempts_total": ("Webhook delivery attempts, by outcome", ("outcome",)),
}
SHARED_HISTOGRAMS: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    "wallet_job_duration_seconds": ("Time from a command's acceptance to its job being final", ("type",),
                                    JOB_DURATION_BUCKETS),
    "wallet_webhook_attempt_seconds": ("Time a webhook delivery attempt took (the receiver's answer or the error)",
                                       (), JOB_DURATION_BUCKETS),
    "wallet_webhook_delivery_latency_seconds": ("From the event to its webhook delivered (2xx), by notification",
                                                ("type",), JOB_DURATION_BUCKETS),
}
SHARED_GAUGES: dict[str, str] = {
    "wallet_history_lag_seconds": "Age of the newest event in the history worker's last batch, when it was stored",
}
# Gauges with one label, one hash field per label value.
SHARED_LABELED_GAUGES: dict[str, tuple[str, str]] = {
    "wallet_history_consumer_lag": ("Messages on a partition not yet consumed by the history workers", "partition"),
}

QUEUES = ("commands", "maintenance", "webhooks", "webhooks-failing")

# Per-process HTTP metrics of the APIs.
HTTP_REQUESTS = Counter("wallet_http_requests_total", "HTTP requests by route, method and status",
                        ("route", "method", "status"))
HTTP_LATENCY = Histogram("wallet_http_request_duration_seconds", "HTTP request latency by route",
                         ("route", "method"), buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30))
COMMANDS_ACCEPTED = Counter("wallet_commands_accepted_total", "Commands accepted (jobs created) by type", ("type",))

def _field(labels: tuple[str, ...]) -> str:
    return _LABEL_SEP.join(labels)


class SharedMetrics:
    """This process's cluster-wide metrics, summed in memory and sent to Redis in one pipeline when due.

    inc/observe/set only add to dicts in memory and return self, so calls chain.
    A daemon thread sends everything pending in one MULTI/EXEC pipeline once per
    interval (and send() does it when due if that thread is gone); flush() also
    runs at exit and when a Celery pool process shuts down. A failed flush keeps
    its increments for the next one (counters add up, gauges keep their newest
    value), so nothing is lost while Redis is briefly away; the pending set is
    bounded by MAX_PENDING_FIELDS. One instance per process: shared() makes a
    new, empty one in a forked child (the parent sends its own counts).
    """

    def __init__(self, interval: float):
        self.pid = os.getpid()
        self.interval = interval
        self._lock = threading.Lock()
        self._increments: dict[tuple[str, str], float] = {}  # (hash, field) -> amount to add
        self._values: dict[str, dict[str, float]] = {}  # hash -> field -> value (gauges: last wins)
        self._dropped = 0
        self._due = time.monotonic() + interval
        self._flushing = threading.Lock()  # one flush at a time (the thread, a caller or exit)
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="wallet-metrics-flush", daemon=True)
        try:
            self._thread.start()
        except RuntimeError:  # interpreter shutting down: send() flushes instead
            self._thread = None

    # -- recording (the hot path: a dict update under an uncontended lock) ------------------

    def _add(self, key: str, field: str, amount: float) -> None:
        with self._lock:
            pending = self._increments
            if (key, field) in pending:
                pending[(key, field)] += amount
            elif len(pending) < MAX_PENDING_FIELDS:
                pending[(key, field)] = amount
            else:
                self._dropped += 1

    def inc(self, name: str, *labels: str, amount: float = 1) -> "SharedMetrics":
        self._add(PREFIX + name, _field(labels), amount)
        return self

    def observe(self, name: str, value: float, *labels: str) -> "SharedMetrics":
        buckets = SHARED_HISTOGRAMS[name][2]
        index = bisect_left(buckets, value)
        bucket = str(buckets[index]) if index < len(buckets) else "+Inf"
        key = PREFIX + name
        self._add(key, _field((*labels, "bucket", bucket)), 1)
        self._add(key, _field((*labels, "sum")), value)
        return self

    def set(self, name: str, value: float) -> "SharedMetrics":
        with self._lock:
            self._values[PREFIX + name] = {"value": value, "at": time.time()}
        return self

    def set_labeled(self, name: str, label: str, value: float) -> "SharedMetrics":
        with self._lock:
            self._values.setdefault(PREFIX + name, {})[label] = value
        return self

    def send(self) -> None:
        """Flush if due. Best effort: metrics never fail (nor wait for) the work they describe.

        The flusher thread does it when alive, so the caller never waits for Redis."""
        if time.monotonic() >= self._due and (self._thread is None or not self._thread.is_alive()):
            self.flush()

    # -- flushing ----------------------------------------------------------------------------

    def flush(self) -> bool:
        """Send everything pending in one pipeline now; False (and kept for the next flush) if Redis failed."""
        with self._flushing:
            with self._lock:
                increments, values, dropped = self._increments, self._values, self._dropped
                self._increments, self._values, self._dropped = {}, {}, 0
                self._due = time.monotonic() + self.interval
            if dropped:
                log.warning("metrics: %d increments of new series dropped while Redis was away", dropped)
            if not increments and not values:
                return True
            try:
                pipe = redis_client.client().pipeline(transaction=True)  # a scrape sees all of it or none
                for (key, field), amount in increments.items():
                    pipe.hincrbyfloat(key, field, amount)
                for key, fields in values.items():
                    pipe.hset(key, mapping=fields)
                pipe.execute()
                return True
            except (redis.exceptions.ExecAbortError, redis.exceptions.ReadOnlyError):
                log.debug("Redis did not apply the metrics flush; keeping it for the next one", exc_info=True)
                self._keep(increments, values)
                return False
            except redis.ResponseError:
                # A command failed inside EXEC, the others were applied: sending them again would count twice.
                log.warning("metrics: Redis refused part of a flush; its increments are dropped", exc_info=True)
                return True
            except redis.RedisError:
                # Connection lost or timed out: almost always before EXEC was applied. (If the reply to an
                # applied EXEC was lost, these counts go twice; losing them every time Redis blinks is worse.)
                log.debug("could not record metrics in Redis; keeping them for the next flush", exc_info=True)
                self._keep(increments, values)
                return False

    def _keep(self, increments: dict, values: dict) -> None:
        """Put a failed flush back: increments add to what came since, newer gauge values win."""
        with self._lock:
            pending = self._increments
            for key_field, amount in increments.items():
                if key_field in pending:
                    pending[key_field] += amount
                elif len(pending) < MAX_PENDING_FIELDS:
                    pending[key_field] = amount
                else:
                    self._dropped += 1
            for key, fields in values.items():
                newer = self._values.setdefault(key, {})
                for field, value in fields.items():
                    newer.setdefault(field, value)

    def _run(self) -> None:
        while os.getpid() == self.pid:
            time.sleep(max(0.01, self._due - time.monotonic()))
            if time.monotonic() >= self._due:
                try:
                    self.flush()
                except Exception:  # noqa: BLE001 - the flusher must outlive any surprise
                    log.exception("metrics flush failed")


_recorder: SharedMetrics | None = None
_recorder_lock = threading.Lock()


def shared() -> SharedMetrics:
    """This process's recorder (made on first use, and again in a forked child, which starts empty)."""
    recorder = _recorder
    if recorder is None or recorder.pid != os.getpid():
        recorder = _new_recorder()
    return recorder


def _new_recorder() -> SharedMetrics:
    global _recorder
    with _recorder_lock:
        if _recorder is None or _recorder.pid != os.getpid():
            _recorder = SharedMetrics(settings().metrics_flush_interval_s)
        return _recorder


def flush() -> None:
    """Send this process's pending metrics now (shutdown hooks, tests). Best effort."""
    recorder = _recorder
    if recorder is not None and recorder.pid == os.getpid():
        recorder.flush()


def _reset_after_fork() -> None:
    # The parent's pending counts are the parent's to send; its locks may be held by its threads.
    global _recorder, _recorder_lock
    _recorder = None
    _recorder_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(flush)


class SharedMetricsCollector:
    """Renders the Redis-held cluster-wide metrics at scrape time."""

    def collect(self):
        try:
            pipe = redis_client.client().pipeline(transaction=False)
            names = [*SHARED_COUNTERS, *SHARED_HISTOGRAMS, *SHARED_GAUGES, *SHARED_LABELED_GAUGES]
            for name in names:
                pipe.hgetall(PREFIX + name)
            values = dict(zip(names, pipe.execute(), strict=True))
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
    if settings().prometheus_multiproc_dir:
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
            for queue in QUEUES:
                pipe.llen(queue)
            depths = pipe.execute()
            family = GaugeMetricFamily("wallet_queue_depth", "Tasks waiting in a Celery queue", labels=["queue"])
            for queue, depth in zip(QUEUES, depths, strict=True):
                family.add_metric([queue], depth)
            yield family
        except redis.RedisError:
            pass
        yield from _pipeline_gauges()
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
                           (SELECT count(*) FROM history_dead_letters) AS dead_letters,
                           (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS webhooks_pending,
                           (SELECT extract(epoch FROM now() - min(created_at)) FROM webhook_deliveries
                             WHERE status = 'pending') AS webhooks_oldest
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
        # Not `wallet_history_dead_letters`: that is the family of the counter wallet_history_dead_letters_total.
        yield _gauge("wallet_history_dead_letters_stored", "Messages in the history dead-letter table",
                     row["dead_letters"])
        yield _gauge("wallet_webhook_deliveries_pending", "Webhook deliveries with attempts left",
                     row["webhooks_pending"])
        yield _gauge("wallet_webhook_oldest_pending_age_seconds", "Age of the oldest pending webhook delivery",
                     float(row["webhooks_oldest"] or 0))


def _pipeline_gauges():
    """From the relays' and history workers' heartbeats: how many are alive, the longest current stall."""
    from app.services.readiness import pipeline_processes

    processes = pipeline_processes()
    alive = GaugeMetricFamily("wallet_pipeline_processes", "Live relays and history workers (heartbeat in Redis)",
                              labels=["process"])
    stalled = GaugeMetricFamily("wallet_pipeline_stalled_seconds",
                                "Longest time a live relay or history worker has done nothing while events waited",
                                labels=["process"])
    for kind, beats in processes.items():
        alive.add_metric([kind], len(beats))
        stalled.add_metric([kind], max((b["stalled_s"] for b in beats), default=0.0))
    yield alive
    yield stalled


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text)
    family.add_metric([], value)
    return family
