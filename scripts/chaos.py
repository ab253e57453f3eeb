"""Fault-injection bank test (`make chaos`): a real workload, real faults, invariants checked after each.

It starts its own complete stack in its own state folder (default `.dev/chaos`):
embedded PostgreSQL, Redis and tansu always (never the URLs of the environment,
so it can crash and restart them), then the API (gunicorn), one Celery worker
with two pool processes, beat, the outbox relay, the history worker, the webhook
dispatcher and a webhook worker (threads pool, queue `webhooks`), each a
subprocess in its own session whose pid it tracks; faults target those pids only.
Webhooks retry on a short schedule (WEBHOOK_RETRY_SCHEDULE 2,4,8,15,30,... s)
and may call 127.0.0.1 (WEBHOOK_ALLOW_PRIVATE_URLS=1).

Workload: 50 USD wallets funded with 1000.00 each, then client threads doing
transfers, funds, withdrawals, holds and their capture or void over real HTTP.
Among those requests, bulk submissions (POST /batches): independent batches of
10-100 transfers and withdrawals (one command in 25 asks for more than the bank
holds, so it must fail) and atomic batches of 2-20 commands (30% hold such a
command, so they must fail as a whole). Every command and batch carries an
Idempotency-Key; on a timeout, a connection error, a 5xx or a 429 the client
retries with the same key and body, like a real client, and records every job
(or batch) id it was answered. Before a pool-process kill (every other one), a
whole-worker kill or a PostgreSQL restart, a burst of big batches is submitted
and the fault fires once a pool process is inside a wallet.execute_batch chunk.

Webhooks: before the setup, the tenant registers an endpoint (events `*`) whose
receiver runs in this process (scripts/chaos_webhooks.py): a threaded HTTP
server that verifies every request with `standardwebhooks` as it arrives and
can go down and come back on the same port, or hold requests open.

Scenarios (one fault kind at a time, then mixed); after each the load stops,
the system must become quiescent within `--bound` seconds (no job queued or
running, outbox drained, history equal to the ledger, every notification with a
webhook delivery and none pending, retry waits included), and then:

  * every accepted job is final ("lost" counts those that are not, or whose job vanished);
  * no job is applied twice (journal entries per job <= 1) and every retry with a
    key saw the same job id, the one the database holds for that key ("doubled");
  * each wallet's balance equals the client-side expectation computed from the
    commands whose jobs succeeded (so money is conserved exactly), none is negative;
  * no job failed for a reason a fault may not cause (ATTEMPTS_EXHAUSTED, INTERNAL_ERROR);
  * `python -m app.cli audit run` passes and `python -m app.cli history compare` finds no difference;
  * every batch is the one its key names, its jobs those its answer listed, each final; a succeeded
    command job has one journal entry and two postings, a failed one none (and a command that must
    fail did); an atomic batch job has `size` entries (items 0..size-1) or, failed, none and an
    `error.index`; GET /batches/{id} is completed with its jobs' counts; the outbox events (the job
    outcome events aside) and the history rows of batch jobs carry the batch id;
  * webhooks, for every notification so far: each the database implies (`job.succeeded` /
    `job.failed` per job of the tenant that ended so, `webhook_id("job", id)`; `wallet.*` per history
    row, `webhook_id("event", event_id, wallet_id)`) has a delivery to the endpoint that `succeeded`
    and reached the receiver, with its type; no other delivery or webhook-id exists; every request
    verifies; the requests with one webhook-id carry one body (duplicates only as redeliveries).

Webhook scenarios: `webhook-receiver-down-60s` (the receiver refuses connections for
60 s under half the load, then listens on the same port: every delivery arrives
through its retries), `webhook-receiver-hangs` (a second endpoint, events `*`:
its receiver answers at once for 10 s, then holds each request 15 s, past the
10 s attempt timeout, for 20 s, then answers again; the main receiver's
latency p99 while it hangs must stay under 5 s or twice its calm-phase p99;
every delivery of the second endpoint must succeed in the end, then it is
deleted), `webhook-worker-kill` (the receiver holds requests 1.5 s; SIGKILL the
webhook worker once one is open, restart it under its node name: each interrupted
notification must arrive again with its webhook-id, while the notifications
after the restart must not wait: their p99 stays under 30 s). Kafka pauses,
Redis restarts and the other faults get the webhook checks too.

It prints a table (scenario, accepted, final, lost, doubled, recovery time, batch
figures, webhook notifications expected / received / duplicates and the delivery
latency p50/p99, first arrival minus the body's `timestamp`, of the notifications
new in the scenario) and exits 1 on any violation.

    python -m scripts.chaos            # the full run (make chaos)
    python -m scripts.chaos --short    # worker kill, relay kill, history worker kill, Redis restart, Kafka pause
    python -m scripts.chaos --scenarios kafka-pause-300s --kafka-pause 300   # a 5-minute broker stall
    python -m scripts.chaos --scenarios worker-kill,postgres-restart
    python -m scripts.chaos --scenarios webhook-receiver-down-60s,webhook-worker-kill
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.devstack import (  # noqa: E402
    RUN_MARKER,
    EmbeddedServices,
    _die_with_parent,
    pick_port,
    reaper_watchdog,
)
from scripts.chaos_webhooks import RETRY_SCHEDULE, Figures, Webhooks  # noqa: E402

TOKEN = "chaos-" + secrets.token_hex(8)
TENANT = "chaos"
WALLETS = 50
INITIAL_CENTS = 100_000  # 1000.00 each
# Failures a fault may cause without breaking the contract: business outcomes of the random workload.
BUSINESS_CODES = {"INSUFFICIENT_FUNDS", "HOLD_NOT_ACTIVE", "LIMIT_EXCEEDED", "WALLET_NOT_ACTIVE"}
WEBHOOK_THREADS = 16  # the Procfile's webhook-worker default
WEBHOOK_DOWN_S = 60.0  # webhook-receiver-down: how long the receiver refuses connections
WEBHOOK_HANG_S = 15.0  # webhook-receiver-hangs: each request held this long (the attempt timeout is 10 s)
WEBHOOK_HANG_FOR_S = 20.0  # ... for this long
WEBHOOK_CALM_S = 10.0  # ... after answering at once for this long
# webhook-receiver-hangs: while the second receiver hangs, the main receiver's delivery latency p99 stays under
# this, or twice its p99 of the calm phase (two endpoints, both answering at once), whichever is larger.
WEBHOOK_P99_BOUND_S = 5.0
# webhook-worker-kill: the p99 latency of the notifications after the restart stays under this (half the
# 60 s lease an interrupted attempt holds: only the interrupted deliveries may wait for it).
WEBHOOK_AFTER_KILL_P99_S = 30.0
# The share of the clients' rate in webhook-receiver-down-60s (every delivery retried for a minute) and in
# webhook-receiver-hangs (two endpoints: the webhook worker must keep up with both while neither hangs).
WEBHOOK_DOWN_LOAD = 0.5
WEBHOOK_HANG_LOAD = 0.25
IMPOSSIBLE_CENTS = 1_000_000_000  # 10,000,000.00: more than the whole bank ever holds (a batch item that must fail)


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cents(amount: str) -> int:
    whole, _, frac = amount.partition(".")
    return int(whole) * 100 + int((frac + "00")[:2])


def money(c: int) -> str:
    return f"{c // 100}.{c % 100:02d}"


# --------------------------------------------------------------------------- the stack


class Stack:
    """Embedded services plus every application process, each tracked by pid."""

    def __init__(self, state_dir: Path, *, workers: int = 2):
        self.state_dir = state_dir
        self.logs = state_dir / "logs"
        self.workers = workers
        self.services = EmbeddedServices(state_dir, env={}, redis_port=None, kafka_port=None)
        self.procs: dict[str, subprocess.Popen] = {}
        self.env: dict[str, str] = {}
        self.api_url = ""
        self.run_id = secrets.token_hex(8)
        self._reaper = None

    def start(self) -> None:
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)  # a fresh database every run: the checks count from zero
        self.logs.mkdir(parents=True)
        self._reaper = reaper_watchdog(self.run_id)  # reaps our processes even if we die hard
        t0 = time.monotonic()
        services_env = self.services.start()
        api_port = pick_port()
        vbin = str(Path(sys.executable).parent)
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")},
            **services_env,
            "KAFKA_TOPIC": self.services.kafka_topic,
            "KAFKA_GROUP_ID": f"history-chaos-{self.run_id[:6]}",
            "WALLET_API_KEYS": f"{TOKEN}:{TENANT}:read|write|admin",
            "RATE_LIMIT": "0",
            "REQUEUE_QUEUED_AFTER_S": "3",
            "REQUEUE_RUNNING_AFTER_S": "10",
            # Below REQUEUE_RUNNING_AFTER_S: a job still running is never re-enqueued by the sweeper.
            "TASK_SOFT_TIME_LIMIT": "6",
            "TASK_TIME_LIMIT": "8",
            "DB_STATEMENT_TIMEOUT_MS": "5000",
            "DB_LOCK_TIMEOUT_MS": "3000",
            "AUDIT_INTERVAL_S": "3600",
            "GUNICORN_WORKERS": "2",
            "GUNICORN_THREADS": "8",
            "GUNICORN_TIMEOUT": "30",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
            "PATH": os.pathsep.join((vbin, os.environ.get("PATH", ""))),
            "API_PORT": str(api_port),
            # Webhooks: the chaos receivers listen on 127.0.0.1; retries within seconds, not days.
            "WEBHOOK_ALLOW_PRIVATE_URLS": "1",
            "WEBHOOK_RETRY_SCHEDULE": RETRY_SCHEDULE,
            # A killed worker's deliveries wait out their lease, a lost publish the republish delay: shorter here.
            "WEBHOOK_LEASE_S": "35", "WEBHOOK_REPUBLISH_AFTER_S": "15",
            "WEBHOOK_GROUP_ID": f"webhooks-chaos-{self.run_id[:6]}",
            RUN_MARKER: self.run_id,
        }
        os.environ.update({k: v for k, v in self.env.items() if k != RUN_MARKER})
        from app.config import settings

        settings.cache_clear()
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, env=self.env, check=True,
                       stdout=subprocess.DEVNULL)
        self.api_url = f"http://127.0.0.1:{api_port}"
        for name in ("api", "worker", "beat", "relay", "history", "webhook-dispatcher", "webhook-worker",
                     "webhook-failing-worker"):
            self.spawn(name)
        self._wait_api()
        log(f"stack up in {time.monotonic() - t0:.1f}s: API {self.api_url}, state {self.state_dir}")

    def command_line(self, name: str) -> list[str]:
        py = sys.executable
        return {
            "api": [py, "-m", "gunicorn", "--config", str(REPO / "gunicorn.conf.py"), "--bind",
                    f"127.0.0.1:{self.env['API_PORT']}", "app.api:create_app()"],
            "worker": [py, "-m", "celery", "-A", "tasks", "worker", "-Q", "commands,maintenance", "-c",
                       str(self.workers), "-n", f"chaos-{self.run_id[:6]}@%h", "--without-mingle", "--without-gossip",
                       "-l", "info"],
            "beat": [py, "-m", "celery", "-A", "tasks", "beat", "-l", "info", "--schedule",
                     str(self.state_dir / "celerybeat-schedule")],
            "relay": [py, "-m", "app.relay"],
            "history": [py, "-m", "history.worker"],
            "webhook-dispatcher": [py, "-m", "app.webhook_dispatcher"],
            "webhook-worker": [py, "-m", "celery", "-A", "tasks", "worker", "-Q", "webhooks", "-P", "threads", "-c",
                               str(WEBHOOK_THREADS), "-n", f"webhooks-chaos-{self.run_id[:6]}@%h", "--without-mingle",
                               "--without-gossip", "-l", "info"],
            "webhook-failing-worker": [py, "-m", "celery", "-A", "tasks", "worker", "-Q", "webhooks-failing", "-P",
                                       "threads", "-c", "8", "-n", f"webhooks-failing-chaos-{self.run_id[:6]}@%h",
                                       "--without-mingle", "--without-gossip", "-l", "info"],
        }[name]

    def spawn(self, name: str) -> subprocess.Popen:
        """Start (or restart) one process in a session of its own. Call from the main thread (PDEATHSIG)."""
        with open(self.logs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(self.command_line(name), cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_die_with_parent(os.getpid()))
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL, wait: bool = True) -> None:
        """Signal a process and everything in its session (our own pids only)."""
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if wait:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            # Session members that outlive their leader (pool processes, gunicorn workers).
            deadline = time.monotonic() + 10
            while self._session_members(proc.pid) and time.monotonic() < deadline:
                for p in self._session_members(proc.pid):
                    with contextlib.suppress(psutil.Error):
                        p.kill()
                time.sleep(0.1)

    @staticmethod
    def _session_members(sid: int) -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(p.pid) == sid:
                    out.append(p)
        return out

    def children(self, name: str) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return psutil.Process(self.procs[name].pid).children()
        return []

    def check_alive(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def _wait_api(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.api_url}/health", timeout=1).status_code == 200:
                    return
            if self.procs["api"].poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"the API did not come up; see {self.logs / 'api.log'}")

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        with contextlib.suppress(Exception):
            from app.adapters.db import dispose_engine

            dispose_engine()
        self.services.stop()
        if self._reaper is not None:
            with contextlib.suppress(Exception):
                self._reaper.stdin.close()
                self._reaper.wait(30)


# --------------------------------------------------------------------------- the workload


@dataclass
class Command:
    kind: str  # create, fund, withdraw, transfer, hold, capture, void, batch
    key: str
    path: str
    body: dict
    scenario: str
    wallet: str | None = None
    to_wallet: str | None = None
    amount: int = 0  # cents; for a capture: what it captures
    hold_of: Command | None = None  # capture/void: the hold command
    job_ids: set = field(default_factory=set)
    attempts: int = 0
    gave_up: bool = False
    retry_seconds: float = 0.0  # from the first failed attempt to the answer
    unexpected: str | None = None  # an unexpected 4xx
    # A batch (POST /batches): job_ids holds the batch ids the answers named (one, unless a retry doubled it).
    atomic: bool = False
    items: list[BatchItem] = field(default_factory=list)
    batch_job_ids: list[str] | None = None  # the job ids of the first answer, in command order


@dataclass
class BatchItem:
    """One command of a batch, as the client sent it."""

    kind: str  # fund, withdraw, transfer
    wallet: str
    amount: int  # cents
    to_wallet: str | None = None
    must_fail: bool = False  # more than the whole bank holds: it cannot succeed

    def body(self, reference: str | None) -> dict:
        body = {"type": self.kind, "wallet_id": self.wallet, "amount": money(self.amount)}
        if self.to_wallet:
            body["to_wallet_id"] = self.to_wallet
        if reference:
            body["reference"] = reference
        return body


@dataclass(frozen=True)
class BatchLoad:
    """How many batches the clients send among their requests, and how big."""

    independent_rate: float = 0.6  # independent batches per second, all clients together
    independent_size: tuple[int, int] = (10, 100)
    atomic_rate: float = 0.6  # atomic batches per second
    atomic_size: tuple[int, int] = (2, 20)
    atomic_doomed: float = 0.3  # share of atomic batches with a command that cannot succeed
    # Before a fault that must hit batches mid-flight: this many independent batches of this size at once.
    burst: tuple[int, int] = (2, 250)


class Workload:
    """Client threads that submit commands with idempotent retries and record what they saw."""

    def __init__(self, api_url: str, *, threads: int, rate: float, seed: int, give_up_after: float = 120.0,
                 batches: BatchLoad | None = None):
        self.api_url = api_url
        self.threads = threads
        self.rate = rate
        self.batches = batches or BatchLoad(independent_rate=0, atomic_rate=0)
        self.rng = random.Random(seed)
        self.give_up_after = give_up_after
        self.commands: list[Command] = []
        self.wallets: list[str] = []
        self.holds: list[Command] = []  # hold commands not yet settled by a capture/void
        self.lock = threading.Lock()
        self.scenario = "setup"
        self.load = 1.0  # the scenario's share of `rate` (and of the batch rates)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.local = threading.local()

    # one command, retried like a real client ------------------------------------------------

    def _session(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            s = requests.Session()
            s.headers["Authorization"] = f"Bearer {TOKEN}"
            self.local.session = s
        return self.local.session

    def submit(self, cmd: Command, wait: int | None = None) -> dict | None:
        with self.lock:
            self.commands.append(cmd)
        headers = {"Idempotency-Key": cmd.key}
        if wait:
            headers["Prefer"] = f"wait={wait}"
        started = time.monotonic()
        first_failure = None
        backoff = 0.1
        while True:
            cmd.attempts += 1
            retry_after = None
            try:
                r = self._session().post(self.api_url + cmd.path, json=cmd.body, headers=headers,
                                         timeout=(3, 10 + (wait or 0)))
                if r.status_code in (200, 202):
                    job = r.json()
                    cmd.job_ids.add(job["id"])
                    if cmd.kind == "batch":  # a replay must name the same jobs
                        if cmd.batch_job_ids is None:
                            cmd.batch_job_ids = job["job_ids"]
                        elif cmd.batch_job_ids != job["job_ids"]:
                            cmd.unexpected = f"a retry's answer lists other jobs: {job['job_ids'][:3]}…"
                    if first_failure is not None:
                        cmd.retry_seconds = time.monotonic() - first_failure
                    return job
                if r.status_code < 500 and r.status_code != 429:
                    cmd.unexpected = f"{r.status_code} {r.text[:200]}"
                    return None
                retry_after = r.headers.get("Retry-After")
            except requests.RequestException:
                pass
            first_failure = first_failure or time.monotonic()
            if time.monotonic() - started > self.give_up_after:
                cmd.gave_up = True
                return None
            delay = float(retry_after) if retry_after and retry_after.isdigit() else backoff
            time.sleep(min(delay, 2.0) * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, 2.0)

    def get(self, path: str) -> dict | None:
        for _ in range(20):
            with contextlib.suppress(requests.RequestException):
                r = self._session().get(self.api_url + path, timeout=(3, 10))
                if r.status_code == 200:
                    return r.json()
                if r.status_code < 500:
                    return None
            time.sleep(0.5)
        return None

    # setup ----------------------------------------------------------------------------------

    def setup(self) -> None:
        def make(i: int) -> None:
            cmd = Command("create", f"create-{i}-{uuid.uuid4()}", "/wallets", {"user_id": f"chaos-{i}"}, "setup")
            job = self._final(self.submit(cmd, wait=20))
            assert job and job["status"] == "succeeded", job
            wallet = job["result"]["id"]
            fund = Command("fund", f"fund-{i}-{uuid.uuid4()}", f"/wallets/{wallet}/fund",
                           {"amount": money(INITIAL_CENTS), "reference": "chaos setup"}, "setup",
                           wallet=wallet, amount=INITIAL_CENTS)
            job = self._final(self.submit(fund, wait=20))
            assert job and job["status"] == "succeeded", job
            with self.lock:
                self.wallets.append(wallet)

        threads = [threading.Thread(target=lambda lo=lo: [make(i) for i in range(lo, WALLETS, 8)]) for lo in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(self.wallets) == WALLETS, len(self.wallets)

    def _final(self, job: dict | None, timeout: float = 60) -> dict | None:
        deadline = time.monotonic() + timeout
        while job is not None and job["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            time.sleep(0.1)
            job = self.get(f"/jobs/{job['id']}") or job
        return job

    # the random mix -------------------------------------------------------------------------

    def _one(self, rng: random.Random) -> None:
        kind = rng.choices(["transfer", "fund", "withdraw", "hold", "settle"], [50, 12, 10, 14, 14])[0]
        w = rng.choice(self.wallets)
        # Mostly small amounts; now and then one large enough to overdraw (a business rejection).
        amount = rng.randint(1, 5000) if rng.random() < 0.92 else rng.randint(50_000, 150_000)
        key = f"{kind}-{uuid.uuid4()}"
        if kind == "transfer":
            to = rng.choice([x for x in self.wallets if x != w])
            cmd = Command(kind, key, f"/wallets/{w}/transfer", {"to_wallet_id": to, "amount": money(amount)},
                          self.scenario, wallet=w, to_wallet=to, amount=amount)
        elif kind in ("fund", "withdraw"):
            cmd = Command(kind, key, f"/wallets/{w}/{kind}", {"amount": money(amount)}, self.scenario,
                          wallet=w, amount=amount)
        elif kind == "hold":
            cmd = Command(kind, key, f"/wallets/{w}/holds", {"amount": money(amount), "expires_in_seconds": 86400},
                          self.scenario, wallet=w, amount=amount)
            if self.submit(cmd):
                with self.lock:
                    self.holds.append(cmd)
            return
        else:  # capture or void a hold placed earlier
            with self.lock:
                if not self.holds:
                    return
                hold_cmd = self.holds.pop(rng.randrange(len(self.holds)))
            job = self.get(f"/jobs/{next(iter(hold_cmd.job_ids))}")
            if job is None or job["status"] != "succeeded":
                if job is not None and job["status"] in ("queued", "running"):
                    with self.lock:
                        self.holds.append(hold_cmd)  # not placed yet: later
                return
            hold_id = job["result"]["id"]
            if rng.random() < 0.35:
                cmd = Command("void", key, f"/holds/{hold_id}/void", {}, self.scenario, hold_of=hold_cmd)
            else:
                body: dict = {}
                captured = hold_cmd.amount
                to = None
                if rng.random() < 0.5:
                    captured = rng.randint(1, hold_cmd.amount)
                    body["amount"] = money(captured)
                if rng.random() < 0.6:
                    to = rng.choice([x for x in self.wallets if x != hold_cmd.wallet])
                    body["to_wallet_id"] = to
                cmd = Command("capture", key, f"/holds/{hold_id}/capture", body, self.scenario,
                              wallet=hold_cmd.wallet, to_wallet=to, amount=captured, hold_of=hold_cmd)
        self.submit(cmd)

    # batches ---------------------------------------------------------------------------------

    def _item(self, rng: random.Random, kinds: tuple[str, ...], weights: tuple[int, ...], amount: int,
              must_fail: bool = False) -> BatchItem:
        kind = rng.choices(kinds, weights)[0]
        w = rng.choice(self.wallets)
        to = rng.choice([x for x in self.wallets if x != w]) if kind == "transfer" else None
        return BatchItem(kind, w, amount, to, must_fail)

    def _doomed(self, rng: random.Random) -> BatchItem:
        """A transfer or withdrawal of more than the whole bank holds: INSUFFICIENT_FUNDS, always."""
        return self._item(rng, ("transfer", "withdraw"), (1, 1), IMPOSSIBLE_CENTS, must_fail=True)

    def _batch_command(self, rng: random.Random, items: list[BatchItem], atomic: bool) -> Command:
        key = f"batch-{uuid.uuid4()}"
        body = {"atomic": atomic, "commands": [
            item.body(f"chaos {key[6:14]}/{i}" if rng.random() < 0.5 else None) for i, item in enumerate(items)]}
        return Command("batch", key, "/batches", body, self.scenario, atomic=atomic, items=items)

    def independent_batch(self, rng: random.Random, size: int | None = None) -> Command:
        """Transfers and withdrawals (a few funds) among the bank's wallets; one in 25 (at least one) cannot
        succeed, and about 8% are large enough to overdraw (they may or may not)."""
        size = size or rng.randint(*self.batches.independent_size)
        items = [self._item(rng, ("transfer", "withdraw", "fund"), (70, 22, 8),
                            rng.randint(1, 5000) if rng.random() < 0.92 else rng.randint(50_000, 150_000))
                 for _ in range(size)]
        for i in rng.sample(range(size), max(1, size // 25)):
            items[i] = self._doomed(rng)
        return self._batch_command(rng, items, atomic=False)

    def atomic_batch(self, rng: random.Random) -> Command:
        """Small movements, often chained through the same wallets; some hold a command that cannot succeed."""
        size = rng.randint(*self.batches.atomic_size)
        items = [self._item(rng, ("transfer", "withdraw", "fund"), (60, 25, 15), rng.randint(1, 5000))
                 for _ in range(size)]
        for i in range(1, size):  # chain: a transfer out of the wallet the one before credited
            if items[i].kind == "transfer" and items[i - 1].kind == "transfer" and rng.random() < 0.5 \
                    and items[i - 1].to_wallet != items[i].to_wallet:
                items[i].wallet = items[i - 1].to_wallet
        if rng.random() < self.batches.atomic_doomed:
            items[rng.randrange(size)] = self._doomed(rng)
        return self._batch_command(rng, items, atomic=True)

    def burst(self) -> list[Command]:
        """Big independent batches (and an atomic one) at once, answered before it returns; a fault
        watching from its start finds wallet.execute_batch chunks running and queued."""
        count, size = self.batches.burst
        rng = random.Random(self.rng.randrange(2**32))
        cmds = [self.independent_batch(rng, size) for _ in range(count)] + [self.atomic_batch(rng)]
        threads = [threading.Thread(target=self.submit, args=(c,), daemon=True) for c in cmds]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return cmds

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)
        b = self.batches
        while not self._stop.is_set():
            mean_pause = self.threads / (self.rate * self.load)
            try:
                draw = rng.random() * self.rate
                if draw < b.independent_rate:
                    self.submit(self.independent_batch(rng))
                elif draw < b.independent_rate + b.atomic_rate:
                    self.submit(self.atomic_batch(rng))
                else:
                    self._one(rng)
            except Exception as e:  # noqa: BLE001 - a client bug must not kill the run silently
                log(f"client error: {e!r}")
            self._stop.wait(rng.uniform(0, 2 * mean_pause))

    def start(self, scenario: str, load: float = 1.0) -> None:
        self.scenario = scenario
        self.load = load
        self._stop.clear()
        self._threads = [threading.Thread(target=self._client, args=(self.rng.randrange(2**32),), daemon=True)
                         for _ in range(self.threads)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.give_up_after + 30)

    def of(self, scenario: str) -> list[Command]:
        with self.lock:
            return [c for c in self.commands if c.scenario == scenario]


# --------------------------------------------------------------------------- faults


# What a pool process's connection shows (pg_stat_activity.query) while it runs a wallet.execute_batch chunk:
# the claim of its jobs (active), then, in the chunk's transaction, the read that locks its wallets (active
# while it waits for them, idle in transaction while the chunk is planned) and the one write that finishes
# every job of it. (An idle connection keeps showing its last statement: the claim's connection may sit in
# the process's pool with it long after the chunk is done, so idle does not count.)
_CHUNK_CLAIM = "ORDER BY batch_index, id"
_CHUNK_LOCK = "FOR UPDATE OF w"
_CHUNK_WRITE = "r(id uuid, status text, result jsonb, error jsonb)"


class Faults:
    """Each fault targets the stack's own pids; all run in the main thread.

    With a `burst` (the workload's), the faults that must hit bulk submissions mid-flight (every other
    pool-process kill, the whole-worker kill, the PostgreSQL restart) first submit big batches and then
    fire while a pool process is inside a chunk; `aimed` / `hit` count those faults and the ones that
    found a chunk in flight.
    """

    def __init__(self, stack: Stack, rng: random.Random, kafka_pause_s: float, log_fn=log, burst=None,
                 webhooks: Webhooks | None = None):
        self.stack = stack
        self.webhooks = webhooks
        self.rng = rng
        self.kafka_pause_s = kafka_pause_s
        self.log = log_fn
        self.kills: dict[str, int] = defaultdict(int)
        self.burst = burst
        self.aimed = 0
        self.hit = 0

    def run(self, name: str) -> None:
        getattr(self, name.replace("-", "_"))()

    def _pool(self) -> dict[int, psutil.Process]:
        """The worker's live pool processes (a process killed a moment ago may linger as a zombie, and its
        connection in pg_stat_activity until PostgreSQL notices)."""
        pool = {}
        for p in self.stack.children("worker"):
            with contextlib.suppress(psutil.Error):
                if p.status() != psutil.STATUS_ZOMBIE:
                    pool[p.pid] = p
        return pool

    def _chunk_pool_pids(self) -> list[tuple[int, str]]:
        """Pool processes inside a wallet.execute_batch chunk right now (claiming, locking, planning, writing),
        with what their connection shows."""
        from sqlalchemy import text

        from app.adapters.db import engine

        pool = set(self._pool())
        found = []
        with contextlib.suppress(Exception), engine().connect() as conn:
            for name, state, query in conn.execute(text(
                    "SELECT application_name, state, query FROM pg_stat_activity"
                    " WHERE application_name LIKE 'wallet:%' AND pid <> pg_backend_pid()")):
                pid, query = int(name.split(":")[1]), query or ""
                if pid not in pool:
                    continue
                if _CHUNK_CLAIM in query and state == "active":
                    found.append((pid, "claiming its jobs"))
                elif _CHUNK_LOCK in query and state in ("active", "idle in transaction"):
                    found.append((pid, "locking its wallets" if state == "active" else "planning"))
                elif _CHUNK_WRITE in query and state in ("active", "idle in transaction"):
                    found.append((pid, "writing" if state == "active" else "committing"))
        return found

    def _aim_at_chunks(self, fault: str, timeout: float = 10.0) -> int | None:
        """Submit a burst of batches and wait until a pool process is inside a chunk; its pid, or None.

        The watch starts with the burst: an idle worker may run its first chunks before the last batch
        of the burst is even answered."""
        if self.burst is None:
            return None
        self.aimed += 1
        t0 = time.monotonic()
        cmds: list[Command] = []
        submitter = threading.Thread(target=lambda: cmds.extend(self.burst()), daemon=True)
        submitter.start()
        while time.monotonic() - t0 < timeout:
            found = self._chunk_pool_pids()
            if found:
                self.hit += 1
                pid, phase = found[0]
                self.log(f"{fault}: pool process {pid} inside a chunk ({phase}) {time.monotonic() - t0:.1f} s "
                         f"after the burst began ({'all' if cmds else 'not all'} of its batches answered)")
                return pid
            time.sleep(0.003)
        submitter.join(30)
        self.log(f"{fault}: no chunk seen in flight within {timeout:.0f} s of the burst")
        return None

    def _busy_pool_process(self) -> psutil.Process | None:
        """A worker pool process, preferably one inside a database transaction (mid-command)."""
        from sqlalchemy import text

        from app.adapters.db import engine

        pool = self._pool()
        if not pool:
            return None
        busy: list[int] = []
        with contextlib.suppress(Exception), engine().connect() as conn:
            for (name,) in conn.execute(text(
                    "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'wallet:%'"
                    " AND state IN ('active', 'idle in transaction')")):
                pid = int(name.split(":")[1])
                if pid in pool:
                    busy.append(pid)
        return pool[self.rng.choice(busy)] if busy else pool[self.rng.choice(list(pool))]

    def worker_kill(self) -> None:
        """SIGKILL a Celery pool process (mid-command when one is found); the worker forks a new one.

        Every other kill (the first, third, …) aims at a pool process inside a batch chunk."""
        self.kills["worker-kill"] += 1
        victim = None
        if self.burst is not None and self.kills["worker-kill"] % 2 == 1:
            pid = self._aim_at_chunks("worker-kill")
            with contextlib.suppress(psutil.Error):
                victim = psutil.Process(pid) if pid else None
        victim = victim or self._busy_pool_process()
        if victim is None:
            self.log("worker-kill: no pool process found")
            return
        with contextlib.suppress(psutil.Error):
            victim.send_signal(signal.SIGKILL)
        self.kills["worker"] += 1
        self.log(f"worker-kill: SIGKILL pool process {victim.pid}")

    def worker_kill_all(self) -> None:
        """SIGKILL the whole worker (main process and pool) and start it again (with chunks in flight)."""
        self._aim_at_chunks("worker-kill-all")
        self.stack.kill("worker")
        self.log("worker-kill-all: SIGKILL the worker and its pool; restart in 2 s")
        time.sleep(2)
        self.stack.spawn("worker")

    def redis_restart(self) -> None:
        """Kill Redis; a fresh, empty one on the same port: queued tasks are lost."""
        self.log("redis-restart: SIGKILL redis-server, a fresh empty one in 1 s")
        self.stack.services.restart("redis", down_for=1.0)

    def kafka_pause(self) -> None:
        """The broker stops answering (SIGSTOP) for kafka_pause_s, then resumes with its data."""
        pid = self.stack.services.pids()["kafka"]
        self.log(f"kafka-pause: SIGSTOP tansu {pid} for {self.kafka_pause_s:.0f} s")
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(self.kafka_pause_s)
        finally:
            os.kill(pid, signal.SIGCONT)

    def postgres_restart(self) -> None:
        """Crash PostgreSQL (immediate stop, recovery at start) and start it again 3 s later."""
        self._aim_at_chunks("postgres-restart")
        self.log("postgres-restart: pg_ctl stop -m immediate, start in 3 s")
        self.stack.services.restart("postgres", down_for=3.0)

    def relay_kill(self) -> None:
        self.log("relay-kill: SIGKILL the relay; restart in 2 s")
        self.stack.kill("relay")
        time.sleep(2)
        self.stack.spawn("relay")

    def history_kill(self) -> None:
        self.log("history-kill: SIGKILL the history worker; restart in 2 s")
        self.stack.kill("history")
        time.sleep(2)
        self.stack.spawn("history")

    def webhook_receiver_down(self) -> None:
        """The main receiver stops listening (connection refused) for WEBHOOK_DOWN_S, then listens again on
        the same port: every attempt meanwhile fails, and the retries deliver everything after."""
        rx = self.webhooks.receiver
        self.log(f"webhook-receiver-down: receiver {rx.url} down for {WEBHOOK_DOWN_S:.0f} s")
        rx.stop()
        try:
            time.sleep(WEBHOOK_DOWN_S)
        finally:
            rx.start()
        self.log("webhook-receiver-down: receiver listening again on the same port")

    def webhook_hang(self) -> None:
        """A second endpoint (events *): its receiver answers at once for WEBHOOK_CALM_S, then holds every
        request WEBHOOK_HANG_S (beyond the attempt timeout) for WEBHOOK_HANG_FOR_S, then answers at once
        again. The main receiver's latency while it hangs is compared with the calm phase's."""
        hooks = self.webhooks
        rx = hooks.add_endpoint("hanging")
        calm = time.time()
        self.log(f"webhook-hang: a second endpoint {rx.url}, answering at once for {WEBHOOK_CALM_S:.0f} s")
        time.sleep(WEBHOOK_CALM_S)
        rx.delay_s = WEBHOOK_HANG_S
        hang = time.time()
        self.log(f"webhook-hang: it now holds each request {WEBHOOK_HANG_S:.0f} s, for {WEBHOOK_HANG_FOR_S:.0f} s")
        try:
            time.sleep(WEBHOOK_HANG_FOR_S)
        finally:
            rx.delay_s = 0.0
        hooks.phases.update(calm=(calm, hang - 2), hang=(hang, time.time()))  # (calm: all delivered before)
        with rx.lock:
            self.log(f"webhook-hang: it answers at once again ({rx.requests} requests so far, "
                     f"{len(rx.in_flight)} held open)")

    def webhook_worker_kill(self) -> None:
        """SIGKILL the webhook worker while an attempt is in flight (the main receiver holds each request
        1.5 s meanwhile: under the 2 s after which its endpoint would count as slow and its deliveries go to the
        other worker), start it again 2 s later: the interrupted notifications must arrive again, same id."""
        rx = self.webhooks.receiver
        rx.delay_s = 1.5
        deadline = time.monotonic() + 20
        open_ids: list[str] = []
        try:
            while time.monotonic() < deadline and not open_ids:
                open_ids = rx.open_requests(0.1, 0.7)  # each still held ≥ 0.8 s: its answer cannot slip out
                time.sleep(0.01)
            if open_ids:
                with rx.lock:
                    rx.track.update(open_ids)
            killed_at = time.time()
            self.stack.kill("webhook-worker")
        finally:
            rx.delay_s = 0.0
        self.kills["webhook-worker"] += 1
        for wid in open_ids:
            self.webhooks.interrupted.setdefault(wid, killed_at)
        self.webhooks.blind_kills += not open_ids
        self.log(f"webhook-worker-kill: SIGKILL the webhook worker with {len(open_ids)} attempts in flight "
                 f"({', '.join(open_ids[:3])}{' …' if len(open_ids) > 3 else ''}); restart in 2 s")
        time.sleep(2)
        self.stack.spawn("webhook-worker")
        # The notifications that come after the restart wait for nothing: only the interrupted ones wait for
        # their lease to run out (checked: the p99 of those from 3 s after the restart on).
        self.webhooks.phases["after-kill"] = (time.time() + 3, float("inf"))

    def api_kill(self) -> None:
        """SIGKILL a gunicorn worker mid-request (the arbiter forks another), then the whole API."""
        workers = self.stack.children("api")
        if workers:
            victim = self.rng.choice(workers)
            self.log(f"api-kill: SIGKILL gunicorn worker {victim.pid}")
            with contextlib.suppress(psutil.Error):
                victim.send_signal(signal.SIGKILL)
        time.sleep(3)
        self.log("api-kill: SIGKILL the arbiter and its workers; restart in 1 s")
        self.stack.kill("api")
        time.sleep(1)
        self.stack.spawn("api")
        self.stack._wait_api()


@dataclass
class Scenario:
    name: str
    faults: list[str]
    gap_s: float = 2.0  # between faults
    warmup_s: float = 3.0  # load before the first fault
    tail_s: float = 4.0  # load after the last fault
    load: float = 1.0  # share of the clients' rate (and batch rates) during this scenario


def scenarios(profile: str, rng: random.Random, kafka_pause_s: float = 30.0) -> list[Scenario]:
    kafka_pause = f"kafka-pause-{kafka_pause_s:.0f}s"
    if profile == "short":
        return [
            Scenario("worker-kill", ["worker-kill"] * 3, gap_s=1.5, warmup_s=2, tail_s=2),
            Scenario("relay-kill", ["relay-kill"], warmup_s=2, tail_s=2),
            Scenario("history-kill", ["history-kill"], warmup_s=2, tail_s=2),
            Scenario("redis-restart", ["redis-restart"], warmup_s=2, tail_s=3),
            Scenario(kafka_pause, ["kafka-pause"], warmup_s=2, tail_s=2),
        ]
    kinds = ["worker-kill", "redis-restart", "kafka-pause", "postgres-restart", "relay-kill", "history-kill",
             "api-kill"]
    mixed = [rng.choice(kinds) for _ in range(6)]
    return [
        Scenario("baseline", [], warmup_s=8, tail_s=0),
        Scenario("worker-kill", ["worker-kill"] * 5 + ["worker-kill-all"], gap_s=2),
        Scenario("redis-restart", ["redis-restart", "redis-restart"], gap_s=6),
        Scenario(kafka_pause, ["kafka-pause"]),
        Scenario("postgres-restart", ["postgres-restart"], tail_s=6),
        Scenario("relay-kill", ["relay-kill", "relay-kill"], gap_s=4),
        Scenario("history-kill", ["history-kill", "history-kill"], gap_s=8),
        Scenario("api-kill", ["api-kill"]),
        Scenario("webhook-receiver-down-60s", ["webhook-receiver-down"], tail_s=4, load=WEBHOOK_DOWN_LOAD),
        Scenario("webhook-receiver-hangs", ["webhook-hang"], tail_s=4, load=WEBHOOK_HANG_LOAD),
        Scenario("webhook-worker-kill", ["webhook-worker-kill"], tail_s=10),
        Scenario("mixed", mixed, gap_s=3, tail_s=6),
    ]


# --------------------------------------------------------------------------- checks


@dataclass
class Result:
    scenario: str
    faults: str
    accepted: int = 0
    final: int = 0
    lost: int = 0
    doubled: int = 0
    failed_business: int = 0
    bad_failures: int = 0
    gave_up: int = 0
    max_retry_s: float = 0.0
    recovery_s: float | None = None  # until quiescent, webhooks included
    ledger_recovery_s: float | None = None  # until jobs, outbox and history were (the webhooks may take longer)
    # Bulk submissions (their jobs count in accepted, final, lost, doubled and failed above too).
    batches: int = 0
    batch_commands: int = 0
    atomic_ok: int = 0
    atomic_failed: int = 0
    batch_jobs_failed: int = 0  # jobs of independent batches failed for a business reason
    batch_jobs_redelivered: int = 0  # batch jobs claimed again after their delivery died (lost_deliveries)
    aimed: int = 0  # faults fired after a burst of batches
    hit: int = 0  # ... with a pool process inside a chunk
    webhooks: Figures = field(default_factory=Figures)  # the main endpoint's notifications new in this scenario
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def quiescent(history_check: bool = True, webhooks: Webhooks | None = None) -> tuple[bool, str]:
    """No job queued or running, outbox drained, history equal to the ledger; with webhooks, every
    notification has a delivery and none is pending (in flight or waiting for a retry)."""
    from sqlalchemy import text

    from app.adapters.db import engine

    try:
        with engine().connect() as conn:
            open_jobs = conn.execute(text("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")).scalar()
            backlog = conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar()
            hooks = webhooks.pending_state(conn) if webhooks is not None else (True, "")
    except Exception as e:  # noqa: BLE001 - the database may still be recovering
        return False, f"database: {type(e).__name__}"
    if open_jobs:
        return False, f"{open_jobs} jobs open"
    if backlog:
        return False, f"{backlog} events unpublished"
    if history_check:
        from history import ops

        diffs = ops.compare()
        if diffs:
            return False, f"history: {len(diffs)} differences"
    if not hooks[0]:
        return hooks
    return True, "quiescent"


def wait_quiescent(bound: float, progress, webhooks: Webhooks | None = None
                   ) -> tuple[float | None, str, float | None]:
    """Seconds until quiescent (None: not within `bound`), the last state, and seconds until everything
    but the webhooks was (the ledger's pipeline: jobs, outbox, history)."""
    t0 = time.monotonic()
    state = ""
    ledger = None
    while time.monotonic() - t0 < bound:
        # Once the ledger's pipeline was quiescent, only the webhooks are polled: `history compare` reads the whole
        # ledger and history in this process, seconds of CPU under the GIL that the receiver's threads need, so
        # polling it slowed the very deliveries being waited for. The end is confirmed with the full check.
        full = ledger is None
        ok, state = quiescent(history_check=full, webhooks=webhooks)
        progress(state)
        if ledger is None and (ok or state.startswith("webhooks:")):
            ledger = time.monotonic() - t0
        if ok and not full:
            ok, state = quiescent(webhooks=webhooks)  # anything new meanwhile (a hold's expiry) is checked too
            if not ok:
                ledger = None
        if ok:
            return time.monotonic() - t0, state, ledger
        time.sleep(1.0)
    return None, state, ledger


def check(workload: Workload, scenario: Scenario, recovery: float | None, state: str, bound: float,
          webhooks: Webhooks | None = None) -> Result:
    from sqlalchemy import text

    from app.adapters.db import engine

    res = Result(scenario.name, ", ".join(_compact(scenario.faults)) or "none", recovery_s=recovery)
    if recovery is None:
        res.violations.append(f"not quiescent within {bound:.0f}s ({state})")
    mine = workload.of(scenario.name)
    everything = list(workload.commands)
    keys = [c.key for c in everything]
    with engine().connect() as conn:
        db = {row.key: row for row in conn.execute(text("""
            SELECT k.key, j.id::text AS job_id, j.status, j.error, j.attempts
              FROM idempotency_keys k JOIN jobs j ON j.id = k.job_id
             WHERE k.tenant_id = :tenant AND k.key = ANY(:keys)"""), {"tenant": TENANT, "keys": keys})}
        # A command is one journal entry; an atomic batch job one per command (checked in check_batches).
        doubled_jobs = conn.execute(text("""
            SELECT e.job_id::text, count(*) FROM journal_entries e JOIN jobs j ON j.id = e.job_id
             WHERE j.type <> 'batch' GROUP BY e.job_id HAVING count(*) > 1""")).all()
        balances = {w: c for w, c in conn.execute(text(
            "SELECT id::text, balance FROM wallets WHERE tenant_id = :t"), {"t": TENANT})}
        negative = conn.execute(text("SELECT count(*) FROM wallets WHERE balance < -overdraft_limit")).scalar()

    # Accepted, final, lost, doubled: the commands of this scenario (the batches' jobs: check_batches).
    for c in mine:
        if c.kind == "batch":
            continue
        if c.unexpected:
            res.violations.append(f"{c.kind} {c.key}: unexpected answer {c.unexpected}")
        if c.gave_up:
            res.gave_up += 1
        if not c.job_ids:
            continue
        res.accepted += 1
        res.max_retry_s = max(res.max_retry_s, c.retry_seconds)
        row = db.get(c.key)
        if len(c.job_ids) > 1 or (row is not None and row.job_id not in c.job_ids):
            res.doubled += 1
            res.violations.append(f"{c.kind} {c.key}: retries saw jobs {sorted(c.job_ids)}, "
                                  f"database has {row.job_id if row else None}")
        if row is None or row.status not in ("succeeded", "failed"):
            res.lost += 1
            continue
        res.final += 1
        if row.status == "failed":
            code = (row.error or {}).get("code")
            if code in BUSINESS_CODES:
                res.failed_business += 1
            else:
                res.bad_failures += 1
                res.violations.append(f"{c.kind} job {row.job_id} failed {code} (attempts {row.attempts})")
    with engine().connect() as conn:
        batch_db = batch_facts(conn, [c for c in everything if c.kind == "batch"])
        check_batches(conn, workload, [c for c in mine if c.kind == "batch"], batch_db, res)
    if res.lost:
        res.violations.append(f"{res.lost} accepted jobs not final")
    if doubled_jobs:
        res.doubled += len(doubled_jobs)
        res.violations.append(f"jobs applied more than once: {doubled_jobs[:5]}")
    if negative:
        res.violations.append(f"{negative} balances below their overdraft limit")
    if webhooks is not None:
        check_webhooks(webhooks, scenario, res)

    # Money: every wallet's balance is what the succeeded commands (of every scenario so far) make it.
    expected: dict[str, int] = defaultdict(int)
    for c in everything:
        row = db.get(c.key)
        if row is None or row.status != "succeeded":
            continue
        if c.kind == "fund":
            expected[c.wallet] += c.amount
        elif c.kind == "withdraw":
            expected[c.wallet] -= c.amount
        elif c.kind == "transfer":
            expected[c.wallet] -= c.amount
            expected[c.to_wallet] += c.amount
        elif c.kind == "capture":
            expected[c.wallet] -= c.amount
            if c.to_wallet:
                expected[c.to_wallet] += c.amount
    for c in everything:  # a batch's commands: each one whose job succeeded, or all of an atomic one that did
        facts = batch_db.get(c.key)
        if facts is None:
            continue
        for index, item in enumerate(c.items):
            job = facts.jobs[0] if c.atomic else facts.jobs_by_index.get(index)
            if job is None or job["status"] != "succeeded":
                continue
            if item.kind == "fund":
                expected[item.wallet] += item.amount
            elif item.kind == "withdraw":
                expected[item.wallet] -= item.amount
            else:
                expected[item.wallet] -= item.amount
                expected[item.to_wallet] += item.amount
    wrong = [(w, money(expected[w]), str(balances.get(w))) for w in workload.wallets
             if cents(str(balances.get(w, "0"))) != expected[w]]
    if wrong:
        res.violations.append(f"{len(wrong)} wallets differ from the client-side expectation, e.g. {wrong[:3]}")
    total = sum(cents(str(b)) for b in balances.values())
    if total != sum(expected.values()):
        res.violations.append(f"money not conserved: wallets hold {money(total)}, "
                              f"commands account for {money(sum(expected.values()))}")

    # The operator commands, as an operator would run them.
    for args, what in ((["audit", "run", "--no-record"], "audit run"), (["history", "compare"], "history compare")):
        out = subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, env=os.environ,
                             capture_output=True, text=True)
        if out.returncode != 0:
            res.violations.append(f"`{what}` exited {out.returncode}: {(out.stdout + out.stderr)[-600:]}")
    return res


