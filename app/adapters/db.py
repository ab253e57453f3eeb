"""SQLAlchemy engine, created lazily once per process (fork-safe)."""
from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, CursorResult, Engine, create_engine, event, exc

from app.config import settings

_engine: Engine | None = None
_engine_pid: int | None = None
_options = {"pool_pre_ping": True}


# The APIs ping a pooled connection before use only when it sat idle this long.
PING_AFTER_IDLE_S = 1.0


def configure(*, pool_pre_ping: bool) -> None:
    """Engine options for this process, before its engine is made.

    Workers turn the pre-ping off: a connection found dead raises a transient
    error, the pool is invalidated and the task is retried. The APIs ping a
    connection that sat idle for PING_AFTER_IDLE_S, so a restart of PostgreSQL
    while they are quiet costs no request; under load connections come back to
    work within milliseconds and skip the round trip (a restart then fails the
    requests in flight, which the first disconnect error turns into a fresh pool).
    """
    _options["pool_pre_ping"] = pool_pre_ping


def _ping_idle_connections(new_engine: Engine) -> None:
    @event.listens_for(new_engine, "connect")
    @event.listens_for(new_engine, "checkin")
    def _idle_from_now(_dbapi_connection, record, *_):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(new_engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy):
        if time.monotonic() - record.info.get("idle_since", float("-inf")) < PING_AFTER_IDLE_S:
            return
        try:
            new_engine.dialect.do_ping(dbapi_connection)
        except new_engine.dialect.loaded_dbapi.Error as e:
            raise exc.DisconnectionError(f"pooled connection is dead: {e}") from e  # the pool takes a fresh one


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
            pool_size=s.db_pool_size,
            max_overflow=s.db_max_overflow,
            connect_args={
                "options": f"-c statement_timeout={s.statement_timeout_ms} -c lock_timeout={s.lock_timeout_ms}",
                # The pid lets an operator (or a test) find the process behind a backend.
                "application_name": f"{s.db_application_name}:{os.getpid()}",
            },
        )
        if _options["pool_pre_ping"]:
            _ping_idle_connections(_engine)
        _engine_pid = os.getpid()
    return _engine


@contextmanager
def autocommit() -> Iterator[Connection]:
    """A pooled connection in autocommit: each statement is its own transaction.

    For work that is one statement: it saves the BEGIN and COMMIT round trips.
    The driver's own switch is flipped for the checkout and back before the
    connection returns to the pool (SQLAlchemy's isolation_level option costs
    more Python than the statement it saves).
    """
    with engine().connect() as conn:
        driver = conn.connection.driver_connection
        driver.autocommit = True
        try:
            yield conn
        finally:
            if not driver.closed:
                driver.autocommit = False


def dispose_engine() -> None:
    """Forget the engine (after fork, or at shutdown)."""
    global _engine
    if _engine is not None:
        _engine.dispose(close=_engine_pid == os.getpid())
        _engine = None


_NAMED_PARAM = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")  # :name, not ::type casts (SQLAlchemy's own rule)
_DRIVER_SQL: dict[str, str] = {}


def _driver_sql(sql: str) -> str:
    """`:name` parameters as psycopg's `%(name)s`, converted once per statement text."""
    converted = _DRIVER_SQL.get(sql)
    if converted is None:
        if len(_DRIVER_SQL) > 1000:  # statements with a variable number of rows differ; keep this bounded
            _DRIVER_SQL.clear()
        converted = _DRIVER_SQL[sql] = _NAMED_PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))
    return converted


def run_sql(conn: Connection, sql: str, params: dict) -> CursorResult:
    """Execute plain SQL with `:name` parameters as driver SQL, for the hot paths.

    `text()` would parse the statement and look it up in the compiled cache on
    every call (a third of the executor's CPU); driver SQL skips both, while
    SQLAlchemy still wraps errors and invalidates a lost connection.
    """
    return conn.exec_driver_sql(_driver_sql(sql), params)


def json_rows(value) -> str:
    """Rows as one JSON parameter, for json_populate_record(set) to read into typed columns.

    Decimal, date and datetime go as their exact text. One parameter per row set
    keeps a statement short and its text fixed, so psycopg caches its parsing and
    prepares it (it does neither past 4 KiB or 50 parameters).
    """
    return json.dumps(value, default=str, separators=(",", ":"))
