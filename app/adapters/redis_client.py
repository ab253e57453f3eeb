"""One Redis client per process (re-made after fork), for everything but Celery's own connections."""
from __future__ import annotations

import os

import redis

from app.config import settings

_client: dict = {}


def client() -> redis.Redis:
    """This process's client, with short timeouts: callers treat Redis errors as 'not now'."""
    if _client.get("pid") != os.getpid():
        _client.update(pid=os.getpid(), redis=redis.Redis.from_url(
            settings().redis_url, socket_connect_timeout=1, socket_timeout=1))
    return _client["redis"]