def check_webhooks(webhooks: Webhooks, scenario: Scenario, res: Result) -> None:
    """Every notification so far delivered (succeeded) and received, signed, one body per webhook-id; the
    figures of those new in this scenario; the attempts a worker kill interrupted received again."""
    from app.adapters.db import engine

    with engine().connect() as conn:
        webhooks.check(conn, res.violations, res.webhooks)
        for note in webhooks.check_extra(conn, res.violations):
            log(f"{scenario.name}: webhooks {note}")
    f = res.webhooks
    if f.retried:
        log(f"{scenario.name}: webhooks: {f.retried} of the scenario's deliveries took several attempts "
            f"(at most {f.max_attempts})")
    if webhooks.blind_kills:  # the scenario did not test what it is for
        res.violations.append(f"webhooks: the webhook worker was killed {webhooks.blind_kills} times with no "
                              f"attempt seen in flight")
        webhooks.blind_kills = 0
    if "after-kill" in f.phase_p99_s:  # webhook-worker-kill: the killed attempts hold back no other delivery
        after = f.phase_p99_s["after-kill"]
        log(f"{scenario.name}: main receiver latency p99 {_s(after)} s for the notifications after the restart")
        if after is None or after > WEBHOOK_AFTER_KILL_P99_S:
            res.violations.append(f"webhooks: after the webhook worker's restart, the main receiver's delivery "
                                  f"latency p99 was {_s(after)} s, over {WEBHOOK_AFTER_KILL_P99_S:.0f} s: deliveries "
                                  f"other than the interrupted ones waited (for the killed attempts' leases?)")
    if "hang" in f.phase_p99_s:  # webhook-receiver-hangs: the main receiver is not delayed by the hanging one
        calm, hang = f.phase_p99_s.get("calm"), f.phase_p99_s["hang"]
        bound = max(WEBHOOK_P99_BOUND_S, 2 * (calm or 0.0))
        log(f"{scenario.name}: main receiver latency p99 {_s(calm)} s with the second endpoint answering at "
            f"once, {_s(hang)} s while it hung (bound {bound:.1f} s)")
        if hang is None or hang > bound:
            res.violations.append(f"webhooks: while the second endpoint hung, the main receiver's delivery latency "
                                  f"p99 was {_s(hang)} s, over {bound:.1f} s (p99 {_s(calm)} s before the hang)")


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}"


