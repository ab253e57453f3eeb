"""Fixtures of the history tests: relay, history workers and History API as real subprocesses.

They build on the root fixtures (`stack`, `processes`, `worker`, `client`): one
pipeline per session, on the session's topic (6 partitions) and database.
Tests that stop a part of it restore it before they end.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from app.adapters.db import engine
from scripts.devstack import _wait_tcp, ensure_topic, pick_port, tansu_bin
from tests.conftest import STATE_DIR, TENANT_A_KEY, ProcessGroup, wait_for

PARTITIONS = 6
CURRENT_GROUP: str | None = None  # the pipeline's consumer group once a test replaced the session's
HISTORY_COLUMNS = ("event_id, wallet_id, event_type, tenant_id, user_id, currency, amount, balance_after, "
                   "wallet_version, transaction_id, counterparty_wallet_id, request_id, occurred_at")


class Pipeline:
    """The read-side processes of one test session; each can be stopped and started again."""

    def __init__(self, group: ProcessGroup, env: dict):
        self.group, self.env = group, env
        self.relays: list[subprocess.Popen] = []
        self.history_workers: list[subprocess.Popen] = []
        self.api: subprocess.Popen | None = None
        self.api_url = ""
        self._n = 0
        self.log_names: dict[int, str] = {}
        self.group_id = env["KAFKA_GROUP_ID"]

    def _name(self, kind: str) -> str:
        self._n += 1
        name = f"{kind}-{self._n}"
        (STATE_DIR / f"{name}.log").unlink(missing_ok=True)  # logs are read by the tests: this run's only
        return name

    def start_relay(self, wait: bool = False, **env) -> subprocess.Popen:
        """A relay; with `wait`, return once it holds the relay lock (events are then published at once)."""
        name = self._name("relay")
        proc = self.group.start([sys.executable, "-m", "app.relay"], log_name=name, **env)
        self.log_names[proc.pid] = name
        self.relays.append(proc)
        if wait:
            wait_for(lambda: "this relay is active" in self.log_path(proc).read_text(errors="replace"),
                     timeout=30, what="the relay to take the lead")
        return proc

    def start_history_worker(self, wait: bool = False, module: str = "history.worker", **env) -> subprocess.Popen:
        """A history worker; `module` may name a fault entry point of tests.faults that runs it."""
        name = self._name("history-worker")
        env.setdefault("KAFKA_GROUP_ID", self.group_id)
        proc = self.group.start([sys.executable, "-m", module], log_name=name, **env)
        self.log_names[proc.pid] = name
        self.history_workers.append(proc)
        if wait:
            wait_for(lambda: group_assigned(self), timeout=30, what="the history workers to own every partition")
        return proc

    def restart_history_workers_in_a_new_group(self) -> None:
        """Two fresh workers in a fresh group (reading from the start: every row is already there).

        tansu takes minutes to let new members into a group whose members all left
        (it waits out the old generation), while a fresh group forms in ~3 s.
        """
        global CURRENT_GROUP
        self.group_id = CURRENT_GROUP = f"history-{uuid.uuid4().hex[:6]}"
        self.start_history_worker()
        self.start_history_worker(wait=True)
        wait_caught_up()

    def log_path(self, proc: subprocess.Popen) -> Path:
        return STATE_DIR / f"{self.log_names[proc.pid]}.log"

    def stop(self, proc: subprocess.Popen, sig=None) -> None:
        self.group.stop(proc, sig)
        for procs in (self.relays, self.history_workers):
            if proc in procs:
                procs.remove(proc)

    def start_api(self) -> None:
        port = pick_port()
        self.api = self.group.start(
            [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}",
             "--workers", "1", "history.api:create_app()"], log_name="history-api")
        self.api_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get_status(self.api_url + "/health") == 200, timeout=20, what="the History API")

    def get(self, path: str, token: str | None = TENANT_A_KEY) -> tuple[int, dict]:
        """GET on the running History API with an API key: (status, JSON body)."""
        return _get(self.api_url + path, token)


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _get_status(url: str) -> int | None:
    try:
        return _get(url)[0]
    except OSError:
        return None


@pytest.fixture(scope="session")
def pipeline(stack, processes, worker):
    """Celery worker + one relay + two history workers (a consumer group) + History API (gunicorn)."""
    ensure_topic(stack["KAFKA_BOOTSTRAP_SERVERS"], stack["KAFKA_TOPIC"], PARTITIONS)
    p = Pipeline(processes, stack)
    p.start_relay(wait=True)
    p.start_history_worker()
    p.start_history_worker()
    p.start_api()
    wait_for(lambda: group_assigned(p), timeout=30, what="the history consumer group to own every partition")
    return p


def group_assigned(pipeline: Pipeline) -> bool:
    """True once the running history workers together own every partition (from their logs)."""
    owned = []
    for proc in pipeline.history_workers:
        log = (STATE_DIR / f"{pipeline.log_names[proc.pid]}.log").read_text(errors="replace")
        assignments = re.findall(r"assigned partitions: \[([0-9,]*)\]", log)
        if not assignments:
            return False
        owned += [int(p) for p in assignments[-1].split(",") if p]
    return sorted(owned) == list(range(PARTITIONS))


def wallet_client():
    """A Wallet API test client of its own (for threads and module fixtures), with the session's key if any."""
    import tests.conftest as root
    from app.api import create_app

    app = create_app({"TESTING": True})
    return root.api_client(app) if hasattr(root, "api_client") else app.test_client()


