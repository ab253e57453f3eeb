"""Webhooks end to end: real API, relay, Kafka, dispatcher, Celery webhook worker and a real HTTP receiver.

Signatures are checked with `standardwebhooks`, the Standard Webhooks reference
implementation, as a receiver would.
"""
from __future__ import annotations

import json
import signal
import time
import uuid

import pytest
from standardwebhooks import Webhook

from app.adapters.db import engine
from app.services import webhooks
from tests.conftest import api_client, wait_for
from tests.history.conftest import start_webhook_worker
from tests.helpers import create_wallet, run
from tests.webhook_receiver import start_receiver

pytestmark = pytest.mark.usefixtures("webhook_processes")


@pytest.fixture()
def receiver():
    r = start_receiver()
    yield r
    r.close()
    with engine().connect() as conn:  # the next test's notifications go to its own endpoints only
        endpoint_ids = conn.exec_driver_sql("SELECT id FROM webhook_endpoints ORDER BY id").scalars().all()
    for endpoint_id in endpoint_ids:  # one at a time, as the API deletes them (no lock order to get wrong)
        with engine().begin() as conn:
            conn.exec_driver_sql("DELETE FROM webhook_endpoints WHERE id = %(id)s", {"id": endpoint_id})


def register(client, url: str, events=("*",)) -> dict:
    r = client.post("/webhook-endpoints", json={"url": url, "events": list(events), "description": "tests"})
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def verified(secret: str, received) -> dict:
    """The payload, after `standardwebhooks` checked its signature (raises otherwise)."""
    return Webhook(secret).verify(received.body, received.headers)


def test_job_and_wallet_notifications_arrive_signed_with_the_standard(client, receiver):
    endpoint = register(client, receiver.url)
    assert endpoint["secret"].startswith("whsec_") and endpoint["status"] == "enabled"
    assert "secret" not in client.get(f"/webhook-endpoints/{endpoint['id']}").get_json()
    wallet_id = create_wallet(client, user_id="hooked")
    job = run(client, f"/wallets/{wallet_id}/fund", {"amount": "12.50", "reference": "hook-1"})
    # Events of earlier tests may still be on their way: this wallet's are picked by id.
    def mine(kind):
        return [r for r in receiver.of_type(kind) if json.loads(r.body)["data"].get("wallet_id") == wallet_id]

    wait_for(lambda: mine("wallet.funded") and [r for r in receiver.of_type("job.succeeded")
                                                if json.loads(r.body)["data"]["id"] == job["id"]],
             timeout=30, what="the fund's notifications")
    funded = verified(endpoint["secret"], mine("wallet.funded")[0])
    assert funded["data"]["wallet_id"] == wallet_id and funded["data"]["amount"] == "12.50"
    assert funded["data"]["event_type"] == "WALLET_FUNDED" and funded["data"]["wallet_version"] == 2
    succeeded = [verified(endpoint["secret"], r) for r in receiver.of_type("job.succeeded")]
    assert any(p["data"] == job for p in succeeded), "data is the job resource as GET /jobs/{id} shows it"
    r = mine("wallet.funded")[0]
    assert r.headers["webhook-id"].startswith("msg_") and r.headers["webhook-timestamp"].isdigit()
    def succeeded_types():
        # Earlier tests' events may reach this endpoint too: read every delivery, not the newest 50.
        items = client.get(f"/webhook-endpoints/{endpoint['id']}/deliveries?status=succeeded&limit=500"
                           ).get_json()["items"]
        return items if {"wallet.funded", "job.succeeded", "wallet.created"} <= {d["event_type"] for d in items} else None

    deliveries = wait_for(succeeded_types, timeout=30, what="the deliveries to be recorded")
    assert all(d["attempts"] == 1 and d["last_status_code"] == 200 for d in deliveries)


