"""Whether the services this process depends on answer."""
from __future__ import annotations

import json
import os
import socket
import threading
import time

import redis
from sqlalchemy import text

from app.adapters import redis_client
from app.adapters.db import engine
from app.config import settings


HEARTBEAT_PREFIX = "wallet:workers:"
HEARTBEAT_EVERY_S = 5
HEARTBEAT_TTL_S = 15
# The relay and the history worker say how they are doing under these keys (one per process, HEARTBEAT_TTL_S).
PIPELINE_PREFIX = "wallet:pipeline:"
PIPELINE_KINDS = ("relay", "history", "webhooks")


def check_dependencies() -> dict[str, bool]:
    """PostgreSQL, Redis, Kafka, and at least one live Celery worker."""
    return {"postgres": postgres_answers(), "redis": _redis(), "kafka": _kafka(), "workers": live_workers() > 0}


def worker_heartbeat(hostname: str, stop: threading.Event) -> None:
    """Refresh this worker's key until stopped (runs in the worker's main process)."""
    client = redis_client.client()
    while not stop.is_set():
        try:
            client.set(HEARTBEAT_PREFIX + hostname, "1", ex=HEARTBEAT_TTL_S)
        except redis.RedisError:
            pass
        stop.wait(HEARTBEAT_EVERY_S)
    try:
        client.delete(HEARTBEAT_PREFIX + hostname)
    except redis.RedisError:
        pass


def pipeline_heartbeat(kind: str, *, stalled_s: float, pending: int | None, active: bool = True) -> None:
    """Report this relay or history worker: seconds it has had work waiting and none done, work waiting.

    `active` is False for a standby relay (another one holds the lead). Redis errors are ignored: the
    heartbeat then expires and the process reads as absent.
    """
    key = f"{PIPELINE_PREFIX}{kind}:{socket.gethostname()}:{os.getpid()}"
    value = json.dumps({"stalled_s": round(stalled_s, 1), "pending": pending, "active": active, "at": time.time()})
    try:
        redis_client.client().set(key, value, ex=HEARTBEAT_TTL_S)
    except redis.RedisError:
        pass


def pipeline_processes() -> dict[str, list[dict]]:
    """The live heartbeats of the relays and history workers, by kind (empty lists when Redis is away)."""
    found: dict[str, list[dict]] = {kind: [] for kind in PIPELINE_KINDS}
    try:
        client = redis_client.client()
        keys = list(client.scan_iter(PIPELINE_PREFIX + "*", count=100))
        values = client.mget(keys) if keys else []
    except redis.RedisError:
        return found
    for key, value in zip(keys, values, strict=True):
        kind = key.decode().removeprefix(PIPELINE_PREFIX).split(":", 1)[0]
        if value is not None and kind in found:
            found[kind].append(json.loads(value))
    return found


def pipeline_status() -> dict[str, dict]:
    """Whether events flow: the relay (outbox → Kafka) and the history worker (Kafka → read model).

    relay: "stalled" when an event has waited in the outbox longer than PIPELINE_STALL_AFTER_S (whatever
    the reason: Kafka away, relay wedged or not running), or when the active relay reports a stall.
    history: "stalled" when a history worker reports it has had events waiting and applied none for
    HISTORY_STALL_TIMEOUT_S, "absent" when no history worker is alive; webhooks: the same of the webhook
    dispatchers (events → deliveries).
    """
    s = settings()
    processes = pipeline_processes()
    oldest = _oldest_unpublished_age_s()
    relays = [p for p in processes["relay"] if p["active"]]
    relay_stalled = max((p["stalled_s"] for p in relays), default=0.0)
    relay = {"status": "ok", "oldest_unpublished_age_s": oldest, "stalled_s": relay_stalled,
             "processes": len(processes["relay"])}
    if (oldest is not None and oldest > s.pipeline_stall_after_s) or relay_stalled >= s.relay_stall_timeout_s:
        relay["status"] = "stalled"
    return {"relay": relay, "history": _consumer_status(processes["history"], s.history_stall_timeout_s),
            "webhooks": _consumer_status(processes["webhooks"], s.history_stall_timeout_s)}


def _consumer_status(processes: list[dict], stall_timeout_s: float) -> dict:
    """A consumer group's processes: "absent" when none is alive, "stalled" when one applies nothing."""
    stalled = max((p["stalled_s"] for p in processes), default=0.0)
    status = "absent" if not processes else "stalled" if stalled >= stall_timeout_s else "ok"
    return {"status": status, "stalled_s": stalled, "processes": len(processes)}


def _oldest_unpublished_age_s() -> float | None:
    """Seconds the oldest unpublished outbox event has waited (0 when none waits, None when unknown)."""
    try:
        with engine().connect() as conn:
            age = conn.execute(text("SELECT extract(epoch FROM now() - min(created_at)) FROM outbox"
                                    " WHERE published_at IS NULL")).scalar()
        return round(float(age or 0), 1)
    except Exception:  # noqa: BLE001 - the database is away: unknown
        return None


def live_workers() -> int:
    try:
        return sum(1 for _ in redis_client.client().scan_iter(HEARTBEAT_PREFIX + "*", count=100))
    except redis.RedisError:
        return 0


def _kafka() -> bool:
    """A bootstrap server accepts a TCP connection (cheap enough for a readiness probe)."""
    for server in settings().kafka_bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host or "localhost", int(port)), timeout=1):
                return True
        except (OSError, ValueError):
            continue
    return False


def postgres_answers() -> bool:
    try:
        with engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False


def _redis() -> bool:
    try:
        return bool(redis_client.client().ping())
    except Exception:  # noqa: BLE001
        return False
