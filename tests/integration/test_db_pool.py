"""The APIs' pool pings a connection only when it sat idle (app.adapters.db.PING_AFTER_IDLE_S)."""
import time

import psycopg
import pytest

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from app.adapters import db
from app.config import settings
from app.relay import libpq_url


def _backend_pid() -> int:
    with db.engine().connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar()


def _pooled_pid_after_killing_it(monkeypatch) -> int:
    """Leave one connection in the pool, kill its backend from outside the pool, return the dead pid."""
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.3)
    db.dispose_engine()  # a pool of one fresh connection
    pid = _backend_pid()
    with psycopg.connect(libpq_url(settings().database_url), autocommit=True) as killer:
        killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return pid


def test_a_connection_idle_past_the_threshold_is_pinged_and_replaced_when_dead(stack, monkeypatch):
    dead = _pooled_pid_after_killing_it(monkeypatch)
    time.sleep(0.4)
    assert _backend_pid() != dead


def test_a_connection_back_at_once_skips_the_ping_and_a_dead_one_fails_one_use(stack, monkeypatch):
    _pooled_pid_after_killing_it(monkeypatch)
    with pytest.raises(OperationalError):
        _backend_pid()
    _backend_pid()  # the disconnect invalidated the pool: this checkout connected afresh