def test_a_failed_attempt_is_retried_with_the_same_webhook_id_and_every_attempt_is_recorded(client, receiver):
    endpoint = register(client, receiver.url, events=["wallet.created"])
    receiver.default_status = 500  # until told otherwise, then 200 after two failures
    wallet_id = create_wallet(client, user_id="retried")
    wait_for(lambda: len(receiver.of_type("wallet.created")) >= 2, timeout=30, what="a retry")
    receiver.default_status = 200
    wait_for(lambda: _delivery(client, endpoint, "succeeded"), timeout=30, what="the retry to succeed")
    ids = {r.headers["webhook-id"] for r in receiver.of_type("wallet.created")}
    assert len(ids) == 1, "every attempt carries the same webhook-id"
    delivery = _delivery(client, endpoint, "succeeded")
    assert delivery["attempts"] >= 3 and delivery["last_status_code"] == 200
    attempts = client.get(f"/webhook-deliveries/{delivery['id']}/attempts").get_json()["items"]
    codes = [a["status_code"] for a in attempts]
    assert codes[-1] == 200 and set(codes[:-1]) == {500} and [a["attempt"] for a in attempts] == list(range(1, len(codes) + 1))
    assert all(a["error"] == "HTTP 500" for a in attempts[:-1]) and attempts[-1]["error"] is None
    other = api_client(client.application, "test-key-tenant-b")
    assert other.get(f"/webhook-deliveries/{delivery['id']}/attempts").status_code == 404
    assert all(verified(endpoint["secret"], r)["data"]["wallet_id"] == wallet_id
               for r in receiver.of_type("wallet.created"))


def test_a_delivery_that_never_succeeds_fails_after_the_schedule_and_can_be_redelivered(client, receiver):
    endpoint = register(client, receiver.url, events=["wallet.created"])
    receiver.default_status = 503
    create_wallet(client, user_id="given-up")
    delivery = wait_for(lambda: _delivery(client, endpoint, "failed"), timeout=40, what="the schedule to run out")
    assert delivery["attempts"] == 4 and delivery["next_attempt_at"] is None  # TEST_WEBHOOK_SCHEDULE: 3 retries
    receiver.default_status = 200
    before = len(receiver.received)
    r = client.post(f"/webhook-deliveries/{delivery['id']}/retry")
    assert r.status_code == 202 and r.get_json()["status"] == "pending"
    wait_for(lambda: _delivery(client, endpoint, "succeeded"), timeout=30, what="the manual redelivery")
    assert receiver.received[before].headers["webhook-id"] == delivery["webhook_id"]


def test_after_a_rotation_both_secrets_sign_for_24_hours(client, receiver):
    endpoint = register(client, receiver.url, events=["wallet.created"])
    rotated = client.post(f"/webhook-endpoints/{endpoint['id']}/rotate-secret").get_json()
    assert rotated["secret"] != endpoint["secret"] and rotated["id"] == endpoint["id"]
    create_wallet(client, user_id="rotated")
    wait_for(lambda: receiver.of_type("wallet.created"), timeout=30, what="the notification")
    received = receiver.of_type("wallet.created")[0]
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    assert verified(endpoint["secret"], received) == verified(rotated["secret"], received)


def test_endpoints_and_notifications_are_tenant_scoped(client, receiver):
    other = api_client(client.application, "test-key-tenant-b")
    theirs = register(other, receiver.url)
    mine = register(client, receiver.url.replace("/hooks", "/mine"), events=["wallet.created"])
    assert client.get(f"/webhook-endpoints/{theirs['id']}").status_code == 404
    assert client.delete(f"/webhook-endpoints/{theirs['id']}").status_code == 404
    assert theirs["id"] not in {e["id"] for e in client.get("/webhook-endpoints").get_json()["items"]}
    wallet_id = create_wallet(client, user_id="isolated")
    wait_for(lambda: [r for r in receiver.received if r.path == "/mine"], timeout=30, what="my notification")
    for r in receiver.received:
        if json.loads(r.body)["data"].get("wallet_id") == wallet_id:
            assert r.path == "/mine", "tenant B's endpoint got tenant A's event"
    assert client.delete(f"/webhook-endpoints/{mine['id']}").status_code == 204
    assert client.get(f"/webhook-endpoints/{mine['id']}").status_code == 404


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://[fd00:ec2::254]/",
                                 "ftp://example.com/x", "http://user:pw@127.0.0.1/x", "http://0.0.0.0/",
                                 "https://" + "a" * 2048 + ".com/", "not a url", "http://no-such-host.invalid/"])