@dataclass
class BatchFacts:
    """What the database holds for one batch command's key."""

    batch_id: str
    atomic: bool | None  # None: the batches row is missing
    size: int | None
    jobs: list[dict]  # in batch_index order

    @property
    def jobs_by_index(self) -> dict[int, dict]:
        return {j["batch_index"]: j for j in self.jobs}


def batch_facts(conn, cmds: list[Command]) -> dict[str, BatchFacts]:
    """The batch each key names in the database, with its jobs, by key."""
    from sqlalchemy import text

    if not cmds:
        return {}
    keys = {row.key: row.batch_id for row in conn.execute(text("""
        SELECT key, batch_id::text AS batch_id FROM idempotency_keys
         WHERE tenant_id = :tenant AND key = ANY(:keys) AND batch_id IS NOT NULL"""),
        {"tenant": TENANT, "keys": [c.key for c in cmds]})}
    ids = list(keys.values())
    rows = {r.id: r for r in conn.execute(text(
        "SELECT id::text AS id, atomic, size FROM batches WHERE id = ANY(CAST(:ids AS uuid[]))"), {"ids": ids})}
    jobs: dict[str, list[dict]] = defaultdict(list)
    for j in conn.execute(text("""
            SELECT id::text AS id, batch_id::text AS batch_id, batch_index, type, status, error, result, payload,
                   attempts, lost_deliveries
              FROM jobs WHERE batch_id = ANY(CAST(:ids AS uuid[])) ORDER BY batch_id, batch_index"""),
            {"ids": ids}).mappings():
        jobs[j["batch_id"]].append(dict(j))
    return {key: BatchFacts(batch_id, rows[batch_id].atomic if batch_id in rows else None,
                            rows[batch_id].size if batch_id in rows else None, jobs.get(batch_id, []))
            for key, batch_id in keys.items()}


