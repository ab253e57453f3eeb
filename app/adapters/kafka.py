"""Kafka clients built from settings: one producer per process, never shared across fork."""
from __future__ import annotations

import os
import threading

from kafka import KafkaConsumer, KafkaProducer

from app.config import settings


# How long a new client waits for a first broker before it raises NoBrokersAvailable.
BOOTSTRAP_TIMEOUT_MS = 5_000
# A flush waits at most this long past the producer's delivery timeout, by which every batch is acked or failed.
FLUSH_MARGIN_S = 5.0


def producer(**overrides) -> KafkaProducer:
    """A producer that keeps per-key order under retries (one request in flight, acks from all replicas).

    Not idempotent, on purpose: kafka-python 3.0.12's idempotent producer
    wedges for good after a broker stall. A batch that expires after it was
    sent makes the sender reset its producer id (`reset_producer_id`) without
    going back to the state in which it asks for a new one, and while it has
    none the sender neither sends nor expires a batch again, so `flush()`
    never returns (reproduced with a 30 s SIGSTOP of the broker, issue 14).
    With one request in flight per connection, retries keep each partition
    in order all the same; a retry may write a record twice, which the
    at-least-once outbox allows anyway (consumers dedupe on the event id).

    Create it in the process that uses it: a KafkaProducer's sockets and sender
    thread do not survive fork (kafka-python #1098, #1732).
    """
    s = settings()
    config = dict(
        bootstrap_servers=s.kafka_bootstrap_servers.split(","),
        client_id=f"wallet-relay-{os.getpid()}",
        acks="all",
        enable_idempotence=False,
        max_in_flight_requests_per_connection=1,
        # The relay appends a whole batch and then flushes, which sends at once whatever the
        # linger: the linger only keeps the sender thread from sending the first records alone.
        linger_ms=20,
        # Fail fast when the broker is away so the relay backs off instead of hanging: every
        # record is acked or failed within delivery_timeout_ms, a send() blocks at most max_block_ms.
        max_block_ms=5_000,
        request_timeout_ms=5_000,
        delivery_timeout_ms=10_000,
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,  # the constructor's wait for a first broker (default 30 s)
    )
    config.update(overrides)
    return KafkaProducer(**config)


def flush_timeout_s(producer: KafkaProducer) -> float:
    """How long a flush of this producer may take: its delivery timeout and a margin."""
    return producer.config["delivery_timeout_ms"] / 1000 + FLUSH_MARGIN_S


def close_producer(producer: KafkaProducer, timeout: float = 1.0) -> None:
    """Close a producer within `timeout`, failing whatever it could not deliver by then.

    `KafkaProducer.close(timeout)` flushes first and raises KafkaTimeoutError,
    leaving its sender thread running, when a batch is still pending; kafka-python
    has no public call for that case, so the sender is force-closed here (it fails
    the pending batches, which wakes anyone waiting on them, and ends its thread).
    """
    try:
        producer.close(timeout=timeout)
    except Exception:  # noqa: BLE001 - a broken producer: force it
        abort_producer(producer)
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.join(timeout)


def abort_producer(producer: KafkaProducer) -> None:
    """Fail every pending batch of a producer and stop its sender thread, from any thread, at once."""
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()


def consumer(*topics: str, group_id: str | None = None, **overrides) -> KafkaConsumer:
    """A consumer-group member that commits offsets only when told to (after the DB commit)."""
    s = settings()
    config = dict(
        bootstrap_servers=s.kafka_bootstrap_servers.split(","),
        group_id=group_id or s.kafka_group_id,
        client_id=f"history-worker-{os.getpid()}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=s.kafka_session_timeout_ms,
        heartbeat_interval_ms=s.kafka_heartbeat_interval_ms,
        max_poll_records=s.history_max_poll_records,
        # The broker may hold a fetch this long waiting for data; tansu holds it the whole time
        # even when records arrive, so this bounds history lag (default 500 ms).
        fetch_max_wait_ms=100,
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        # fetch_min_bytes stays 1: tansu holds a fetch below it for the whole wait or longer (lag p99
        # 245 ms at 30 events/s with 50 ms / 1 MiB, against 75 ms now). Batches grow in the history
        # worker instead, which starts a batch at most every HISTORY_BATCH_INTERVAL_MS.
    )
    config.update(overrides)
    return KafkaConsumer(*topics, **config)


def admin_consumer(**overrides) -> KafkaConsumer:
    """A group-less consumer for reading end offsets and metadata (operator commands, tests)."""
    s = settings()
    return KafkaConsumer(bootstrap_servers=s.kafka_bootstrap_servers.split(","), enable_auto_commit=False,
                         client_id=f"wallet-admin-{os.getpid()}", **overrides)


def broker_answers(timeout_s: float = 5.0) -> bool:
    """Whether the brokers tell a fresh client the topic's partitions within `timeout_s`.

    The probe runs in a daemon thread so that no call of the client can hold the caller past the bound.
    """
    s = settings()
    answer: list[bool] = []

    def probe() -> None:
        client = None
        try:
            client = KafkaConsumer(bootstrap_servers=s.kafka_bootstrap_servers.split(","), enable_auto_commit=False,
                                   client_id=f"wallet-probe-{os.getpid()}", bootstrap_timeout_ms=int(timeout_s * 1000),
                                   request_timeout_ms=int(timeout_s * 1000))
            answer.append(bool(client.partitions_for_topic(s.kafka_topic)))
        except Exception:  # noqa: BLE001 - NoBrokersAvailable, timeouts: no answer
            answer.append(False)
        finally:
            if client is not None:
                try:
                    client.close(autocommit=False)
                except Exception:  # noqa: BLE001
                    pass

    thread = threading.Thread(target=probe, name="kafka-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(answer and answer[0])
