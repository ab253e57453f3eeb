"""Whether the services this process depends on answer."""
from __future__ import annotations

import socket
import threading

import redis
from sqlalchemy import text

from app.adapters import redis_client
from app.adapters.db import engine
from app.config import settings


HEARTBEAT_PREFIX = "wallet:workers:"
HEARTBEAT_EVERY_S = 5
HEARTBEAT_TTL_S = 15


def check_dependencies() -> dict[str, bool]:
    """PostgreSQL, Redis, Kafka, and at least one live Celery worker."""
    return {"postgres": _postgres(), "redis": _redis(), "kafka": _kafka(), "workers": live_workers() > 0}


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


def _postgres() -> bool:
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
