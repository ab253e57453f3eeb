"""The stall ladder of the relay and the history worker, on a fake clock: log, rebuild, exit only if the broker answers."""
import logging
import subprocess
import sys
import textwrap
import time

import pytest
from kafka.structs import TopicPartition

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


def test_relay_logs_a_stall_once_and_exits_only_when_the_broker_answers(clock, caplog):
    answers = []
    health = RelayHealth(stall_timeout_s=30, broker_answers=lambda: answers.append(1) or broker_up)
    broker_up = False
    clock.now += 29
    health.failed(pending=12)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR] and not answers
    assert health.stalled_s() == 29

    clock.now += 2
    with caplog.at_level(logging.ERROR, "app.relay"):
        health.failed(pending=12)
        health.failed(pending=12)
    assert len([r for r in caplog.records if "relay stalled" in r.getMessage()]) == 1
    assert not answers  # below twice the timeout the broker is not even asked

    clock.now += 40  # 71 s: a broker that does not answer is an outage, a restart would not help
    health.failed(pending=12)
    assert answers == [1]

    broker_up = True  # the broker answers a fresh client, yet this relay publishes nothing: wedged
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


class FakeConsumer:
    def __init__(self, ends: dict, positions: dict, assignment=None):
        self.ends, self.positions = ends, positions
        self._assignment = set(ends) if assignment is None else assignment

    def assignment(self):
        return self._assignment

    def end_offsets(self, partitions, timeout_ms=None):
        return {tp: self.ends[tp] for tp in partitions}

    def position(self, tp, timeout_ms=None):
        return self.positions[tp]


TP = TopicPartition("wallet-events", 0)


def test_history_worker_caught_up_is_never_stalled(clock):
    health = ConsumerHealth(stall_timeout_s=30, broker_answers=lambda: True)
    consumer = FakeConsumer({TP: 10}, {TP: 10})
    for _ in range(20):
        clock.now += worker.LAG_CHECK_EVERY_S
        assert health.check(consumer) is False
    assert health.lag == 0 and health.stalled_s() == 0


def test_history_worker_with_lag_rebuilds_once_then_exits_if_the_broker_answers(clock):
    broker_up = [False]
    health = ConsumerHealth(stall_timeout_s=30, broker_answers=lambda: broker_up[0])
    consumer = FakeConsumer({TP: 10}, {TP: 4})
    verdicts = []
    for _ in range(12):  # 60 s of idle polls with 6 events waiting
        clock.now += worker.LAG_CHECK_EVERY_S
        verdicts.append(health.check(consumer))
    assert health.lag == 6
    assert verdicts.count(True) == 1 and verdicts.index(True) == 5  # rebuilt once, at 30 s
    clock.now += worker.LAG_CHECK_EVERY_S
    assert health.check(consumer) is False  # 65 s but the broker does not answer: keep waiting
    broker_up[0] = True
    clock.now += worker.LAG_CHECK_EVERY_S
    with pytest.raises(ConsumerWedged):
        health.check(consumer)


def test_history_worker_checks_the_lag_only_every_few_seconds(clock):
    health = ConsumerHealth(stall_timeout_s=30)
    consumer = FakeConsumer({TP: 10}, {TP: 4})
    health.check(consumer)
    consumer.positions[TP] = 10
    clock.now += worker.LAG_CHECK_EVERY_S / 2
    health.check(consumer)
    assert health.lag == 6
    clock.now += worker.LAG_CHECK_EVERY_S / 2
    health.check(consumer)
    assert health.lag == 0


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
