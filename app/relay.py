"""The outbox relay (`python -m app.relay`): outbox rows → Kafka, marked published after the broker's ack.

One relay is active at a time: it holds a PostgreSQL advisory lock on its
session, so rows go out in id order, which is each wallet's version order
(workers insert outbox rows after the wallet UPDATE). Other relays wait as hot
standbys and take over within a poll interval when the leader's session ends.
The leader LISTENs on `outbox` (workers NOTIFY at commit) and polls as a
fallback. While Kafka is down rows stay unpublished and the relay retries with
backoff; delivery is at least once (consumers dedupe on event id).
"""
from __future__ import annotations

import logging
import os
import random
import sys
import time

import psycopg
from kafka.errors import KafkaError, KafkaTimeoutError
from sqlalchemy.engine import make_url

from app.adapters import kafka as kafka_clients
from app.adapters.lifecycle import EXIT_WEDGED, LoopWatchdog, StallClock, StopFlag
from app.config import settings
from app.observability import logs, metrics
from app.services import readiness

log = logging.getLogger("app.relay")

# pg_advisory_lock key of the relay leader (any constant shared by all relays of one database).
RELAY_LOCK_KEY = 7_207_269_001

# The payload goes to Kafka as the JSON text PostgreSQL stores (no parse and re-encode per event).
_FETCH = """
    SELECT id, aggregateid, type, payload::text, payload->>'request_id' FROM outbox
     WHERE published_at IS NULL ORDER BY id LIMIT %s
"""
_MARK = "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)"


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL as a libpq connection string."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _connect() -> psycopg.Connection:
    s = settings()
    return psycopg.connect(libpq_url(s.database_url), autocommit=True, connect_timeout=5,
                           application_name=f"wallet-relay:{os.getpid()}",
                           options=f"-c statement_timeout={s.statement_timeout_ms}")


class Publisher:
    """Sends outbox rows and reports which ones the broker acknowledged, each call bounded in time."""

    def __init__(self, topic: str):
        self.topic = topic
        self._producer = None
        self.last_error: Exception | None = None  # why the last publish() left rows unacknowledged

    def publish(self, rows: list[tuple]) -> list[int]:
        """Send rows in order, wait for the acks; returns the ids acknowledged. Raises KafkaError if none were.

        Bounded: a send blocks at most the producer's max_block_ms, the flush at most its delivery
        timeout and a margin (kafka_clients.flush_timeout_s). After any failure the producer is
        closed and the next call builds a new one, so no broken client state outlives a batch.
        """
        if self._producer is None:
            self._producer = kafka_clients.producer()
        producer = self._producer
        sent = []
        error: Exception | None = None
        for row_id, key, event_type, payload, request_id in rows:
            headers = [("event_type", event_type.encode())]
            if request_id:
                headers.append(("request_id", request_id.encode()))
            try:
                future = producer.send(self.topic, key=key.encode(), headers=headers, value=payload.encode())
            except KafkaError as e:  # no metadata within max_block_ms: the broker is away
                error = e
                break
            sent.append((row_id, future))
        try:
            producer.flush(timeout=kafka_clients.flush_timeout_s(producer))
        except KafkaError as e:  # KafkaTimeoutError: a batch neither acked nor failed in time
            error = error or e
        acked = [row_id for row_id, future in sent if future.succeeded()]
        failed = next((f.exception for _, f in sent if f.failed()), None)
        self.last_error = None
        if failed is not None or error is not None or len(acked) < len(rows):
            self.last_error = failed or error or KafkaTimeoutError("no acknowledgement within the flush timeout")
            self.close()
            if not acked:
                raise self.last_error
        return acked

    def abort(self) -> None:
        """From another thread: fail the current producer's pending sends, so a blocked flush returns."""
        producer = self._producer
        if producer is not None:
            kafka_clients.abort_producer(producer)

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            kafka_clients.close_producer(producer, timeout=1)


class RelayHealth:
    """What the relay reports in its heartbeat, and its decision when publishing has stalled."""

    def __init__(self, stall_timeout_s: float, broker_answers=kafka_clients.broker_answers):
        self.stall_timeout_s = stall_timeout_s
        self.clock = StallClock()
        self.active = False
        self.pending: int | None = None
        self._broker_answers = broker_answers
        self._reported = False

    def idle_or_progressed(self, pending: int) -> None:
        if self._reported:
            log.info("relay publishing again after a stall of %.0f s", self.clock.stalled_for())
            self._reported = False
        self.clock.progressed()
        self.pending = pending

    def failed(self, pending: int) -> None:
        """A batch could not be published. Raises RelayWedged when a restart is the remaining remedy.

        Past the stall timeout the stall is logged (the producer is rebuilt after every failure) and
        each further failure asks a fresh client whether the broker answers. While it does not, this is
        an outage and the relay waits for the broker. Once it has answered and the relay has still
        published nothing for twice the timeout, the relay's own client state is the problem: the
        process exits for its supervisor to restart it.
        """
        self.pending = pending
        stalled = self.clock.stalled_for()
        if stalled < self.stall_timeout_s:
            return
        if not self._reported:
            self._reported = True
            log.error("relay stalled: %d events wait and none was published for %.0f s; the Kafka producer is"
                      " rebuilt after every failure", pending, stalled, extra={"stalled_s": round(stalled, 1)})
        if not self._broker_answers():
            self.clock.broker_away()
        elif self.clock.own_stall() >= 2 * self.stall_timeout_s:
            raise RelayWedged(f"the broker answers a fresh client, yet nothing was published for {stalled:.0f} s")

    def stalled_s(self) -> float:
        return self.clock.stalled_for() if self.pending else 0.0

    def beat(self) -> None:
        readiness.pipeline_heartbeat("relay", stalled_s=self.stalled_s(), pending=self.pending, active=self.active)


