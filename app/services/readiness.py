"""Whether the services this process depends on answer."""
from __future__ import annotations

import redis
from sqlalchemy import text

from app.adapters.db import engine
from app.config import settings


def check_dependencies() -> dict[str, bool]:
    return {"postgres": _postgres(), "redis": _redis()}


def _postgres() -> bool:
    try:
        with engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means not ready
        return False


def _redis() -> bool:
    try:
        client = redis.Redis.from_url(settings().redis_url, socket_connect_timeout=1, socket_timeout=1)
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False
