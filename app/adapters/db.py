"""SQLAlchemy engine, created lazily once per process (fork-safe)."""
from __future__ import annotations

import os

from sqlalchemy import Engine, create_engine

from app.config import settings

_engine: Engine | None = None
_engine_pid: int | None = None
_options = {"pool_pre_ping": True}


def configure(*, pool_pre_ping: bool) -> None:
    """Engine options for this process, before its engine is made.

    Workers turn the pre-ping off (two round trips per command): a connection
    found dead raises a transient error, the pool is invalidated and the task
    is retried. The APIs keep it, so a restart of PostgreSQL costs no request.
    """
    _options["pool_pre_ping"] = pool_pre_ping


def engine() -> Engine:
    """The process's engine; a forked child gets a fresh one, never the parent's sockets."""
    global _engine, _engine_pid
    if _engine is None or _engine_pid != os.getpid():
        if _engine is not None:
            # Inherited from the parent: drop its pool without closing the parent's connections.
            _engine.dispose(close=False)
        s = settings()
        _engine = create_engine(
            s.database_url,
            pool_size=int(os.environ.get("DB_POOL_SIZE", 10)),
            max_overflow=int(os.environ.get("DB_MAX_OVERFLOW", 10)),
            pool_pre_ping=_options["pool_pre_ping"],
            connect_args={
                "options": f"-c statement_timeout={s.statement_timeout_ms} -c lock_timeout={s.lock_timeout_ms}",
                # The pid lets an operator (or a test) find the process behind a backend.
                "application_name": f"{os.environ.get('DB_APPLICATION_NAME', 'wallet')}:{os.getpid()}",
            },
        )
        _engine_pid = os.getpid()
    return _engine


def dispose_engine() -> None:
    """Forget the engine (after fork, or at shutdown)."""
    global _engine
    if _engine is not None:
        _engine.dispose(close=_engine_pid == os.getpid())
        _engine = None