def check_batches(conn, workload: Workload, cmds: list[Command], db: dict[str, BatchFacts], res: Result) -> None:
    """The bulk submissions of this scenario: each batch as its answer said, each job final and applied
    exactly once (atomic: every command or none), the batch resource's counts its jobs', events carrying
    the batch id (outbox payload and history rows)."""
    from sqlalchemy import text

    def violation(c: Command, what: str) -> None:
        res.violations.append(f"batch {sorted(c.job_ids)[0] if c.job_ids else None} (key {c.key}): {what}")

    answered = [c for c in cmds if c.job_ids]
    job_ids = [j["id"] for c in answered if c.key in db for j in db[c.key].jobs]
    entries = {r.job_id: (r.n, list(r.items)) for r in conn.execute(text("""
        SELECT job_id::text AS job_id, count(*) AS n, array_agg(item ORDER BY item) AS items FROM journal_entries
         WHERE job_id = ANY(CAST(:ids AS uuid[])) GROUP BY job_id"""), {"ids": job_ids})}
    postings = dict(conn.execute(text("""
        SELECT job_id::text, count(*) FROM postings WHERE job_id = ANY(CAST(:ids AS uuid[])) GROUP BY job_id"""),
        {"ids": job_ids}).all())
    outbox: dict[str, dict] = defaultdict(dict)  # job id -> {batch_id in the payload: events}
    for job_id, batch_id, n in conn.execute(text("""
            SELECT payload->>'job_id', payload->>'batch_id', count(*) FROM outbox
             WHERE payload->>'job_id' = ANY(:ids) AND type NOT IN ('JOB_SUCCEEDED', 'JOB_FAILED')
             GROUP BY 1, 2"""), {"ids": job_ids}):
        outbox[job_id][batch_id] = n
    history: dict[str, dict] = defaultdict(dict)  # job id -> {batch_id of the history rows: rows}
    for job_id, batch_id, n in conn.execute(text("""
            SELECT e.job_id::text, h.batch_id::text, count(*) FROM history_events h
              JOIN journal_entries e ON e.id = h.transaction_id
             WHERE e.job_id = ANY(CAST(:ids AS uuid[])) GROUP BY 1, 2"""), {"ids": job_ids}):
        history[job_id][batch_id] = n

    for c in cmds:
        if c.unexpected:
            violation(c, f"unexpected answer {c.unexpected}")
        if c.gave_up:
            res.gave_up += 1
        if not c.job_ids:
            continue
        res.batches += 1
        res.batch_commands += len(c.items)
        res.max_retry_s = max(res.max_retry_s, c.retry_seconds)
        facts = db.get(c.key)
        if len(c.job_ids) > 1 or facts is None or facts.batch_id not in c.job_ids:
            res.doubled += 1
            violation(c, f"retries saw batches {sorted(c.job_ids)}, the key names {facts and facts.batch_id}")
            if facts is None:
                res.accepted += len(c.batch_job_ids or [])
                res.lost += len(c.batch_job_ids or [])
                continue
        if facts.atomic is None:
            violation(c, "its batches row is missing")
        elif (facts.atomic, facts.size) != (c.atomic, len(c.items)):
            violation(c, f"recorded as atomic={facts.atomic} size={facts.size}, sent {c.atomic} / {len(c.items)}")
        db_ids = [j["id"] for j in facts.jobs]
        if db_ids != c.batch_job_ids:
            violation(c, f"the answer listed {len(c.batch_job_ids or [])} jobs, the database has {len(db_ids)} "
                         f"(or another order)")
        expected_indexes = [0] if c.atomic else list(range(len(c.items)))
        if [j["batch_index"] for j in facts.jobs] != expected_indexes:
            violation(c, f"job indexes {[j['batch_index'] for j in facts.jobs][:10]}…, expected {len(expected_indexes)}")

        # The batch resource (GET /batches/{id}): complete, its counts those of its jobs.
        resource = workload.get(f"/batches/{facts.batch_id}")
        counts = dict.fromkeys(("queued", "running", "succeeded", "failed", "canceled"), 0)
        for j in facts.jobs:
            counts[j["status"]] += 1
        if resource is None:
            violation(c, "GET /batches/{id} did not answer")
        elif (resource["status"], resource["counts"], resource["job_ids"], resource["size"], resource["atomic"]) != (
                "completed", counts, db_ids, len(c.items), c.atomic):
            violation(c, f"resource {resource['status']} {resource['counts']} size {resource['size']} "
                         f"disagrees with its jobs {counts} (size {len(c.items)})")

        for j in facts.jobs:
            res.accepted += 1
            res.batch_jobs_redelivered += j["lost_deliveries"] > 0
            if j["status"] not in ("succeeded", "failed"):
                res.lost += 1
                violation(c, f"job {j['id']} is {j['status']}")
                continue
            res.final += 1
            n_entries, items = entries.get(j["id"], (0, []))
            n_postings = postings.get(j["id"], 0)
            events = outbox.get(j["id"], {})
            rows = history.get(j["id"], {})
            size = len(c.items) if c.atomic else 1
            if j["status"] == "succeeded":
                if c.atomic:
                    res.atomic_ok += 1
                if (n_entries, items, n_postings) != (size, list(range(size)), 2 * size):
                    res.doubled += n_entries > size
                    violation(c, f"succeeded job {j['id']} has {n_entries} journal entries (items {items[:5]}) and "
                                 f"{n_postings} postings, expected {size} and {2 * size}")
                if events != {facts.batch_id: size}:
                    violation(c, f"job {j['id']}: outbox events by batch_id {events}, expected {size} with the batch id")
                if not rows or set(rows) != {facts.batch_id}:
                    violation(c, f"job {j['id']}: history rows by batch_id {rows}, expected only the batch id")
                if c.atomic and len((j["result"] or {}).get("transactions", [])) != size:
                    violation(c, f"atomic job {j['id']} result lists "
                                 f"{len((j['result'] or {}).get('transactions', []))} transactions, not {size}")
                doomed = [i for i, item in enumerate(c.items) if item.must_fail]
                if (doomed if c.atomic else c.items[j["batch_index"]].must_fail):
                    violation(c, f"job {j['id']} succeeded with a command asking more than the bank holds")
                continue
            error = j["error"] or {}
            code = error.get("code")
            if n_entries or n_postings or events:
                violation(c, f"failed job {j['id']} ({code}) left {n_entries} journal entries, {n_postings} "
                             f"postings, {sum(events.values())} events")
            if code not in BUSINESS_CODES:
                res.bad_failures += 1
                violation(c, f"job {j['id']} failed {code} (attempts {j['attempts']}, lost deliveries "
                             f"{j['lost_deliveries']})")
                continue
            res.failed_business += 1
            if c.atomic:
                res.atomic_failed += 1
                index = error.get("index")
                doomed = [i for i, item in enumerate(c.items) if item.must_fail]
                if not isinstance(index, int) or not 0 <= index < size or (doomed and index > doomed[0]):
                    violation(c, f"atomic job {j['id']} failed {code} at index {index!r} "
                                 f"(size {size}, first doomed command {doomed[:1]})")
            else:
                res.batch_jobs_failed += 1


