"""A broker that stops answering for 30 s under load: every event reaches the history, no process restarted.

Issue 14: after such a stall kafka-python 3.0.12's idempotent producer never sent
again and the relay hung in flush() for good. Here the broker (a tansu of the
test's own, so the session's is left alone) is SIGSTOPped while commands keep
succeeding, then resumed; the relay and the history worker must carry on by
themselves, and /ready of the History API must have said so in the meantime.
"""
from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid

from conftest import Tansu, history_rows, outbox_backlog, wait_caught_up, wallet_client
from app.services import readiness
from history import ops
from tests.conftest import wait_for
from tests.helpers import funded_wallet, submit

STALL_S = 30
RECOVERY_BOUND_S = 60


def _load(client, wallets: list[str], stop: threading.Event, submitted: list) -> None:
    rng = random.Random(14)
    while not stop.is_set():
        source, target = rng.sample(wallets, 2)
        submitted.append(submit(client, f"/wallets/{source}/transfer", {"to_wallet_id": target, "amount": "0.01"}))
        time.sleep(0.02)


def _history_ready_with_short_thresholds(monkeypatch) -> tuple[int, dict]:
    """GET /ready of a History API whose stall thresholds are 10 s."""
    from app.config import settings
    from history.api import create_app

    with monkeypatch.context() as m:
        for name in ("PIPELINE_STALL_AFTER_S", "RELAY_STALL_TIMEOUT_S", "HISTORY_STALL_TIMEOUT_S"):
            m.setenv(name, "10")
        settings.cache_clear()
        try:
            r = create_app({"TESTING": True}).test_client().get("/ready")
            return r.status_code, r.get_json()
        finally:
            settings.cache_clear()

def test_a_30s_broker_stall_under_load_heals_without_a_restart(pipeline, stack, client, monkeypatch):
    wait_caught_up()  # what other tests left is in the history: compare() below then sees only this test
    broker = Tansu(stack["KAFKA_TOPIC"])
    broker.start()
    for relay in list(pipeline.relays):
        pipeline.stop(relay)
    env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_GROUP_ID": f"stall-{uuid.uuid4().hex[:6]}",
           "RELAY_STALL_TIMEOUT_S": "20", "HISTORY_STALL_TIMEOUT_S": "20"}
    relay = pipeline.start_relay(wait=True, **env)
    consumer = pipeline.start_history_worker(**env)
    stop = threading.Event()
    loader = None
    try:
        wallets = [funded_wallet(client, "100.00", user_id=f"stall-{i}") for i in range(8)]
        wait_for(lambda: len(history_rows(*wallets)) == 16, timeout=30, what="the wallets in the history")

        submitted: list = []
        loader = threading.Thread(target=_load, args=(wallet_client(), wallets, stop, submitted), daemon=True)
        loader.start()
        time.sleep(2)
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(STALL_S - 5)
            during = _history_ready_with_short_thresholds(monkeypatch)
            relay_beat = [p for p in readiness.pipeline_processes()["relay"] if p["active"]]
            time.sleep(5)
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        resumed = time.monotonic()
        time.sleep(2)
        stop.set()
        loader.join(10)
        assert len(submitted) > 200  # commands kept being accepted during the stall

        wait_for(lambda: outbox_backlog() == 0 and not ops.compare(), timeout=RECOVERY_BOUND_S,
                 what="every event of the stall in the history", interval=0.5)
        recovery = time.monotonic() - resumed
        print(f"history equal to the ledger {recovery:.1f} s after the broker resumed")
        assert relay.poll() is None and consumer.poll() is None, "the relay and the history worker kept running"
        relay_log = pipeline.log_path(relay).read_text()
        assert "kafka unavailable" in relay_log  # the stall was seen, and lived through
        assert "exiting with status" not in relay_log

        # While the broker was stopped, the relay's heartbeat showed the stall and /ready of the History API
        # named it (with thresholds below the stall's length).
        assert relay_beat and relay_beat[0]["pending"] > 0 and relay_beat[0]["stalled_s"] >= 15, relay_beat
        status, body = during
        assert status == 503 and "relay" in body["down"], body
        assert body["pipeline"]["relay"]["oldest_unpublished_age_s"] >= 15, body
        wait_for(lambda: pipeline.get("/ready")[0] == 200, timeout=20, what="the History API ready again")
    finally:
        stop.set()
        if loader is not None:
            loader.join(10)
        pipeline.stop(relay)
        pipeline.stop(consumer)
        broker.stop()
        pipeline.start_relay(wait=True)  # the next module measures lag from its first event
