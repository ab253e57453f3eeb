"""Counts the SQL round trips of a process, for `make bench --profile` only.

`python -m bench` puts this folder first on PYTHONPATH of the processes it
starts when it counts statements, so Python imports this module at start-up
(the `sitecustomize` hook). It wraps psycopg's Cursor.execute/executemany and
Connection.commit/rollback (SQLAlchemy and the relay both end up there) and
writes the counts by statement every second to $BENCH_SQLCOUNT_DIR/<pid>.json.
Forked children (gunicorn workers, Celery pool processes) start afresh.
Nothing here runs unless BENCH_SQLCOUNT_DIR is set.
"""
from __future__ import annotations

import os


def _install(out_dir: str) -> None:
    import json
    import re
    import sys
    import threading
    import time

    try:
        import psycopg
    except ImportError:  # a process without psycopg (e.g. celery beat before import): nothing to count
        return

    counts: dict[str, int] = {}
    lock = threading.Lock()
    space = re.compile(r"\s+")
    labels: dict[str, str] = {}

    def label(query) -> str:
        text = labels.get(query) if isinstance(query, str) else None
        if text is None:
            raw = query.decode(errors="replace") if isinstance(query, bytes) else str(query)
            text = space.sub(" ", raw).strip()[:90]
            if isinstance(query, str) and len(labels) < 5000:
                labels[query] = text
        return text

    def bump(key: str, n: int = 1) -> None:
        with lock:
            counts[key] = counts.get(key, 0) + n

    cursor_execute = psycopg.Cursor.execute
    cursor_executemany = psycopg.Cursor.executemany
    conn_commit = psycopg.Connection.commit
    conn_rollback = psycopg.Connection.rollback

    def execute(self, query, params=None, **kw):
        try:
            bump("stmt " + label(query))
        except Exception:  # noqa: BLE001 - never break the measured process
            bump("stmt ?")
        return cursor_execute(self, query, params, **kw)

    def executemany(self, query, params_seq, **kw):
        params_seq = list(params_seq)
        try:
            bump("many " + label(query))
            bump("many-rows " + label(query), len(params_seq))
        except Exception:  # noqa: BLE001
            bump("many ?")
        return cursor_executemany(self, query, params_seq, **kw)

    def commit(self):
        bump("COMMIT")
        return conn_commit(self)

    def rollback(self):
        bump("ROLLBACK")
        return conn_rollback(self)

    psycopg.Cursor.execute = execute
    psycopg.Cursor.executemany = executemany
    psycopg.Connection.commit = commit
    psycopg.Connection.rollback = rollback

    def dump() -> None:
        with lock:
            snapshot = dict(counts)
        path = os.path.join(out_dir, f"{os.getpid()}.json")
        tmp = path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump({"pid": os.getpid(), "ppid": os.getppid(), "argv": sys.argv, "counts": snapshot}, f)
            os.replace(tmp, path)
        except OSError:
            pass

    def loop() -> None:
        while True:
            time.sleep(1.0)
            dump()

    def start() -> None:
        threading.Thread(target=loop, name="bench-sqlcount", daemon=True).start()

    def after_fork() -> None:
        nonlocal lock
        lock = threading.Lock()
        with lock:
            counts.clear()
        start()

    os.register_at_fork(after_in_child=after_fork)
    start()


if os.environ.get("BENCH_SQLCOUNT_DIR"):
    try:
        _install(os.environ["BENCH_SQLCOUNT_DIR"])
    except Exception:  # noqa: BLE001 - a measurement aid must never stop the process
        pass