def test_urls_that_may_not_be_called_are_refused(client, url):
    r = client.post("/webhook-endpoints", json={"url": url, "events": ["*"]})
    assert r.status_code == 422 and r.get_json()["code"] in ("WEBHOOK_URL_NOT_ALLOWED", "VALIDATION_FAILED"), url


def test_loopback_and_private_addresses_are_refused_unless_allowed(client, monkeypatch):
    from app.config import settings

    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE_URLS", "0")
    settings.cache_clear()
    try:
        for url in ("http://127.0.0.1:9/x", "http://10.1.2.3/x", "http://localhost/x", "http://[::1]/x"):
            r = client.post("/webhook-endpoints", json={"url": url, "events": ["*"]})
            assert r.status_code == 422 and r.get_json()["code"] == "WEBHOOK_URL_NOT_ALLOWED", url
    finally:
        monkeypatch.undo()
        settings.cache_clear()


def test_unknown_notification_types_are_refused(client, receiver):
    r = client.post("/webhook-endpoints", json={"url": receiver.url, "events": ["wallet.nope"]})
    assert r.status_code == 422 and "events" in r.get_json()["errors"]


def _delivery(client, endpoint: dict, status: str) -> dict | None:
    items = client.get(f"/webhook-endpoints/{endpoint['id']}/deliveries?status={status}").get_json()["items"]
    return items[0] if items else None


def test_a_hanging_receiver_does_not_delay_another(client, receiver):
    slow = start_receiver()
    slow.hang_s = 12  # longer than the 10 s attempt timeout: every attempt fails
    try:
        hanging = register(client, slow.url, events=["wallet.created"])
        create_wallet(client, user_id=f"hang-{uuid.uuid4().hex[:4]}")
        wait_for(lambda: _attempted(client, hanging), timeout=30, what="the first attempt to time out")
        endpoint = register(client, receiver.url, events=["wallet.created"])
        started = time.time()
        for i in range(12):  # more than the test's webhook threads: the hanging endpoint's go to webhooks-failing
            create_wallet(client, user_id=f"fast-{i}-{uuid.uuid4().hex[:4]}")
        wait_for(lambda: len(receiver.of_type("wallet.created")) >= 12, timeout=20, what="the fast receiver")
        assert max(r.at for r in receiver.of_type("wallet.created")) - started < 6, "a slow endpoint held others back"
        assert _delivery(client, endpoint, "succeeded")
        # The hanging endpoint's attempts run on the worker of the failing endpoints (4 threads in the tests).
        assert 1 <= _leased() <= 4
    finally:
        slow.close()


def test_a_busy_fast_endpoint_waits_for_its_share_on_the_healthy_worker(client, receiver):
    receiver.hang_s = 1.0  # slower than the notifications come, faster than "slow" (SLOW_ATTEMPT_S)
    endpoint = register(client, receiver.url, events=["wallet.created"])
    for i in range(24):  # submitted at once, not one after the other's outcome
        assert client.post("/wallets", json={"user_id": f"busy-{i}-{uuid.uuid4().hex[:4]}", "currency": "USD"}) \
            .status_code == 202
    wait_for(lambda: len(receiver.of_type("wallet.created")) >= 24, timeout=30, what="every notification")
    # Its share at once, all of it when busy; two leases committed at the same instant may each see one place
    # left (the count is not serialized per endpoint: a lock would serialize every attempt of a busy endpoint).
    assert webhooks.MAIN_SHARE <= receiver.max_in_flight <= webhooks.MAIN_SHARE + 2
    with engine().connect() as conn:
        workers = conn.exec_driver_sql("SELECT DISTINCT split_part(leased_by, '@', 1) FROM webhook_deliveries"
                                       " WHERE endpoint_id = %(e)s::uuid", {"e": endpoint["id"]}).scalars().all()
    assert workers == ["webhooks-test"], "a busy endpoint is not failing: none of its attempts went to the other queue"