class RelayWedged(Exception):
    """The relay cannot publish although the broker answers: only a restart of the process is left."""


def _wait_for_leadership(conn: psycopg.Connection, stop: StopFlag, poll: float, watchdog: LoopWatchdog) -> bool:
    """Block until this session holds the relay lock (True) or a stop is requested (False)."""
    announced = False
    while not stop.requested:
        watchdog.tick()
        if conn.execute("SELECT pg_try_advisory_lock(%s)", (RELAY_LOCK_KEY,)).fetchone()[0]:
            log.info("relay lock acquired: this relay is active")
            return True
        if not announced:
            log.info("another relay is active; standing by")
            announced = True
        time.sleep(poll)
    return False


SLOW_BATCH_S = 1.0


def _warn_if_slow(rows: int, fetch_s: float, publish_s: float, mark_s: float) -> None:
    """Say which step held the relay back when a batch took more than SLOW_BATCH_S."""
    if fetch_s + publish_s + mark_s > SLOW_BATCH_S:
        log.warning("slow batch of %d rows: fetch %.3f s, publish %.3f s, mark %.3f s", rows, fetch_s, publish_s,
                    mark_s, extra={"rows": rows, "fetch_s": round(fetch_s, 3), "publish_s": round(publish_s, 3),
                                    "mark_s": round(mark_s, 3)})


def wait_for_commits(conn: psycopg.Connection, timeout: float, debounce: float) -> bool:
    """Sleep until a worker's commit NOTIFYs (True) or `timeout` passes (False).

    After a notification, wait `debounce` more so the commits landing together
    leave as one batch (one fetch, one produce, one mark), then drop every
    pending notification: one fetch serves them all. psycopg's notifies()
    yields every notification already received (those that arrived during the
    fetch and the mark pile up by the hundred under load) before it honours
    `stop_after`, so nothing may be done per notification: the debounce once
    per notification stalled the relay for minutes at a few hundred commits/s.
    """
    if not _notified(conn, timeout):
        return False
    time.sleep(debounce)
    for _ in conn.notifies(timeout=0):
        pass
    return True


def _notified(conn: psycopg.Connection, timeout: float) -> bool:
    for _ in conn.notifies(timeout=timeout, stop_after=1):
        return True  # closes the generator: the rest stay in psycopg's backlog for the drain
    return False


def _lead(conn: psycopg.Connection, stop: StopFlag, publisher: Publisher, health: RelayHealth,
          watchdog: LoopWatchdog) -> None:
    s = settings()
    conn.execute("LISTEN outbox")
    health.active = True
    backoff = 0.2
    try:
        while not stop.requested:
            watchdog.tick()
            started = time.monotonic()
            rows = conn.execute(_FETCH, (s.relay_batch_size,)).fetchall()
            if not rows:
                health.idle_or_progressed(pending=0)
                wait_for_commits(conn, s.relay_poll_interval_s, s.relay_debounce_ms / 1000)
                continue
            fetched = time.monotonic()
            try:
                acked = publisher.publish(rows)
            except KafkaError as e:
                log.warning("kafka unavailable (%s); %d rows wait, retry in %.1fs", e, len(rows), backoff)
                health.failed(pending=len(rows))
                stop.sleep(backoff + random.uniform(0, backoff / 2))
                backoff = min(backoff * 2, s.relay_backoff_max_s)
                continue
            published = time.monotonic()
            if len(acked) < len(rows):
                log.warning("kafka unavailable for part of a batch (%s); %d of %d rows wait", publisher.last_error,
                            len(rows) - len(acked), len(rows))
            conn.execute(_MARK, (acked,))
            health.idle_or_progressed(pending=len(rows) - len(acked))
            _warn_if_slow(len(rows), fetched - started, published - fetched, time.monotonic() - published)
            metrics.shared().inc("wallet_events_published_total", amount=len(acked)).send()
            backoff = 0.2
            if len(acked) == len(rows) < s.relay_batch_size:
                wait_for_commits(conn, s.relay_poll_interval_s, s.relay_debounce_ms / 1000)
            # else: a full batch (a backlog) or a partial ack: the next batch at once
    finally:
        health.active = False
        publisher.close()


def run() -> int:
    s = settings()
    logs.configure("relay")
    stop = StopFlag(log).install()
    log.info("relaying outbox to topic %s on %s", s.kafka_topic, s.kafka_bootstrap_servers)
    publisher = Publisher(s.kafka_topic)
    health = RelayHealth(s.relay_stall_timeout_s)
    watchdog = LoopWatchdog(log, stuck_after=s.relay_stall_timeout_s, on_stuck=publisher.abort,
                            beat=health.beat).start()
    backoff = 0.5
    try:
        while not stop.requested:
            watchdog.tick()
            try:
                # The lock lives as long as this session: if the connection dies, another relay takes over.
                with _connect() as conn:
                    if _wait_for_leadership(conn, stop, s.relay_poll_interval_s, watchdog):
                        _lead(conn, stop, publisher, health, watchdog)
                    backoff = 0.5
            except psycopg.Error as e:
                log.warning("database unavailable (%s); retry in %.1fs", e, backoff)
                stop.sleep(backoff)
                backoff = min(backoff * 2, s.relay_backoff_max_s)
    except RelayWedged as e:
        log.critical("relay wedged (%s): exiting with status %d for the supervisor to restart it", e, EXIT_WEDGED)
        return EXIT_WEDGED
    finally:
        watchdog.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(run())
