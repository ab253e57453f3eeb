"""The load generator: HTTP clients in their own process, kept cheap (one asyncio loop, keep-alive HTTP/1.1).

Two pacing modes:

* closed loop on the backlog (`max_outstanding`): clients submit as fast as the
  API answers while fewer than `max_outstanding` commands are unfinished. The
  backlog is read in bulk from the jobs table (`status IN ('queued','running')`,
  a partial index) every 50 ms, never by per-job HTTP polls that would cost API CPU;
* open loop at a fixed `rate` (requests/s on a fixed schedule, whatever the answers).

`clients` is the number of concurrent keep-alive connections: one coroutine each,
all on a single event loop with a minimal HTTP/1.1 client (one write per request,
status line + headers in one read, then the Content-Length body), so a request
costs a small fraction of a millisecond of CPU instead of threads fighting over
the GIL on the same cores as the system under test.

Each request carries `X-Request-ID: <prefix><n>`, so the harness finds the
scenario's jobs (jobs.request_id) and history rows (history_events.request_id).
Results (send time, accept latency, HTTP status) go to an .npz file.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

TIMEOUT = 30.0  # seconds per request (connect + send + answer), as the old http.client timeout
BACKLOG_PERIOD = 0.05  # seconds between two reads of the backlog


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
    user_prefix: str = "bench-"  # create: user_id <user_prefix><n>
    clients: int = 32
    duration: float | None = None  # seconds; None: until `count` requests
    count: int | None = None
    rate: float | None = None  # open loop at this many requests/s
    max_outstanding: int | None = None  # closed loop on the backlog
    database_url: str | None = None  # for the backlog count
    seed: int = 1


def _body(spec: LoadSpec, n: int, rnd: random.Random) -> tuple[str, bytes]:
    if spec.kind == "create":
        return "/wallets", json.dumps({"user_id": f"{spec.user_prefix}{n}", "currency": "USD"}).encode()
    if spec.kind == "fund":
        return f"/wallets/{spec.wallets[n]}/fund", json.dumps({"amount": spec.amount}).encode()
    if spec.kind == "hot":
        src = spec.hot_wallet
        dst = rnd.choice(spec.wallets)
    else:
        src, dst = rnd.sample(spec.wallets, 2)
    return f"/wallets/{src}/transfer", json.dumps({"to_wallet_id": dst, "amount": spec.amount}).encode()


class _Backlog:
    """Unfinished jobs, read from PostgreSQL every 50 ms, plus what was answered since.

    `changed` is set (and replaced) at every read, so clients waiting for room
    wake up at once instead of polling."""

    def __init__(self, conn):
        self.conn = conn
        self.db_count = 0
        self.sent_since = 0
        self.changed = asyncio.Event()

    @classmethod
    async def connect(cls, database_url: str) -> _Backlog:
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        return cls(await psycopg.AsyncConnection.connect(url, autocommit=True, application_name="bench-loadgen"))

    async def refresh(self) -> None:
        cur = await self.conn.execute("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")
        self.db_count, self.sent_since = (await cur.fetchone())[0], 0
        self.changed.set()
        self.changed = asyncio.Event()

    @property
    def value(self) -> int:
        return self.db_count + self.sent_since


class _Connection:
    """One keep-alive HTTP/1.1 connection; (re)connects on first use and after an error or a close."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.body = b""  # of the last answer with a Content-Length (the bulk generator reads the batch id)

    async def post(self, request: bytes) -> int:
        """Send a complete request, read the whole answer, return its status."""
        if self.reader is None or self.reader.at_eof():  # never opened, or closed by the server while idle
            self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = head.lower()
        i = headers.find(b"\r\ncontent-length:")
        self.body = b""
        if i >= 0:
            length = int(headers[i + 17:headers.index(b"\r\n", i + 2)])
            if length:
                self.body = await self.reader.readexactly(length)
        elif b"\r\ntransfer-encoding: chunked" in headers:
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await self.reader.readexactly(size + 2)
            while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailers, up to the empty line
                pass
        elif status not in (204, 304):
            await self.reader.read()  # no length: the body ends with the connection
            self.close()
        if b"\r\nconnection: close" in headers:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


