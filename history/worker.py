"""The history worker (`python -m history.worker`): Kafka events → history rows, exactly once in effect.

Per batch: one DB transaction inserts every row with ON CONFLICT DO
NOTHING (rows are unique per (event, wallet), so redelivery is harmless), then
the offsets (last + 1) are committed. A crash between the two only replays
the batch. Batches start at most every HISTORY_BATCH_INTERVAL_MS (50 ms):
under load several fetches share one transaction, one offset commit and one
metrics update, for at most that much extra lag; an event after a quiet spell
is written at once. A message that can never be projected is stored in
history_dead_letters with its topic, partition and offset, and the partition
moves on. Runs as many instances as the topic has partitions.

The consumer loop (batches, offset commits after the DB commit, stall
handling) is shared with the webhook dispatcher (app/webhook_dispatcher.py),
which is the same loop in a group of its own with another `Consumption`.
"""
from __future__ import annotations

import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from kafka import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from sqlalchemy.exc import DataError, IntegrityError

from app.adapters import kafka as kafka_clients
from app.adapters.db import dispose_engine, engine
from app.adapters.lifecycle import EXIT_WEDGED, LoopWatchdog, StallClock, StopFlag
from app.config import settings
from app.observability import logs, metrics
from app.services import readiness
from history import store
from history.projector import InvalidEvent, project

log = logging.getLogger("history.worker")


@dataclass(frozen=True)
class Consumption:
    """What a consumer-group process does with the events: its name, its group, how a batch is applied."""

    kind: str  # in logs, metrics and the pipeline heartbeats read by /ready: "history", "webhooks"
    group_id: Callable[[], str]  # read when the consumer is built (settings may change in tests)
    apply: Callable[[list], tuple[int, int]]  # messages -> (new, already applied)
    report_lag: bool = True  # the history consumer's per-partition lag gauge


class _AssignmentLog(ConsumerRebalanceListener):
    """Logs the partitions this instance owns (offsets are committed per batch, so nothing to flush)."""

    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        log.info("assigned partitions: [%s]", ",".join(str(tp.partition) for tp in sorted(assigned)))