def history_rows(*wallet_ids: str) -> list[dict]:
    """The read model's rows (without recorded_at), of some wallets or all, in a stable order."""
    where = "WHERE wallet_id = ANY(CAST(:ids AS uuid[]))" if wallet_ids else ""
    with engine().connect() as conn:
        return [dict(r) for r in conn.execute(text(
            f"SELECT {HISTORY_COLUMNS} FROM history_events {where} ORDER BY wallet_id, wallet_version, event_id"),
            {"ids": list(wallet_ids)}).mappings()]


def outbox_backlog() -> int:
    with engine().connect() as conn:
        return conn.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar()


def wait_caught_up(group_id: str | None = None, timeout: float = 30) -> None:
    """Wait until every outbox row is published and the group has committed up to the end of the topic."""
    from history.ops import consumer_lag

    group_id = group_id or CURRENT_GROUP

    def caught_up():
        if outbox_backlog():
            return False
        lag = consumer_lag(group_id)
        return lag is not None and sum(p.lag for p in lag) == 0

    try:
        wait_for(caught_up, timeout=timeout, what="the history pipeline to catch up", interval=0.1)
    except AssertionError as e:
        raise AssertionError(f"{e}: outbox backlog {outbox_backlog()}, lag {consumer_lag(group_id)}") from None


@contextlib.contextmanager
def paused(*procs: subprocess.Popen):
    """SIGSTOP the processes (each its own process group) for the block, SIGCONT them after.

    They keep their state, sockets and pending work; they just send nothing meanwhile.
    """
    for proc in procs:
        os.killpg(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGCONT)


class Tansu:
    """A separate Kafka-compatible broker this test can stop and start (memory storage: a restart empties it).

    A restarted one has no topic until start() creates it again, and tansu acks records
    sent to a topic it does not have: they count in the end offsets, yet no fetch ever
    returns them. So no producer may reach it between its start and the topic's creation:
    pause the running ones around start() (see `paused`).
    """

    def __init__(self, topic: str):
        self.port = pick_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.topic = topic
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        listener = f"tcp://127.0.0.1:{self.port}"
        log = open(Path(STATE_DIR) / "tansu-extra.log", "ab")
        self.proc = subprocess.Popen([tansu_bin(), "broker", "--listener-url", listener,
                                      "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        assert _wait_tcp("127.0.0.1", self.port, time.monotonic() + 15, self.proc), "tansu did not start"
        # Fewer partitions: a client asked for the topic first and tansu created it with its default count.
        assert ensure_topic(self.bootstrap, self.topic, PARTITIONS) == PARTITIONS, "the topic was auto-created"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


# A short retry schedule for the tests' webhook workers: attempts 1 s, 1 s and 2 s apart, then failed.
TEST_WEBHOOK_SCHEDULE = "1,1,2"


WEBHOOK_WORKER_NAME = "webhooks-test@%h"


def start_webhook_worker(pipeline) -> subprocess.Popen:
    """The webhook worker of the tests (threads, queue `webhooks`), always under the same node name; more
    threads than an endpoint may use at once (services.webhooks.MAIN_SHARE)."""
    return pipeline.group.start(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", "webhooks", "-P", "threads", "-c", "12",
         "-n", WEBHOOK_WORKER_NAME, "-l", "info", "--without-mingle", "--without-gossip"],
        log_name="webhook-worker", WEBHOOK_RETRY_SCHEDULE=TEST_WEBHOOK_SCHEDULE)


@pytest.fixture(scope="session")
def webhook_processes(pipeline):
    """The webhook dispatcher (its own consumer group) and a webhook worker (threads, queue `webhooks`)."""
    group = f"webhooks-test-{uuid.uuid4().hex[:6]}"
    dispatcher = pipeline.group.start([sys.executable, "-m", "app.webhook_dispatcher"], log_name="webhook-dispatcher",
                                      WEBHOOK_GROUP_ID=group)
    worker = start_webhook_worker(pipeline)
    failing_worker = pipeline.group.start(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", "webhooks-failing", "-P", "threads", "-c", "4",
         "-n", "webhooks-failing-test@%h", "-l", "info", "--without-mingle", "--without-gossip"],
        log_name="webhook-failing-worker", WEBHOOK_RETRY_SCHEDULE=TEST_WEBHOOK_SCHEDULE)
    wait_for(_dispatcher_assigned, timeout=60, what="the webhook dispatcher to own every partition")
    yield {"dispatcher": dispatcher, "worker": worker, "failing_worker": failing_worker, "group": group}


def _dispatcher_assigned() -> bool:
    log = STATE_DIR / "webhook-dispatcher.log"
    return log.exists() and "assigned partitions: [0,1,2,3,4,5]" in log.read_text(errors="replace")