def run(spec: LoadSpec, progress=None, stop=None) -> None:
    """Generate the load described by `spec`; `progress` (a shared int) counts answered requests."""
    import numpy as np

    start = time.time()
    rows = asyncio.run(_load(spec, start, progress, stop))
    rows.sort()
    arr = np.array(rows, dtype=float).reshape(-1, 4)
    np.savez(spec.out_path, n=arr[:, 0], t_send=arr[:, 1], latency=arr[:, 2], status=arr[:, 3],
             started=start, stopped=time.time())


async def _load(spec: LoadSpec, start: float, progress, stop) -> list[tuple]:
    """Run `spec.clients` client coroutines to the end; rows of (n, send time, latency, status)."""
    url = urlsplit(spec.api_url)
    port = url.port or 80
    host_header = url.hostname if url.port is None else f"{url.hostname}:{url.port}"
    # The headers of http.client's request(), in its order.
    head = f"HTTP/1.1\r\nHost: {host_header}\r\nAccept-Encoding: identity\r\nContent-Length: "
    auth = f"\r\nAuthorization: Bearer {spec.token}\r\nContent-Type: application/json\r\nX-Request-ID: {spec.prefix}"
    deadline = start + spec.duration if spec.duration else None
    backlog = await _Backlog.connect(spec.database_url) if spec.max_outstanding else None
    rows: list[tuple] = []
    next_n = 0

    def should_stop(n: int) -> bool:
        return ((stop is not None and stop.is_set())
                or (deadline is not None and time.time() >= deadline)
                or (spec.count is not None and n >= spec.count))

    async def client(idx: int) -> None:
        nonlocal next_n
        rnd = random.Random(spec.seed * 1000 + idx)
        conn = _Connection(url.hostname, port)
        try:
            while True:
                if backlog is not None:
                    while backlog.value >= spec.max_outstanding and not should_stop(0):
                        try:  # woken by the next read of the backlog, or at the deadline
                            async with asyncio.timeout(deadline - time.time() if deadline else None):
                                await backlog.changed.wait()
                        except TimeoutError:
                            pass
                n, next_n = next_n, next_n + 1
                if should_stop(n):
                    break
                if spec.rate:
                    pause = start + n / spec.rate - time.time()
                    if pause > 0:
                        await asyncio.sleep(pause)
                    if should_stop(0):
                        break
                path, body = _body(spec, n, rnd)
                request = f"POST {path} {head}{len(body)}{auth}{n}\r\n\r\n".encode() + body
                t0 = time.time()
                try:
                    async with asyncio.timeout(TIMEOUT):
                        status = await conn.post(request)
                except (OSError, EOFError, asyncio.LimitOverrunError, TimeoutError, ValueError):
                    conn.close()
                    status = 0
                t1 = time.time()
                if backlog is not None:
                    backlog.sent_since += 1
                rows.append((n, t0, t1 - t0, status))
                if progress is not None:
                    with progress.get_lock():
                        progress.value += 1
        finally:
            conn.close()

    async def watch_backlog() -> None:
        while True:
            await asyncio.sleep(BACKLOG_PERIOD)
            try:
                await backlog.refresh()
            except Exception:  # noqa: BLE001 - keep the last value; the DB is busy
                pass

    watcher = None
    if backlog is not None:
        await backlog.refresh()
        watcher = asyncio.create_task(watch_backlog())
    try:
        await asyncio.gather(*(client(i) for i in range(spec.clients)))
    finally:
        if watcher is not None:
            watcher.cancel()
        if backlog is not None:
            await backlog.conn.close()
    return rows


def _main(spec_dict: dict, progress, stop) -> None:
    # Entry point of the spawned process: nothing of the harness is inherited.
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run(LoadSpec(**spec_dict), progress, stop)