def _parse(message) -> list[dict]:
    """The rows of a Kafka record; InvalidEvent when it is not a well-formed event."""
    try:
        event = json.loads(message.value)
    except (TypeError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise InvalidEvent(f"value is not JSON: {e}") from e
    return project(event)


def _dead_letter(conn, message, error: str) -> None:
    log.warning("dead letter %s[%d]@%d: %s", message.topic, message.partition, message.offset, error)
    store.insert_dead_letter(conn, topic=message.topic, partition=message.partition, offset=message.offset,
                             key=message.key, value=message.value, error=error)


def apply_batch(messages: list) -> tuple[int, int]:
    """Write a poll batch's rows and dead letters in one transaction; returns (new rows, rows already there)."""
    rows, bad = [], []
    for message in messages:
        try:
            rows.extend(_parse(message))
        except InvalidEvent as e:
            bad.append((message, str(e)))
    try:
        with engine().begin() as conn:
            inserted = store.insert_rows(conn, rows)
            for message, error in bad:
                _dead_letter(conn, message, error)
        _report(rows, inserted, len(bad))
        return inserted, len(rows) - inserted
    except (DataError, IntegrityError):
        # A message passed the projector but the database refuses it: find it one message at a time.
        return _apply_one_by_one(messages)


def _apply_one_by_one(messages: list) -> tuple[int, int]:
    inserted = total = dead = 0
    stored = []
    with engine().begin() as conn:
        for message in messages:
            try:
                rows = _parse(message)
                with conn.begin_nested():
                    inserted += store.insert_rows(conn, rows)
                total += len(rows)
                stored.extend(rows)
            except (InvalidEvent, DataError, IntegrityError) as e:
                _dead_letter(conn, message, str(e).splitlines()[0])
                dead += 1
    _report(stored, inserted, dead)
    return inserted, total - inserted


def _report(rows: list[dict], inserted: int, dead_letters: int) -> None:
    """Cluster-wide metrics of a committed batch: rows applied, dead letters, lag of its newest event."""
    m = metrics.shared().inc("wallet_history_events_applied_total", amount=inserted)
    if dead_letters:
        m.inc("wallet_history_dead_letters_total", amount=dead_letters)
    if rows:
        newest = max(row["occurred_at"] for row in rows)
        m.set("wallet_history_lag_seconds", max(0.0, (datetime.now(timezone.utc) - newest).total_seconds()))
    m.send()


def _report_consumer_lag(consumer, batch) -> None:
    """Per partition: the high watermark seen in the last fetch minus the consumer's position."""
    m = metrics.shared()
    for tp in batch:
        highwater = consumer.highwater(tp)
        if highwater is not None:
            m.set_labeled("wallet_history_consumer_lag", str(tp.partition), max(0, highwater - consumer.position(tp)))
    m.send()


def _gather(consumer, batch: dict, until: float, max_records: int) -> None:
    """Add to `batch` (in place, in offset order per partition) what polls bring until `until` (monotonic).

    Stops early at max_records, and after a poll that waited out the time for nothing.
    """
    count = sum(len(records) for records in batch.values())
    while count < max_records:
        remaining_ms = int((until - time.monotonic()) * 1000)
        if remaining_ms <= 0:
            return
        more = consumer.poll(timeout_ms=remaining_ms, max_records=max_records - count)
        if not more:
            return
        for tp, records in more.items():
            batch.setdefault(tp, []).extend(records)
            count += len(records)


# While idle, the worker asks the broker for its partitions' end offsets this often, to tell caught up from stuck.
LAG_CHECK_EVERY_S = 5.0
# Bound of an offset commit and of closing the consumer.
REQUEST_BOUND_MS = 5_000
# Bound of one lag check (it opens clients of its own).
LAG_CHECK_BOUND_S = 10.0


class ConsumerHealth:
    """Whether the consumer has events waiting and applies none: its stall, its heartbeat, the remedy.

    Progress is a batch applied, or a check that found this worker at the end of
    every partition it owns. Events known to wait (the lag) and none applied for
    the stall timeout: the consumer is rebuilt (it leaves the group and joins
    again); still so after twice the timeout, the process exits for its
    supervisor to restart it. Without an assignment the lag is unknown and the
    group may still be forming (a join takes seconds to minutes, depending on
    the broker), so that case gets four times as long. Time during which a fresh
    client finds the broker away is an outage, not a stall of this worker: it
    does not count towards either remedy (neither brings the broker back).
    """

    def __init__(self, stall_timeout_s: float, consumption: Consumption | None = None,
                 broker_answers=kafka_clients.broker_answers):
        self.stall_timeout_s = stall_timeout_s
        self.consumption = consumption or HISTORY
        self.clock = StallClock()
        self.lag: int | None = None
        self._broker_answers = broker_answers
        self._next_check = 0.0
        self._rebuilt = False

    def applied(self) -> None:
        if self._rebuilt:
            log.info("%s consumer applying events again after a stall", self.consumption.kind)
            self._rebuilt = False
        self.clock.progressed()

    def check(self, consumer) -> bool:
        """While idle, now and then: measure the lag. True when the consumer should be rebuilt."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + LAG_CHECK_EVERY_S
        try:
            self.lag = _lag(consumer, self.consumption)
        except BrokerUnreachable:  # the check's own clients found no broker: an outage, not a stall
            self.lag = None
            self.clock.broker_away()
            return False
        if self.lag == 0:
            self.applied()
            return False
        rebuild_after = self.stall_timeout_s if self.lag else 4 * self.stall_timeout_s
        if self.clock.stalled_for() < rebuild_after:
            return False
        if not self._broker_answers():
            self.clock.broker_away()
            return False
        own = self.clock.own_stall()
        if own >= 2 * rebuild_after:
            raise ConsumerWedged(f"the broker answers a fresh client, yet no event was applied for {own:.0f} s")
        if own >= rebuild_after and not self._rebuilt:
            log.error("%s consumer stalled: %s events wait and none was applied for %.0f s; rebuilding the"
                      " Kafka consumer", self.consumption.kind, "unknown" if self.lag is None else self.lag, own,
                      extra={"stalled_s": round(own, 1), "lag": self.lag})
            self._rebuilt = True
            return True
        return False

    def stalled_s(self) -> float:
        return 0.0 if self.lag == 0 else self.clock.stalled_for()

    def beat(self) -> None:
        readiness.pipeline_heartbeat(self.consumption.kind, stalled_s=self.stalled_s(), pending=self.lag)


class ConsumerWedged(Exception):
    """The history worker applies nothing although the broker answers: only a restart is left."""


def _lag(consumer, consumption: Consumption) -> int | None:
    """Events between the group's committed offsets and the end of the partitions this worker owns (None: unknown).

    Read by clients of their own (history.ops.consumer_lag), never through the
    consumer itself: its position() may start offset resets or leader-epoch
    validations, and asking it while its fetcher works left a consumer that
    fetched nothing (seen once in the test suite). The worker commits after each
    batch, so committed offsets trail its position by one batch at most. A
    consumer that owns no partition while the group has no more members than
    the topic has partitions is waiting for an assignment it should have:
    unknown, so the stall clock runs.
    """
    from history.ops import consumer_lag

    assigned = consumer.assignment()
    lags = _bounded(lambda: consumer_lag(consumption.group_id()), LAG_CHECK_BOUND_S)  # raises BrokerUnreachable
    if lags is None:  # the topic is unknown
        return None
    if not assigned:
        members = len(readiness.pipeline_processes()[consumption.kind])
        return 0 if lags and members > len(lags) else None
    owned = {tp.partition for tp in assigned}
    return sum(max(0, p.end - (p.committed or 0)) for p in lags if p.partition in owned)


class BrokerUnreachable(Exception):
    """A fresh client could not read the offsets: the broker is away (an outage, not a stall of this worker)."""


def _bounded(fn, seconds: float):
    """fn() in a daemon thread; its result. BrokerUnreachable when it raised or took longer than `seconds`."""
    result: list = []

    def call():
        try:
            result.append(fn())
        except Exception as e:  # noqa: BLE001 - the broker away, or any client error
            log.info("lag check failed: %s", e)

    thread = threading.Thread(target=call, name="history-lag-check", daemon=True)
    thread.start()
    thread.join(seconds)
    if not result:
        raise BrokerUnreachable(f"no offsets within {seconds:.0f} s")
    return result[0]


def _new_consumer(topic: str, consumption: Consumption):
    group_id = consumption.group_id()
    consumer = kafka_clients.consumer(group_id=group_id, client_id=f"{consumption.kind}-{os.getpid()}")
    consumer.subscribe([topic], listener=_AssignmentLog())
    log.info("consuming %s as group %s", topic, group_id)
    return consumer


def run(consumption: Consumption | None = None, service: str = "history-worker") -> int:
    consumption = consumption or HISTORY
    s = settings()
    logs.configure(service)
    stop = StopFlag(log).install()
    health = ConsumerHealth(s.history_stall_timeout_s, consumption)
    # A consumer call that outlives every bound cannot be aborted from another thread: the watchdog exits.
    watchdog = LoopWatchdog(log, stuck_after=s.history_stall_timeout_s, on_stuck=lambda: None,
                            beat=health.beat).start()
    try:
        return _consume(stop, health, watchdog, consumption)
    except ConsumerWedged as e:
        log.critical("%s wedged (%s): exiting with status %d for the supervisor to restart it", service,
                     e, EXIT_WEDGED)
        return EXIT_WEDGED
    finally:
        watchdog.stop()
        metrics.flush()
        dispose_engine()


def _consume(stop: StopFlag, health: ConsumerHealth, watchdog: LoopWatchdog, consumption: Consumption) -> int:
    s = settings()
    consumer = None
    backoff = 0.5
    interval = s.history_batch_interval_ms / 1000
    last_batch = 0.0  # monotonic time the last batch started
    while not stop.requested:
        watchdog.tick()
        try:
            if consumer is None:
                consumer = _new_consumer(s.kafka_topic, consumption)
            batch = consumer.poll(timeout_ms=500)
            if not batch:
                if health.check(consumer):
                    _close(consumer)
                    consumer = None
                continue
            # Fetches return as soon as the broker has anything, so under load each carries a couple of
            # events. Batches start at most every `interval`: records coming sooner wait for more to join
            # them in one transaction and one offset commit; after a quiet spell they go at once.
            _gather(consumer, batch, last_batch + interval, s.history_max_poll_records)
            last_batch = time.monotonic()
            messages = [m for records in batch.values() for m in records]
            try:
                inserted, duplicates = consumption.apply(messages)
            except Exception:
                # The database is away (or a bug): rewind so the batch is read again, then back off.
                log.exception("batch of %d messages not stored; will retry", len(messages))
                assigned = consumer.assignment()  # a rebalance may have come during _gather's polls
                for tp, records in batch.items():
                    if tp in assigned:
                        consumer.seek(tp, records[0].offset)
                time.sleep(backoff + random.uniform(0, backoff))
                backoff = min(backoff * 2, s.relay_backoff_max_s)
                continue
            health.applied()
            backoff = 0.5
            if duplicates:
                log.info("batch of %d messages: %d rows inserted, %d already present", len(messages), inserted,
                         duplicates)
            offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1) for tp, records in batch.items()}
            if consumption.report_lag:
                _report_consumer_lag(consumer, batch)
            try:
                consumer.commit(offsets, timeout_ms=REQUEST_BOUND_MS)
            except KafkaError as e:
                # A rebalance (CommitFailedError) or the broker away (KafkaTimeoutError): the rows are stored,
                # so keep the consumer and its group membership. The next commit covers these offsets; a new
                # owner of the partitions replays from the last commit, and the rows dedupe.
                log.warning("offset commit failed (%s); a later commit covers it, or the batch is replayed", e)
        except KafkaError:
            log.exception("kafka error; reconnecting")
            if consumer is not None:
                _close(consumer)
                consumer = None
            stop.sleep(backoff)
            backoff = min(backoff * 2, s.relay_backoff_max_s)
    if consumer is not None:
        _close(consumer)
    log.info("stopped")
    return 0


def _close(consumer) -> None:
    try:
        # Leaves the group, so partitions move on at once; bounded (its default is request_timeout_ms, 30 s).
        consumer.close(autocommit=False, timeout_ms=REQUEST_BOUND_MS)
    except Exception:  # noqa: BLE001 - closing a broken client
        log.debug("consumer close failed", exc_info=True)


HISTORY = Consumption("history", lambda: settings().kafka_group_id, lambda messages: apply_batch(messages))

if __name__ == "__main__":
    sys.exit(run())
