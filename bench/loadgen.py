"""The load generator: HTTP clients in their own process, kept cheap (threads + http.client, keep-alive).

Two pacing modes:

* closed loop on the backlog (`max_outstanding`): clients submit as fast as the
  API answers while fewer than `max_outstanding` commands are unfinished. The
  backlog is read in bulk from the jobs table (`status IN ('queued','running')`,
  a partial index) every 50 ms, never by per-job HTTP polls that would cost API CPU;
* open loop at a fixed `rate` (requests/s on a fixed schedule, whatever the answers).

Each request carries `X-Request-ID: <prefix><n>`, so the harness finds the
scenario's jobs (jobs.request_id) and history rows (history_events.request_id).
Results (send time, accept latency, HTTP status) go to an .npz file.
"""
from __future__ import annotations

import http.client
import itertools
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadSpec:
    api_url: str
    token: str
    kind: str  # transfer | hot | create | fund
    prefix: str  # X-Request-ID prefix of this scenario
    out_path: str
    wallets: list[str] = field(default_factory=list)
    hot_wallet: str | None = None
    amount: str = "0.01"
    clients: int = 32
    duration: float | None = None  # seconds; None: until `count` requests
    count: int | None = None
    rate: float | None = None  # open loop at this many requests/s
    max_outstanding: int | None = None  # closed loop on the backlog
    database_url: str | None = None  # for the backlog count
    seed: int = 1


def _body(spec: LoadSpec, n: int, rnd: random.Random) -> tuple[str, bytes]:
    if spec.kind == "create":
        return "/wallets", json.dumps({"user_id": f"bench-{n}", "currency": "USD"}).encode()
    if spec.kind == "fund":
        return f"/wallets/{spec.wallets[n]}/fund", json.dumps({"amount": spec.amount}).encode()
    if spec.kind == "hot":
        src = spec.hot_wallet
        dst = rnd.choice(spec.wallets)
    else:
        src, dst = rnd.sample(spec.wallets, 2)
    return f"/wallets/{src}/transfer", json.dumps({"to_wallet_id": dst, "amount": spec.amount}).encode()


class _Backlog:
    """Unfinished jobs, read from PostgreSQL every 50 ms, plus what was sent since."""

    def __init__(self, database_url: str):
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn = psycopg.connect(url, autocommit=True, application_name="bench-loadgen")
        self.db_count = 0
        self.sent_since = 0
        self.lock = threading.Lock()

    def refresh(self) -> None:
        n = self.conn.execute("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0]
        with self.lock:
            self.db_count, self.sent_since = n, 0

    def sent(self) -> None:
        with self.lock:
            self.sent_since += 1

    @property
    def value(self) -> int:
        return self.db_count + self.sent_since


def run(spec: LoadSpec, progress=None, stop=None) -> None:
    """Generate the load described by `spec`; `progress` (a shared int) counts answered requests."""
    import numpy as np

    url = urlsplit(spec.api_url)
    headers = {"Authorization": f"Bearer {spec.token}", "Content-Type": "application/json"}
    counter = itertools.count()
    start = time.time()
    deadline = start + spec.duration if spec.duration else None
    backlog = _Backlog(spec.database_url) if spec.max_outstanding else None
    done = threading.Event()
    results: list[list[tuple]] = []

    def should_stop(n: int) -> bool:
        return (done.is_set() or (stop is not None and stop.is_set())
                or (deadline is not None and time.time() >= deadline)
                or (spec.count is not None and n >= spec.count))

    def client(idx: int) -> None:
        rnd = random.Random(spec.seed * 1000 + idx)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        mine: list[tuple] = []
        results.append(mine)
        while True:
            if backlog is not None:
                while backlog.value >= spec.max_outstanding and not should_stop(0):
                    time.sleep(0.002)
            n = next(counter)
            if should_stop(n):
                break
            if spec.rate:
                due = start + n / spec.rate
                pause = due - time.time()
                if pause > 0:
                    time.sleep(pause)
                if should_stop(0):
                    break
            path, body = _body(spec, n, rnd)
            h = dict(headers)
            h["X-Request-ID"] = f"{spec.prefix}{n}"
            t0 = time.time()
            try:
                conn.request("POST", path, body=body, headers=h)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
                status = 0
            t1 = time.time()
            if backlog is not None:
                backlog.sent()
            mine.append((n, t0, t1 - t0, status))
            if progress is not None:
                with progress.get_lock():
                    progress.value += 1
        conn.close()

    def watch_backlog() -> None:
        while not done.is_set():
            try:
                backlog.refresh()
            except Exception:  # noqa: BLE001 - keep the last value; the DB is busy
                pass
            time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(spec.clients)]
    watcher = threading.Thread(target=watch_backlog, daemon=True) if backlog else None
    if watcher:
        backlog.refresh()
        watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    rows = sorted(r for mine in results for r in mine)
    arr = np.array(rows, dtype=float).reshape(-1, 4)
    np.savez(spec.out_path, n=arr[:, 0], t_send=arr[:, 1], latency=arr[:, 2], status=arr[:, 3],
             started=start, stopped=time.time())


def _main(spec_dict: dict, progress, stop) -> None:
    # Entry point of the spawned process: nothing of the harness is inherited.
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run(LoadSpec(**spec_dict), progress, stop)