def _attempted(client, endpoint: dict) -> bool:
    items = client.get(f"/webhook-endpoints/{endpoint['id']}/deliveries").get_json()["items"]
    return any(d["attempts"] >= 1 for d in items)


def _leased() -> int:
    with engine().connect() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM webhook_deliveries WHERE lease_until > now()").scalar()


def _lease_holder(endpoint: dict) -> str | None:
    with engine().connect() as conn:
        return conn.exec_driver_sql(
            "SELECT leased_by FROM webhook_deliveries WHERE endpoint_id = %(e)s::uuid AND lease_until > now()",
            {"e": endpoint["id"]}).scalar()


def test_a_killed_worker_started_again_redelivers_its_interrupted_attempt_at_once(client, receiver, pipeline,
                                                                                 webhook_processes):
    receiver.hang_s = 4  # the attempt is in flight (well within the 10 s timeout) when the worker dies
    endpoint = register(client, receiver.url, events=["wallet.created"])
    create_wallet(client, user_id=f"kill-{uuid.uuid4().hex[:4]}")
    wait_for(lambda: _lease_holder(endpoint), timeout=30, what="an attempt in flight")
    assert _lease_holder(endpoint).startswith("webhooks-test@")
    killed = time.time()
    pipeline.group.stop(webhook_processes["worker"], signal.SIGKILL)
    receiver.hang_s = 0
    webhook_processes["worker"] = start_webhook_worker(pipeline)  # same node name, as a supervisor restarts it
    # Well before its lease (60 s) runs out: the new run frees what the dead one held and publishes it again.
    wait_for(lambda: _delivery(client, endpoint, "succeeded"), timeout=25, what="the interrupted delivery")
    assert time.time() - killed < 25
    delivered = _delivery(client, endpoint, "succeeded")
    # The receiver records a request once it answered: the interrupted one (into a closed socket) 4 s after it came.
    wait_for(lambda: receiver.ids().count(delivered["webhook_id"]) == 2, timeout=10,
             what="the interrupted request and the redelivery, with the same webhook-id")
    assert delivered["attempts"] == 1  # the interrupted attempt left no record: it is attempted again as the first


def test_metadata_travels_through_kafka_the_history_and_both_kinds_of_webhook(client, receiver, pipeline, stack):
    from tests.history.test_event_schema import _all_events

    endpoint = register(client, receiver.url, events=["wallet.funded", "job.succeeded"])
    wallet_id = create_wallet(client, user_id=f"md-{uuid.uuid4().hex[:4]}")
    md = {"order_id": f"A-{uuid.uuid4().hex[:6]}", "channel": "web"}
    job = run(client, f"/wallets/{wallet_id}/fund", {"amount": "5.00", "metadata": md})
    assert job["status"] == "succeeded" and job["metadata"] == md
    transaction_id = job["result"]["id"]

    def notified() -> dict | None:
        found = {}
        for r in receiver.received:
            payload = verified(endpoint["secret"], r)
            data = payload["data"]
            if payload["type"] == "job.succeeded" and data["id"] == job["id"]:
                found["job"] = data
            if payload["type"] == "wallet.funded" and data.get("transaction_id") == transaction_id:
                found["wallet"] = data
        return found if len(found) == 2 else None

    wait_for(notified, timeout=30, what="both notifications of the fund")
    assert notified()["job"]["metadata"] == md and notified()["wallet"]["metadata"] == md

    def in_history() -> list | None:
        status, history = pipeline.get(f"/wallets/{wallet_id}/history")
        rows = [e["metadata"] for e in history.get("items", []) if e.get("transaction_id") == transaction_id]
        return rows if status == 200 and rows else None

    wait_for(in_history, timeout=30, what="the fund in the History API")
    assert in_history() == [md]
    events = _all_events(stack["KAFKA_BOOTSTRAP_SERVERS"], stack["KAFKA_TOPIC"], json_only=True)
    assert [e["metadata"] for e in events if e.get("transaction_id") == transaction_id] == [md]
    assert [e["metadata"] for e in events if e.get("event_type") == "JOB_SUCCEEDED" and e.get("job_id") == job["id"]] \
        == [md]