def _compact(faults: list[str]) -> list[str]:
    out: list[str] = []
    for f in faults:
        if out and out[-1].split(" ×")[0] == f:
            n = int(out[-1].split("×")[1]) + 1 if "×" in out[-1] else 2
            out[-1] = f"{f} ×{n}"
        else:
            out.append(f)
    return out


# --------------------------------------------------------------------------- running


def run_scenario(stack: Stack, workload: Workload, faults: Faults, sc: Scenario, bound: float,
                 webhooks: Webhooks | None = None) -> Result:
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    bar = tqdm(total=len(sc.faults) + 2, desc=f"{sc.name:<18}", unit="step", file=sys.stderr, leave=True,
               disable=not tty, bar_format="{desc} {n_fmt}/{total_fmt} |{bar:20}| {elapsed} {postfix}")
    last = [""]

    def note(text: str) -> None:
        if tty:
            bar.set_postfix_str(f"{len(workload.of(sc.name))} commands; {text}", refresh=True)
        elif text != last[0]:  # a log line per change of state when nobody watches a terminal
            last[0] = text
            log(f"{sc.name}: {len(workload.of(sc.name))} commands; {text}")

    aimed, hit = faults.aimed, faults.hit
    workload.start(sc.name, sc.load)
    try:
        note("load")
        time.sleep(sc.warmup_s)
        for i, fault in enumerate(sc.faults):
            if i:
                time.sleep(sc.gap_s)
            note(fault)
            with tqdm.external_write_mode(file=sys.stderr):
                faults.run(fault)
            bar.update(1)
        note("load")
        time.sleep(sc.tail_s)
    finally:
        note("stopping clients")
        workload.stop()
    bar.update(1)
    for name in stack.check_alive():
        with tqdm.external_write_mode(file=sys.stderr):
            log(f"{name} exited ({stack.procs[name].returncode}); see {stack.logs / (name + '.log')}")
    recovery, state, ledger = wait_quiescent(bound, note, webhooks)
    note(f"{state}; checking")
    with tqdm.external_write_mode(file=sys.stderr):
        res = check(workload, sc, recovery, state, bound, webhooks)
    res.ledger_recovery_s = ledger
    if webhooks is not None:
        webhooks.remove_extra_endpoints()  # a scenario's second endpoint ends with it
    res.aimed, res.hit = faults.aimed - aimed, faults.hit - hit
    for name in stack.check_alive():
        res.violations.append(f"process {name} is not running (exit {stack.procs[name].returncode})")
    note("ok" if res.ok else f"{len(res.violations)} VIOLATIONS")
    bar.update(1)
    bar.close()
    return res


