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
from kafka.errors import KafkaError
from sqlalchemy.engine import make_url

from app.adapters import kafka as kafka_clients
from app.adapters.lifecycle import StopFlag
from app.config import settings
from app.observability import logs, metrics

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
    """Sends outbox rows and reports which ones the broker acknowledged."""

    def __init__(self, topic: str):
        self.topic = topic
        self._producer = None

    def publish(self, rows: list[tuple]) -> list[int]:
        """Send rows in order, wait for the acks; returns the ids acknowledged. Raises KafkaError if none were."""
        if self._producer is None:
            self._producer = kafka_clients.producer()
        sent = []
        error: Exception | None = None
        for row_id, key, event_type, payload, request_id in rows:
            headers = [("event_type", event_type.encode())]
            if request_id:
                headers.append(("request_id", request_id.encode()))
            try:
                future = self._producer.send(self.topic, key=key.encode(), headers=headers, value=payload.encode())
            except KafkaError as e:  # no metadata within max_block_ms: the broker is away
                error = e
                break
            sent.append((row_id, future))
        try:
            self._producer.flush()
        except KafkaError as e:
            error = error or e
        acked = [row_id for row_id, future in sent if future.succeeded()]
        failed = next((f.exception for _, f in sent if f.failed()), None)
        if failed is not None or error is not None:
            # Start over with a fresh producer: its sequence numbers may not be valid on a restarted broker.
            self.close()
            if not acked:
                raise failed or error
        return acked

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:  # noqa: BLE001 - closing a broken client
                log.debug("producer close failed", exc_info=True)
            self._producer = None


def _wait_for_leadership(conn: psycopg.Connection, stop: StopFlag, poll: float) -> bool:
    """Block until this session holds the relay lock (True) or a stop is requested (False)."""
    announced = False
    while not stop.requested:
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


def _lead(conn: psycopg.Connection, stop: StopFlag) -> None:
    s = settings()
    conn.execute("LISTEN outbox")
    publisher = Publisher(s.kafka_topic)
    backoff = 0.2
    try:
        while not stop.requested:
            started = time.monotonic()
            rows = conn.execute(_FETCH, (s.relay_batch_size,)).fetchall()
            if rows:
                fetched = time.monotonic()
                try:
                    acked = publisher.publish(rows)
                except KafkaError as e:
                    log.warning("kafka unavailable (%s); %d rows wait, retry in %.1fs", e, len(rows), backoff)
                    stop.sleep(backoff + random.uniform(0, backoff / 2))
                    backoff = min(backoff * 2, s.relay_backoff_max_s)
                    continue
                published = time.monotonic()
                conn.execute(_MARK, (acked,))
                _warn_if_slow(len(rows), fetched - started, published - fetched, time.monotonic() - published)
                metrics.shared().inc("wallet_events_published_total", amount=len(acked)).send()
                backoff = 0.2
                if len(acked) == len(rows) == s.relay_batch_size:
                    continue  # a backlog: next batch at once
                if len(acked) < len(rows):
                    continue
            wait_for_commits(conn, s.relay_poll_interval_s, s.relay_debounce_ms / 1000)
    finally:
        publisher.close()


def run() -> int:
    s = settings()
    logs.configure("relay")
    stop = StopFlag(log).install()
    log.info("relaying outbox to topic %s on %s", s.kafka_topic, s.kafka_bootstrap_servers)
    backoff = 0.5
    while not stop.requested:
        try:
            # The lock lives as long as this session: if the connection dies, another relay takes over.
            with _connect() as conn:
                if _wait_for_leadership(conn, stop, s.relay_poll_interval_s):
                    _lead(conn, stop)
                backoff = 0.5
        except psycopg.Error as e:
            log.warning("database unavailable (%s); retry in %.1fs", e, backoff)
            stop.sleep(backoff)
            backoff = min(backoff * 2, s.relay_backoff_max_s)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(run())
