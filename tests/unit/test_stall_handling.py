"""The stall ladder of the relay and the history worker, on a fake clock: log, rebuild, exit only if the broker answers."""
import logging
import subprocess
import sys
import textwrap
import time

import pytest

from app.adapters.lifecycle import EXIT_WEDGED, ProgressWatch
from app.relay import RelayHealth, RelayWedged
from history import worker
from history.worker import ConsumerHealth, ConsumerWedged


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture()
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr("app.adapters.lifecycle.time.monotonic", c)
    monkeypatch.setattr("history.worker.time.monotonic", c)
    return c


def test_progress_watch_counts_from_the_last_progress(clock):
    watch = ProgressWatch()
    clock.now += 7
    assert watch.stalled_for() == 7
    watch.progressed()
    clock.now += 2
    assert watch.stalled_for() == 2


def test_relay_logs_a_stall_once_and_exits_only_after_the_broker_answered_long_enough(clock, caplog):
    broker_up = [False]
    probes = []
    health = RelayHealth(stall_timeout_s=30, broker_answers=lambda: probes.append(1) or broker_up[0])
    clock.now += 29
    health.failed(pending=12)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR] and not probes
    assert health.stalled_s() == 29

    clock.now += 2
    with caplog.at_level(logging.ERROR, "app.relay"):
        health.failed(pending=12)
        health.failed(pending=12)
    assert len([r for r in caplog.records if "relay stalled" in r.getMessage()]) == 1
    assert len(probes) == 2  # past the timeout each failure asks whether the broker answers

    for _ in range(20):  # five more minutes of outage: waiting for the broker, no exit
        clock.now += 15
        health.failed(pending=12)
    assert health.stalled_s() == 331

    broker_up[0] = True  # the broker is back; the relay gets twice the timeout to publish again
    clock.now += 15
    health.failed(pending=12)
    clock.now += 40
    health.failed(pending=12)
    clock.now += 6  # 61 s of failures while the broker answers: the relay's own state is at fault
    with pytest.raises(RelayWedged):
        health.failed(pending=12)


def test_relay_progress_ends_the_stall(clock):
    health = RelayHealth(stall_timeout_s=30, broker_answers=lambda: True)
    clock.now += 31
    health.failed(pending=3)
    assert health.stalled_s() == 31
    health.idle_or_progressed(pending=0)
    assert health.stalled_s() == 0
    clock.now += 40
    assert health.stalled_s() == 0  # idle: nothing waits, so nothing is stalled
    health.failed(pending=1)  # the clock counts from the last progress, so this is a 40 s stall
    assert health.stalled_s() == 40


class Lag:
    """Stands in for the lag check (history.worker._lag reads it with clients of its own)."""

    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self, consumer, consumption):
        self.calls += 1
        return self.value


def test_history_worker_caught_up_is_never_stalled(clock, monkeypatch):
    monkeypatch.setattr(worker, "_lag", Lag(0))
    health = ConsumerHealth(stall_timeout_s=30, broker_answers=lambda: True)
    consumer = object()
    for _ in range(20):
        clock.now += worker.LAG_CHECK_EVERY_S
        assert health.check(consumer) is False
    assert health.lag == 0 and health.stalled_s() == 0


def test_history_worker_with_lag_rebuilds_once_then_exits_while_the_broker_answers(clock, monkeypatch):
    monkeypatch.setattr(worker, "_lag", Lag(6))
    broker_up = [False]
    health = ConsumerHealth(stall_timeout_s=30, broker_answers=lambda: broker_up[0])
    consumer = object()
    for _ in range(24):  # two minutes with 6 events waiting, the broker away: an outage, no remedy
        clock.now += worker.LAG_CHECK_EVERY_S
        assert health.check(consumer) is False
    assert health.lag == 6 and health.stalled_s() == 120  # reported all the same

    broker_up[0] = True
    verdicts = []
    for _ in range(11):  # 55 s with the broker answering
        clock.now += worker.LAG_CHECK_EVERY_S
        verdicts.append(health.check(consumer))
    assert verdicts.count(True) == 1 and verdicts.index(True) == 5  # rebuilt once, 30 s after the broker's return
    clock.now += worker.LAG_CHECK_EVERY_S
    with pytest.raises(ConsumerWedged):  # 60 s
        health.check(consumer)