def _recovery(r: Result) -> str:
    """Until quiescent; and until the ledger's pipeline was, when the webhooks took a second more."""
    text = "-" if r.recovery_s is None else f"{r.recovery_s:.1f}"
    if r.ledger_recovery_s is not None and (r.recovery_s is None or r.recovery_s - r.ledger_recovery_s >= 1):
        text += f" (ledger {r.ledger_recovery_s:.1f})"
    return text


def _webhook_counts(f: Figures) -> str:
    text = f"{f.expected}/{f.received}/{f.duplicates}"
    return text + (f" ({f.redelivered} after the kill)" if f.redelivered else "")


def _webhook_latency(f: Figures) -> str:
    return "-" if f.p50_s is None else f"{f.p50_s:.1f}/{f.p99_s:.1f}"


def print_table(results: list[Result], header: str) -> str:
    """Render the result table (rich) to the terminal; return it as Markdown for the reliability notes."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=header)
    cols = ["scenario", "faults", "accepted", "final", "lost", "doubled", "failed (business)", "gave up",
            "max client retry (s)", "recovery (s)", "batches (cmds)", "atomic ok/failed", "batch jobs failed",
            "faults mid-chunk", "batch jobs redelivered", "webhooks exp/recv/dup", "webhook p50/p99 (s)", "result"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("scenario", "faults", "result") else "right",
                         overflow="fold")
    rows = []
    for r in results:
        row = [r.scenario, r.faults, str(r.accepted), str(r.final), str(r.lost), str(r.doubled),
               str(r.failed_business), str(r.gave_up), f"{r.max_retry_s:.1f}",
               _recovery(r), f"{r.batches} ({r.batch_commands})",
               f"{r.atomic_ok}/{r.atomic_failed}", str(r.batch_jobs_failed),
               f"{r.hit}/{r.aimed}" if r.aimed else "-", str(r.batch_jobs_redelivered), _webhook_counts(r.webhooks),
               _webhook_latency(r.webhooks), "pass" if r.ok else "FAIL"]
        rows.append(row)
        table.add_row(*row, style=None if r.ok else "red")
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 260).print(table)
    md = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    md += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(md)


def batch_load(profile: str, independent_rate: float | None, atomic_rate: float | None) -> BatchLoad:
    """The batches among the clients' requests: lighter in the short profile."""
    if profile == "short":
        load = BatchLoad(independent_rate=0.4, independent_size=(10, 60), atomic_rate=0.5, burst=(2, 200))
    else:
        load = BatchLoad()
    return BatchLoad(
        independent_rate=load.independent_rate if independent_rate is None else independent_rate,
        independent_size=load.independent_size,
        atomic_rate=load.atomic_rate if atomic_rate is None else atomic_rate,
        atomic_size=load.atomic_size, atomic_doomed=load.atomic_doomed, burst=load.burst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="the short profile that runs in make test")
    parser.add_argument("--scenarios", default=None, help="comma-separated scenario names of the profile")
    parser.add_argument("--state-dir", default=str(REPO / ".dev" / "chaos"))
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--rate", type=float, default=60.0, help="commands per second, all clients together")
    parser.add_argument("--batch-rate", type=float, default=None,
                        help="independent batches per second among those requests (full 0.6, short 0.4; 0: none)")
    parser.add_argument("--atomic-rate", type=float, default=None,
                        help="atomic batches per second among those requests (full 0.6, short 0.5; 0: none)")
    parser.add_argument("--kafka-pause", type=float, default=30.0, help="seconds the broker is stopped")
    parser.add_argument("--bound", type=float, default=90.0,
                        help="seconds after the load stops within which the system must be quiescent")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", default=None, help="write the results here as JSON")
    parser.add_argument("--markdown", default=None, help="write the result table here as Markdown")
    args = parser.parse_args(argv)

    seed = args.seed if args.seed is not None else random.randrange(2**31)
    rng = random.Random(seed)
    profile = "short" if args.short else "full"
    plan = scenarios(profile, rng, args.kafka_pause)
    if args.scenarios:
        wanted = args.scenarios.split(",")
        unknown = set(wanted) - {s.name for s in plan}
        if unknown:
            parser.error(f"unknown scenarios {sorted(unknown)}; the {profile} profile has {[s.name for s in plan]}")
        plan = [s for s in plan if s.name in wanted]
    log(f"profile {profile}, seed {seed}, scenarios {[s.name for s in plan]}")

    stack = Stack(Path(args.state_dir).resolve())
    results: list[Result] = []
    webhooks: Webhooks | None = None
    t0 = time.monotonic()
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def stop_on_signal(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in old:
        signal.signal(sig, stop_on_signal)
    try:
        stack.start()
        load = batch_load(profile, args.batch_rate, args.atomic_rate)
        workload = Workload(stack.api_url, threads=args.threads, rate=args.rate, seed=rng.randrange(2**32),
                            batches=load)
        webhooks = Webhooks(stack.api_url, TOKEN, TENANT, pick_port, log)
        webhooks.start()  # before the setup: every notification of the run is expected
        workload.setup()
        log(f"{WALLETS} wallets funded with {money(INITIAL_CENTS)} each; batches per second: "
            f"{load.independent_rate} independent ({load.independent_size[0]}-{load.independent_size[1]} commands), "
            f"{load.atomic_rate} atomic ({load.atomic_size[0]}-{load.atomic_size[1]})")
        bursting = load.independent_rate > 0 or load.atomic_rate > 0
        faults = Faults(stack, rng, args.kafka_pause, burst=workload.burst if bursting else None,
                        webhooks=webhooks)
        for sc in plan:
            results.append(run_scenario(stack, workload, faults, sc, args.bound, webhooks))
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        elapsed = time.monotonic() - t0
        stack.stop()
        if webhooks is not None:
            webhooks.stop()
    header = (f"chaos {profile} profile, seed {seed}, {elapsed:.0f} s, "
              f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()} "
              f"({os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB)")
    md = print_table(results, header)
    for r in results:
        for v in r.violations[:60]:
            print(f"VIOLATION [{r.scenario}] {v}")
        if len(r.violations) > 60:  # a broken batch path yields one per job; --json keeps them all
            print(f"VIOLATION [{r.scenario}] … and {len(r.violations) - 60} more")
    if args.markdown:
        Path(args.markdown).write_text(f"{header}\n\n{md}\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "seed": seed, "elapsed_s": elapsed, "results": [
            {**{k: asdict(v) if is_dataclass(v) else v for k, v in r.__dict__.items()}, "ok": r.ok}
            for r in results]}, indent=2))
    ok = bool(results) and all(r.ok for r in results) and len(results) == len(plan)
    print("chaos: all invariants held" if ok else "chaos: VIOLATIONS (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
