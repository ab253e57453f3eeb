"""Cluster-wide metrics: summed in memory per process, sent to Redis in one pipeline when due, never lost."""
import os
import time

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.observability import metrics


class FakeRedis:
    """Hashes in a dict; pipelines that record their commands and can be told to fail."""

    def __init__(self):
        self.hashes: dict[str, dict[bytes, bytes]] = {}
        self.executed: list[list[tuple]] = []
        self.fail = 0

    def pipeline(self, transaction=True):
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, server: FakeRedis):
        self.server, self.commands = server, []

    def hincrbyfloat(self, key, field, amount):
        self.commands.append(("hincrbyfloat", key, field, amount))

    def hset(self, key, mapping):
        self.commands.append(("hset", key, mapping))

    def hgetall(self, key):
        self.commands.append(("hgetall", key))

    def execute(self):
        if self.server.fail:
            self.server.fail -= 1
            raise redis.ConnectionError("Redis is away")
        results = []
        for op, key, *args in self.commands:
            stored = self.server.hashes.setdefault(key, {})
            if op == "hincrbyfloat":
                field, amount = args
                stored[field.encode()] = str(float(stored.get(field.encode(), 0)) + amount).encode()
            elif op == "hset":
                stored.update({f.encode(): str(v).encode() for f, v in args[0].items()})
            else:
                results.append(dict(stored))
        if any(op != "hgetall" for op, *_ in self.commands):
            self.server.executed.append(self.commands)
        return results


@pytest.fixture
def fake_redis(monkeypatch):
    server = FakeRedis()
    monkeypatch.setattr(metrics.redis_client, "client", lambda: server)
    return server


def recorder(interval=3600.0) -> metrics.SharedMetrics:
    return metrics.SharedMetrics(interval)


def rendered(fake_redis) -> dict[tuple, float]:
    registry = CollectorRegistry()
    registry.register(metrics.SharedMetricsCollector())
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples}


def test_many_jobs_cost_one_pipeline_and_render_as_before(fake_redis):
    m = recorder()
    for i in range(100):
        m.inc("wallet_jobs_completed_total", "transfer", "succeeded", "") \
            .observe("wallet_job_duration_seconds", 0.02 if i % 2 else 0.2, "transfer")
        m.send()
    m.inc("wallet_optimistic_lock_conflicts_total", amount=3).set("wallet_history_lag_seconds", 0.5) \
        .set_labeled("wallet_history_consumer_lag", "0", 7).send()
    assert fake_redis.executed == []  # not due yet
    assert m.flush()
    assert len(fake_redis.executed) == 1
    increments = [c for c in fake_redis.executed[0] if c[0] == "hincrbyfloat"]
    assert len(increments) == 5  # completed, 2 buckets, sum, conflicts: one command per series, not per job
    samples = rendered(fake_redis)
    assert samples[("wallet_jobs_completed_total", (("code", ""), ("status", "succeeded"), ("type", "transfer")))] \
        == 100
    assert samples[("wallet_job_duration_seconds_count", (("type", "transfer"),))] == 100
    assert samples[("wallet_job_duration_seconds_bucket", (("le", "0.025"), ("type", "transfer")))] == 50
    assert samples[("wallet_job_duration_seconds_sum", (("type", "transfer"),))] == pytest.approx(11.0)
    assert samples[("wallet_optimistic_lock_conflicts_total", ())] == 3
    assert samples[("wallet_history_lag_seconds", ())] == 0.5
    assert samples[("wallet_history_consumer_lag", (("partition", "0"),))] == 7
    assert m.flush() and len(fake_redis.executed) == 1  # nothing pending: no round trip


def test_a_failed_flush_keeps_its_increments_for_the_next(fake_redis):
    m = recorder()
    m.inc("wallet_events_published_total", amount=5).set("wallet_history_lag_seconds", 1.0)
    fake_redis.fail = 1
    assert not m.flush()
    m.inc("wallet_events_published_total", amount=2).set("wallet_history_lag_seconds", 2.0)
    assert m.flush()
    samples = rendered(fake_redis)
    assert samples[("wallet_events_published_total", ())] == 7
    assert samples[("wallet_history_lag_seconds", ())] == 2.0  # the newer value, not the failed one


def test_pending_series_are_bounded_while_redis_is_away(fake_redis, monkeypatch):
    monkeypatch.setattr(metrics, "MAX_PENDING_FIELDS", 3)
    m = recorder()
    for code in ("A", "B", "C", "D"):
        m.inc("wallet_jobs_completed_total", "fund", "failed", code)
    m.inc("wallet_jobs_completed_total", "fund", "failed", "A")  # existing series keep counting
    assert m.flush()
    fields = {c[2]: c[3] for c in fake_redis.executed[0]}
    assert len(fields) == 3 and fields["fund\x1ffailed\x1fA"] == 2


def test_the_flusher_thread_sends_when_due(fake_redis):
    m = recorder(interval=0.1)
    m.inc("wallet_history_events_applied_total", amount=4).send()
    deadline = time.monotonic() + 3
    while not fake_redis.executed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rendered(fake_redis)[("wallet_history_events_applied_total", ())] == 4


def test_a_forked_child_starts_empty_and_sends_only_its_own(fake_redis):
    parent = metrics.shared()
    parent.inc("wallet_events_published_total", amount=10)
    pid = os.fork()
    if pid == 0:  # child: a fresh recorder, without the parent's pending 10
        child = metrics.shared()
        ok = child is not parent and child.pid == os.getpid() and not child._increments
        child.inc("wallet_events_published_total", amount=1)
        ok = ok and child.flush() and fake_redis.executed[-1][0][3] == 1
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert metrics.shared() is parent
    assert parent.flush()
    assert rendered(fake_redis)[("wallet_events_published_total", ())] == 10
