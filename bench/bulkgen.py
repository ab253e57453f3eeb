"""The bulk load generator: `POST /batches` of independent transfers, closed loop per client, in its own process.

`clients` coroutines share one asyncio loop (the keep-alive HTTP/1.1 client of
bench.loadgen); each keeps at most `per_client` of its batches unfinished. A
batch is unfinished while any of its jobs is `queued` or `running`: one query
every 100 ms answers that for every outstanding batch at once (a lookup per
batch on the index of `jobs.batch_id` that stops at its first unfinished job,
written as a LATERAL ... LIMIT 1 so the planner cannot turn it into a scan of
every batch job ever submitted), so pacing costs no HTTP polls and no API CPU;
its PostgreSQL CPU shows as pg:loadgen. A batch is only looked up once its 202
has arrived (its jobs are committed by then).

Each batch is `size` transfers of `amount` between two distinct wallets drawn
at random, `{"atomic": false, "commands": [...]}`, with `X-Request-ID:
<prefix><n>`. Results go to an .npz file with the keys of bench.loadgen's
(n, t_send, latency, status, started, stopped, one row per batch request)
plus `batch_ids` (the `id` of each 202, "" otherwise) and `commands`.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.loadgen import TIMEOUT, _Connection

RETRY_PAUSE = 0.2  # seconds a client waits after a refused or failed request
READ_PERIOD = 0.1  # seconds between two reads of the outstanding batches (K batches of 100 are > 0.1 s of work)


@dataclass
class BulkSpec:
    api_url: str
    token: str
    prefix: str  # X-Request-ID prefix of this scenario (a batch's is <prefix><n>)
    out_path: str
    database_url: str
    wallets: list[str] = field(default_factory=list)
    size: int = 100  # commands per batch
    amount: str = "0.01"  # a decimal string, never a float
    clients: int = 4
    per_client: int = 3  # batches a client keeps unfinished at most
    duration: float | None = None  # seconds; None: until `count` commands
    count: int | None = None  # commands (rounded up to whole batches)
    seed: int = 1


def batch_body(wallets: list[str], size: int, amount: str, rnd: random.Random) -> bytes:
    """`size` independent transfers between random distinct wallets."""
    commands = []
    for _ in range(size):
        src, dst = rnd.sample(wallets, 2)
        commands.append({"type": "transfer", "wallet_id": src, "to_wallet_id": dst, "amount": amount})
    return json.dumps({"atomic": False, "commands": commands}, separators=(",", ":")).encode()


# Not `WHERE EXISTS (...)`: that becomes a merge semi-join over the whole batch_id index on a young table.
# `status || ''`: not the partial index of unfinished jobs either (statistics taken while nothing was
# unfinished make it look free, and then every batch scans every unfinished job): the batch_id index only.
_STILL_OPEN = """SELECT b::text FROM unnest(%s::uuid[]) AS b CROSS JOIN LATERAL (
                     SELECT 1 FROM jobs j WHERE j.batch_id = b AND j.status || '' IN ('queued', 'running')
                      LIMIT 1) AS open"""


class _Outstanding:
    """Each client's accepted, unfinished batches; `refresh()` (every READ_PERIOD) drops the finished ones and
    replaces `changed`, so clients waiting for room wake up at once."""

    def __init__(self, conn, clients: int):
        self.conn = conn
        self.by_client: list[set[str]] = [set() for _ in range(clients)]
        self.changed = asyncio.Event()

    async def refresh(self) -> None:
        ids = [b for mine in self.by_client for b in mine]  # all of them answered 202: their jobs exist
        if ids:
            cur = await self.conn.execute(_STILL_OPEN, (ids,))
            still = {r[0] for r in await cur.fetchall()}
            finished = set(ids) - still
            for mine in self.by_client:
                mine -= finished
        self.changed.set()
        self.changed = asyncio.Event()


def _batch_id(body: bytes) -> str:
    try:
        return str(json.loads(body)["id"])
    except (ValueError, KeyError, TypeError):
        return ""


def run(spec: BulkSpec, progress=None, stop=None) -> None:
    """Submit batches as `spec` says; `progress` (a shared int) counts commands accepted."""
    import numpy as np

    start = time.time()
    rows = asyncio.run(_load(spec, start, progress, stop))
    rows.sort()
    n = np.array([r[0] for r in rows], dtype=float)
    np.savez(spec.out_path, n=n, t_send=np.array([r[1] for r in rows], dtype=float),
             latency=np.array([r[2] for r in rows], dtype=float), status=np.array([r[3] for r in rows], dtype=float),
             batch_ids=np.array([r[4] for r in rows], dtype="<U36"), commands=spec.size,
             started=start, stopped=time.time())


async def _load(spec: BulkSpec, start: float, progress, stop) -> list[tuple]:
    import psycopg
    from sqlalchemy.engine import make_url

    url = urlsplit(spec.api_url)
    port = url.port or 80
    host_header = url.hostname if url.port is None else f"{url.hostname}:{url.port}"
    head = f"HTTP/1.1\r\nHost: {host_header}\r\nAccept-Encoding: identity\r\nContent-Length: "
    auth = f"\r\nAuthorization: Bearer {spec.token}\r\nContent-Type: application/json\r\nX-Request-ID: {spec.prefix}"
    deadline = start + spec.duration if spec.duration else None
    batches = -(-spec.count // spec.size) if spec.count else None
    db_url = make_url(spec.database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await psycopg.AsyncConnection.connect(db_url, autocommit=True, application_name="bench-loadgen")
    outstanding = _Outstanding(conn, spec.clients)
    rows: list[tuple] = []
    next_n = 0

    def should_stop(n: int) -> bool:
        return ((stop is not None and stop.is_set())
                or (deadline is not None and time.time() >= deadline)
                or (batches is not None and n >= batches))

    async def client(idx: int) -> None:
        nonlocal next_n
        rnd = random.Random(spec.seed * 1000 + idx)
        http = _Connection(url.hostname, port)
        mine = outstanding.by_client[idx]
        try:
            while True:
                while len(mine) >= spec.per_client and not should_stop(0):
                    try:  # woken by the next read, or at the deadline
                        async with asyncio.timeout(deadline - time.time() if deadline else None):
                            await outstanding.changed.wait()
                    except TimeoutError:
                        pass
                n, next_n = next_n, next_n + 1
                if should_stop(n):
                    break
                body = batch_body(spec.wallets, spec.size, spec.amount, rnd)
                request = f"POST /batches {head}{len(body)}{auth}{n}\r\n\r\n".encode() + body
                t0 = time.time()
                answer = b""
                try:
                    async with asyncio.timeout(TIMEOUT):
                        status = await http.post(request)
                        answer = http.body
                except (OSError, EOFError, asyncio.LimitOverrunError, TimeoutError, ValueError):
                    http.close()
                    status = 0
                t1 = time.time()
                bid = _batch_id(answer) if status in (200, 202) else ""
                rows.append((n, t0, t1 - t0, status, bid))
                if bid:
                    mine.add(bid)
                    if progress is not None:
                        with progress.get_lock():
                            progress.value += spec.size
                else:  # 503 (backlog), 429, a bug: do not spin
                    await asyncio.sleep(RETRY_PAUSE)
        finally:
            http.close()

    async def watch() -> None:
        while True:
            await asyncio.sleep(READ_PERIOD)
            try:
                await outstanding.refresh()
            except Exception:  # noqa: BLE001 - keep the last value; the DB is busy
                pass

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(*(client(i) for i in range(spec.clients)))
    finally:
        watcher.cancel()
        await conn.close()
    return rows


def _main(spec_dict: dict, progress, stop) -> None:
    # Entry point of the spawned process: nothing of the harness is inherited.
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run(BulkSpec(**spec_dict), progress, stop)