def test_history_worker_checks_the_lag_only_every_few_seconds(clock, monkeypatch):
    lag = Lag(6)
    monkeypatch.setattr(worker, "_lag", lag)
    health = ConsumerHealth(stall_timeout_s=30)
    health.check(object())
    lag.value = 0
    clock.now += worker.LAG_CHECK_EVERY_S / 2
    health.check(object())
    assert health.lag == 6 and lag.calls == 1
    clock.now += worker.LAG_CHECK_EVERY_S / 2
    health.check(object())
    assert health.lag == 0 and lag.calls == 2


def test_a_stuck_iteration_is_rescued_then_the_process_exits_for_its_supervisor():
    """A real process: an iteration blocked past the bound gets on_stuck once, then exit status 70."""
    script = textwrap.dedent("""
        import logging, sys, time
        from app.adapters.lifecycle import LoopWatchdog
        logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
        watchdog = LoopWatchdog(logging.getLogger("t"), stuck_after=0.6, beat=lambda: None,
                                on_stuck=lambda: print("RESCUE", flush=True)).start()
        for _ in range(4):  # healthy iterations
            watchdog.tick()
            time.sleep(0.2)
        watchdog.tick()
        time.sleep(30)  # a call that ignores its bound
    """)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert proc.returncode == EXIT_WEDGED, proc.stdout + proc.stderr
    assert proc.stdout.count("RESCUE") == 1
    assert "stuck for" in proc.stdout
    assert time.monotonic() - t0 < 10


def test_history_worker_without_an_assignment_waits_out_an_outage_and_a_slow_join(clock, monkeypatch):
    """No assignment: lag unknown. While the broker does not answer, nothing counts towards a remedy;
    once it answers, the group gets four times the timeout to form before the consumer is rebuilt."""
    monkeypatch.setattr(worker, "_lag", lambda consumer, consumption: None)
    broker_up = [False]
    health = ConsumerHealth(stall_timeout_s=30, broker_answers=lambda: broker_up[0])
    for _ in range(60):  # five minutes of outage
        clock.now += worker.LAG_CHECK_EVERY_S
        assert health.check(object()) is False
    broker_up[0] = True  # back: its own clock runs from here
    verdicts = []
    for _ in range(47):  # 235 s
        clock.now += worker.LAG_CHECK_EVERY_S
        verdicts.append(health.check(object()))
    assert verdicts.count(True) == 1 and verdicts.index(True) == 23  # rebuilt at 120 s, not before
    clock.now += worker.LAG_CHECK_EVERY_S
    with pytest.raises(ConsumerWedged):  # 240 s
        health.check(object())


def test_the_lag_counts_the_owned_partitions_from_the_groups_committed_offsets(monkeypatch):
    from kafka.structs import TopicPartition

    from history import ops

    class Owner:
        def assignment(self):
            return {TopicPartition("wallet-events", 0), TopicPartition("wallet-events", 2)}

    lags = [ops.PartitionLag(0, 7, 10), ops.PartitionLag(1, 0, 50), ops.PartitionLag(2, None, 4)]
    monkeypatch.setattr(ops, "consumer_lag", lambda group_id: lags)
    assert worker._lag(Owner(), worker.HISTORY) == 3 + 4  # partition 1 belongs to another member
    monkeypatch.setattr(ops, "consumer_lag", lambda group_id: None)  # the topic is unknown
    assert worker._lag(Owner(), worker.HISTORY) is None

    def away(*_):
        raise OSError("connection refused")

    monkeypatch.setattr(ops, "consumer_lag", away)
    with pytest.raises(worker.BrokerUnreachable):
        worker._lag(Owner(), worker.HISTORY)


def test_a_lag_check_that_finds_no_broker_counts_as_an_outage(clock, monkeypatch):
    """Its clients are fresh ones: when they reach no broker, the time does not count towards a remedy."""
    def unreachable(consumer, consumption):
        raise worker.BrokerUnreachable("no offsets")

    monkeypatch.setattr(worker, "_lag", unreachable)
    health = ConsumerHealth(stall_timeout_s=30, broker_answers=lambda: True)
    for _ in range(60):  # five minutes of outage
        clock.now += worker.LAG_CHECK_EVERY_S
        assert health.check(object()) is False
    assert health.stalled_s() == 300  # reported, all the same
    monkeypatch.setattr(worker, "_lag", Lag(4))  # back, and events wait: its own clock starts now
    clock.now += worker.LAG_CHECK_EVERY_S
    assert health.check(object()) is False
