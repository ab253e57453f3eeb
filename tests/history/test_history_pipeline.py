"""Commands through the Wallet API reach the History API: right rows, both sides, within a second."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from app.adapters.db import engine
from conftest import history_rows, wallet_client
from tests.conftest import wait_for
from tests.helpers import create_wallet, run, submit, wait_job


def _history(pipeline, wallet_id: str, **query) -> list[dict]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    status, body = pipeline.get(f"/wallets/{wallet_id}/history?{qs}")
    assert status == 200, body
    return body["items"]


def _visible_within(pipeline, wallet_id: str, count: int, since: float, budget: float = 1.0) -> float:
    """Seconds from `since` until the History API shows `count` events of the wallet; fails past the budget."""
    wait_for(lambda: len(_history(pipeline, wallet_id)) >= count, timeout=budget + 5,
             what=f"{count} history events of {wallet_id}", interval=0.01)
    took = time.monotonic() - since
    assert took < budget, f"history of {wallet_id} took {took:.2f}s to show {count} events"
    return took


def test_history_shows_both_sides_of_every_transfer_within_a_second(pipeline, client):
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    a = create_wallet(client, alice)
    b = create_wallet(client, bob)
    jobs = {}
    for name, path, body in [("fund", f"/wallets/{a}/fund", {"amount": "100.00"}),
                             ("a_to_b", f"/wallets/{a}/transfer", {"to_wallet_id": b, "amount": "30.00"}),
                             ("b_to_a", f"/wallets/{b}/transfer", {"to_wallet_id": a, "amount": "5.50"})]:
        request_id = f"req-{name}-{uuid.uuid4().hex[:8]}"
        job = wait_job(client, submit(client, path, body, **{"X-Request-ID": request_id})["id"])
        assert job["status"] == "succeeded", job
        done = time.monotonic()
        jobs[name] = (job, request_id)
        expected_a = {"fund": 2, "a_to_b": 3, "b_to_a": 4}[name]
        _visible_within(pipeline, a, expected_a, since=done)
        if name != "fund":
            _visible_within(pipeline, b, {"a_to_b": 2, "b_to_a": 3}[name], since=done)

    def shape(e):
        return (e["event_type"], e["wallet_version"], e["amount"], e["balance_after"], e["counterparty_wallet_id"],
                e["transaction_id"], e["request_id"], e["user_id"])

    fund, a_to_b, b_to_a = (jobs[k][0]["result"]["id"] for k in ("fund", "a_to_b", "b_to_a"))
    rid = {k: v[1] for k, v in jobs.items()}
    history_a = _history(pipeline, a)
    assert [shape(e) for e in history_a[:3]] == [
        ("TRANSFER_IN", 4, "5.50", "75.50", b, b_to_a, rid["b_to_a"], alice),
        ("TRANSFER_OUT", 3, "30.00", "70.00", b, a_to_b, rid["a_to_b"], alice),
        ("WALLET_FUNDED", 2, "100.00", "100.00", None, fund, rid["fund"], alice),
    ]
    assert (history_a[3]["event_type"], history_a[3]["wallet_version"], history_a[3]["balance_after"]) == (
        "WALLET_CREATED", 1, "0.00")
    assert [shape(e) for e in _history(pipeline, b)[:2]] == [
        ("TRANSFER_OUT", 3, "5.50", "24.50", a, b_to_a, rid["b_to_a"], bob),
        ("TRANSFER_IN", 2, "30.00", "30.00", a, a_to_b, rid["a_to_b"], bob),
    ]
    # The two sides of a transfer are one event on Kafka, two rows here, each with its own version.
    both = [e for e in history_a + _history(pipeline, b) if e["transaction_id"] == a_to_b]
    assert sorted(e["event_type"] for e in both) == ["TRANSFER_IN", "TRANSFER_OUT"]
    assert len({e["event_id"] for e in both}) == 1
    for e in history_a:
        assert set(e) == {"event_id", "event_type", "wallet_id", "user_id", "amount", "balance_after",
                          "wallet_version", "transaction_id", "counterparty_wallet_id", "request_id", "batch_id", "metadata",
                          "reference",
                          "occurred_at"}
        assert e["batch_id"] is None and e["metadata"] == {}
        assert e["occurred_at"].endswith("Z")

    status, activity = pipeline.get(f"/users/{bob}/activity")
    assert status == 200
    assert [e["event_type"] for e in activity["items"]] == ["TRANSFER_OUT", "TRANSFER_IN", "WALLET_CREATED"]

    # Every row was written within a second of the event (history lag at this low load).
    with engine().connect() as conn:
        lags = conn.execute(text("SELECT recorded_at - occurred_at AS lag, event_type, wallet_version, occurred_at"
                                 " FROM history_events WHERE wallet_id IN (CAST(:a AS uuid), CAST(:b AS uuid))"
                                 " ORDER BY lag DESC"), {"a": a, "b": b}).all()
    assert lags[0].lag < timedelta(seconds=1), lags  # the slowest first, with the rest for context


@pytest.fixture(scope="module")
def busy_user(pipeline):
    """A user with two wallets and 12 events, all in history."""
    client = wallet_client()
    user = f"carol-{uuid.uuid4().hex[:6]}"
    w1, w2 = create_wallet(client, user), create_wallet(client, user)
    for i in range(4):
        assert run(client, f"/wallets/{w1}/fund", {"amount": f"{i + 1}.00"})["status"] == "succeeded"
    for _ in range(3):
        assert run(client, f"/wallets/{w1}/transfer", {"to_wallet_id": w2, "amount": "1.00"})["status"] == "succeeded"
    wait_for(lambda: len(history_rows(w1, w2)) == 12, timeout=10, what="12 history rows")
    return user, w1, w2


@pytest.fixture()
def history_client(stack):
    from history.api import create_app
    from tests.conftest import api_client

    return api_client(create_app({"TESTING": True}))


def test_wallet_history_pages_with_a_cursor_newest_first(busy_user, history_client):
    _, w1, _ = busy_user
    seen, cursor = [], None
    while True:
        r = history_client.get(f"/wallets/{w1}/history?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert r.status_code == 200
        seen += r.json["items"]
        cursor = r.json["next_cursor"]
        if cursor is None:
            break
    assert [e["wallet_version"] for e in seen] == list(range(8, 0, -1))


def test_user_activity_pages_across_wallets_by_time(busy_user, history_client):
    user, w1, w2 = busy_user
    seen, cursor = [], None
    while True:
        r = history_client.get(f"/users/{user}/activity?limit=5" + (f"&cursor={cursor}" if cursor else ""))
        seen += r.json["items"]
        cursor = r.json["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 12 and {e["wallet_id"] for e in seen} == {w1, w2}
    assert len({(e["event_id"], e["wallet_id"]) for e in seen}) == 12
    keys = [(e["occurred_at"], e["event_id"], e["wallet_id"]) for e in seen]
    assert keys == sorted(keys, reverse=True)


def test_type_and_time_filters(busy_user, history_client):
    user, w1, w2 = busy_user
    r = history_client.get(f"/wallets/{w1}/history?type=TRANSFER_OUT,WALLET_CREATED")
    assert [e["event_type"] for e in r.json["items"]] == ["TRANSFER_OUT"] * 3 + ["WALLET_CREATED"]
    r = history_client.get(f"/users/{user}/activity?type=TRANSFER_IN&type=WALLET_FUNDED")
    assert sorted({e["event_type"] for e in r.json["items"]}) == ["TRANSFER_IN", "WALLET_FUNDED"]
    items = history_client.get(f"/wallets/{w1}/history").json["items"]
    pivot = items[3]["occurred_at"]  # the 5th version
    newer = history_client.get(f"/wallets/{w1}/history", query_string={"from": pivot}).json["items"]
    older = history_client.get(f"/wallets/{w1}/history", query_string={"to": pivot}).json["items"]
    assert [e["wallet_version"] for e in newer] == [8, 7, 6, 5]
    assert [e["wallet_version"] for e in older] == [4, 3, 2, 1]
    future = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    assert history_client.get(f"/wallets/{w1}/history", query_string={"from": future}).json["items"] == []


def test_unknown_wallet_or_user_reads_as_empty(history_client):
    for path in (f"/wallets/{uuid.uuid4()}/history", "/users/nobody-here/activity"):
        r = history_client.get(path)
        assert r.status_code == 200 and r.json == {"items": [], "next_cursor": None}
    # A path id that is not a UUID can never name a wallet: 404, as on the Wallet API.
    r = history_client.get("/wallets/not-a-uuid/history")
    assert r.status_code == 404 and r.json["code"] == "WALLET_NOT_FOUND"
    # A user id no wallet can have: 422.
    r = history_client.get("/users/" + "u" * 101 + "/activity")
    assert r.status_code == 422 and "user_id" in r.json["errors"]


@pytest.mark.parametrize("query, field", [
    ("limit=0", "limit"), ("limit=501", "limit"), ("limit=ten", "limit"), ("cursor=%%%", "cursor"),
    ("cursor=eyJ4IjoxfQ", "cursor"), ("type=NOT_A_TYPE", "type"), ("type=", "type"),
    ("type=WALLET_CREATED,%20WALLET_FUNDED", "type"), ("type=WALLET_CREATED,", "type"), ("from=yesterday", "from"),
    ("to=2026-01-01T00:00:00", "to"), ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
])
def test_malformed_query_is_422_problem(history_client, query, field):
    for path in (f"/wallets/{uuid.uuid4()}/history", "/users/someone/activity"):
        r = history_client.get(f"{path}?{query}")
        assert r.status_code == 422, (path, query, r.json)
        assert r.content_type == "application/problem+json"
        assert r.json["code"] == "VALIDATION_FAILED" and field in r.json["errors"]


def test_health(history_client):
    assert history_client.get("/health").json == {"status": "ok"}


def test_commands_of_a_batch_reach_history_each_as_its_own_events_carrying_the_batch_id(pipeline, client):
    a, b = create_wallet(client, "hist-batch-a"), create_wallet(client, "hist-batch-b")
    r = client.post("/batches", headers={"Prefer": "wait=10"}, json={"commands": [
        {"type": "fund", "wallet_id": a, "amount": "5.00"},
        {"type": "transfer", "wallet_id": a, "to_wallet_id": b, "amount": "2.00"}]})
    assert r.status_code == 200 and r.get_json()["counts"]["succeeded"] == 2, r.get_json()
    batch_id = r.get_json()["id"]
    wait_for(lambda: len(_history(pipeline, a)) == 3 and len(_history(pipeline, b)) == 2, timeout=20,
             what="the batch's events in history")
    rows = _history(pipeline, a) + _history(pipeline, b)
    assert sorted((e["event_type"], e["batch_id"]) for e in rows if e["event_type"] != "WALLET_CREATED") == [
        ("TRANSFER_IN", batch_id), ("TRANSFER_OUT", batch_id), ("WALLET_FUNDED", batch_id)]


def test_history_filters_by_reference_and_metadata_pairs_across_pages(pipeline, client):
    from urllib.parse import quote

    user = f"search-{uuid.uuid4().hex[:6]}"
    a = create_wallet(client, user)
    ref = f"inv-{uuid.uuid4().hex[:6]}"
    for body in ({"amount": "10.00", "reference": ref, "metadata": {"order": "1"}},
                 {"amount": "11.00", "reference": "other", "metadata": {"order": "2"}},
                 {"amount": "12.00", "metadata": {"order": "1", "channel": "web"}},
                 {"amount": "13.00", "reference": ref, "metadata": {"order": "1", "channel": "web"}}):
        assert run(client, f"/wallets/{a}/fund", body)["status"] == "succeeded"
    wait_for(lambda: len(_history(pipeline, a)) >= 5, timeout=30, what="the wallet's five events")

    def amounts(path: str, **query) -> list[str]:
        """Every page of the list, one item per page: the cursor must keep the filter's order."""
        out, cursor = [], None
        while True:
            qs = "&".join([f"{quote(k)}={quote(v)}" for k, v in query.items()] + ["limit=1"]
                          + ([f"cursor={cursor}"] if cursor else []))
            status, body = pipeline.get(f"{path}?{qs}")
            assert status == 200, body
            out += [e["amount"] for e in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                return out

    for path in (f"/wallets/{a}/history", f"/users/{user}/activity"):
        assert amounts(path, reference=ref) == ["13.00", "10.00"]
        assert amounts(path, **{"metadata[order]": "1"}) == ["13.00", "12.00", "10.00"]
        assert amounts(path, **{"metadata[order]": "1", "metadata[channel]": "web"}) == ["13.00", "12.00"]
        assert amounts(path, **{"metadata[order]": "1", "metadata[channel]": "web", "reference": ref}) == ["13.00"]
        assert amounts(path, **{"metadata[order]": "3"}) == []
    status, body = pipeline.get(f"/wallets/{a}/history?reference={ref}")
    assert {e["reference"] for e in body["items"]} == {ref}
    for bad in ("metadata=x", "metadata[has%20space]=x", "metadata[k]=1&metadata[k]=2", "reference=",
                "metadata[]=x"):
        status, body = pipeline.get(f"/wallets/{a}/history?{bad}")
        assert status == 422 and body["code"] == "VALIDATION_FAILED", (bad, body)
