"""Transaction search: GET /transactions (tenant-wide) and the filters of GET /wallets/{id}/transactions.

One small ledger is made through the real stack, then every answer is checked
against the same filter applied by hand to the wallets' full lists. With
filters, a wallet's list is the search narrowed to the wallet (newest first by
created_at, then id); without, it keeps the wallet's version order.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import urlencode

import pytest

from tests.conftest import api_client
from tests.helpers import create_wallet, funded_wallet, run
from tests.integration.test_api_contract import assert_problem

pytestmark = pytest.mark.usefixtures("worker")

TENANT_B_KEY = "test-key-tenant-b"


def ok(job: dict) -> dict:
    assert job["status"] == "succeeded", job
    return job["result"]


@pytest.fixture(scope="module")
def ledger(wallet_app, worker):
    """Wallets a, b, c of one user, and every kind of transaction between them, with tagged references."""
    client = api_client(wallet_app)
    tag = uuid.uuid4().hex[:8]
    user = f"search-{tag}"
    a = funded_wallet(client, "100.00", user_id=user)
    b = funded_wallet(client, "50.00", user_id=user)
    c = create_wallet(client, user_id=user)
    rent = f"rent-{tag}"
    first = ok(run(client, f"/wallets/{a}/transfer", {"to_wallet_id": b, "amount": "10.00", "reference": rent}))
    ok(run(client, f"/wallets/{b}/transfer", {"to_wallet_id": a, "amount": "5.50", "reference": rent}))
    ok(run(client, f"/wallets/{a}/withdraw", {"amount": "1.25"}))
    hold = ok(run(client, f"/wallets/{a}/holds", {"amount": "3.00"}))
    ok(run(client, f"/holds/{hold['id']}/capture", {"to_wallet_id": c}))
    ok(run(client, f"/transactions/{first['id']}/reverse", {"amount": "2.00", "reason": f"refund-{tag}"}))
    for cents in range(1, 8):  # enough for a few pages of two
        ok(run(client, f"/wallets/{a}/transfer", {"to_wallet_id": c, "amount": f"{cents}.00",
                                                  "reference": f"page-{tag}"}))
    ok(run(client, f"/wallets/{b}/fund", {"amount": "0.01", "reference": f"tiny-{tag}"}))
    lists = {w: client.get(f"/wallets/{w}/transactions?limit=500").get_json()["items"] for w in (a, b, c)}
    return {"a": a, "b": b, "c": c, "tag": tag, "rent": rent, "lists": lists}


def pages(client, path: str, **params) -> list[list[dict]]:
    """Every page of a list, following next_cursor."""
    out, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = client.get(f"{path}?{urlencode(query)}")
        assert r.status_code == 200, r.get_json()
        body = r.get_json()
        out.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return out
        assert len(out) < 100, "the pages never end"


def ids(items: list[dict]) -> list[str]:
    return [t["id"] for t in items]


def newest_first(items: list[dict]) -> list[dict]:
    """The tenant-wide order: created_at, then id, both descending."""
    return sorted(items, key=lambda t: (t["created_at"], uuid.UUID(t["id"]).hex), reverse=True)


def involving(ledger, *wallets: str) -> list[dict]:
    """Every transaction of those wallets, once, newest first."""
    seen = {t["id"]: t for w in wallets for t in ledger["lists"][w]}
    return newest_first(list(seen.values()))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# ---------------------------------------------------------------------------------------------- GET /transactions

def test_wallet_id_finds_every_transaction_the_wallet_takes_part_in(client, ledger):
    a, c = ledger["a"], ledger["c"]
    found = client.get(f"/transactions?wallet_id={a}&limit=500").get_json()
    assert found["next_cursor"] is None
    assert ids(found["items"]) == ids(involving(ledger, a))
    assert len(found["items"]) == 13  # fund, 2 transfers with b, withdrawal, capture, reversal, 7 transfers to c
    received = client.get(f"/transactions?wallet_id={c}").get_json()["items"]
    assert ids(received) == ids(involving(ledger, c))
    assert all(t["counterparty_wallet_id"] == c for t in received)  # c only ever receives
    assert {t["type"] for t in received} == {"CAPTURE", "TRANSFER"}


@pytest.mark.parametrize("query, keep", [
    ({"type": "REVERSAL"}, lambda t: t["type"] == "REVERSAL"),
    ({"type": "CAPTURE,WITHDRAWAL"}, lambda t: t["type"] in ("CAPTURE", "WITHDRAWAL")),
    ({"type": "TRANSFER,TRANSFER"}, lambda t: t["type"] == "TRANSFER"),
    ({"min_amount": "5.5"}, lambda t: Decimal(t["amount"]) >= Decimal("5.50")),
    ({"max_amount": "2"}, lambda t: Decimal(t["amount"]) <= 2),
    ({"min_amount": "3.00", "max_amount": "3.000"}, lambda t: Decimal(t["amount"]) == 3),
    ({"type": "TRANSFER", "max_amount": "5.50"}, lambda t: t["type"] == "TRANSFER" and Decimal(t["amount"]) <= 5.5),
], ids=lambda v: urlencode(v) if isinstance(v, dict) else "")
def test_each_filter_and_their_combinations_within_a_wallet(client, ledger, query, keep):
    a = ledger["a"]
    expected = [t for t in involving(ledger, a) if keep(t)]
    assert expected, "the ledger should have a match"
    found = client.get(f"/transactions?{urlencode({'wallet_id': a, 'limit': 500, **query})}").get_json()["items"]
    assert ids(found) == ids(expected)
    per_wallet = client.get(f"/wallets/{a}/transactions?{urlencode({'limit': 500, **query})}").get_json()["items"]
    assert per_wallet == found


def test_reference_is_an_exact_match_across_the_tenant(client, ledger):
    rent = ledger["rent"]
    found = client.get(f"/transactions?reference={rent}").get_json()["items"]
    assert ids(found) == ids([t for t in involving(ledger, ledger["a"], ledger["b"]) if t["reference"] == rent])
    assert len(found) == 2 and {t["wallet_id"] for t in found} == {ledger["a"], ledger["b"]}
    assert client.get(f"/transactions?reference={rent[:-1]}").get_json()["items"] == []
    assert client.get(f"/transactions?reference={rent.upper()}").get_json()["items"] == []
    refund = client.get(f"/transactions?reference=refund-{ledger['tag']}").get_json()["items"]
    assert [t["type"] for t in refund] == ["REVERSAL"]  # a reversal's reason is its reference
    both = client.get(f"/transactions?{urlencode({'reference': rent, 'wallet_id': ledger['c']})}").get_json()
    assert both["items"] == []


def test_from_is_inclusive_and_to_exclusive(client, ledger):
    a = ledger["a"]
    every = involving(ledger, a)
    middle = every[len(every) // 2]
    start, end = middle["created_at"], every[2]["created_at"]
    expected = [t for t in every if at(start) <= at(t["created_at"]) < at(end)]
    assert middle in expected and every[2] not in expected
    found = client.get(f"/transactions?{urlencode({'wallet_id': a, 'from': start, 'to': end})}").get_json()["items"]
    assert ids(found) == ids(expected)
    per_wallet = client.get(f"/wallets/{a}/transactions?{urlencode({'from': start, 'to': end})}").get_json()
    assert ids(per_wallet["items"]) == ids(expected)
    offset = at(start).astimezone(timezone(timedelta(hours=-3, minutes=-30))).isoformat()  # the same instant
    again = client.get(f"/transactions?{urlencode({'wallet_id': a, 'from': offset, 'to': end})}").get_json()
    assert ids(again["items"]) == ids(expected)
    assert client.get(f"/transactions?{urlencode({'wallet_id': a, 'from': end, 'to': end})}").get_json()[
        "items"] == []
    later = (at(every[0]["created_at"]) + timedelta(microseconds=1)).isoformat()
    assert client.get(f"/transactions?{urlencode({'wallet_id': a, 'from': later})}").get_json()["items"] == []


def test_cursor_pages_with_filters_are_complete_and_disjoint(client, ledger):
    a, tag = ledger["a"], ledger["tag"]
    transfers = [t for t in involving(ledger, a) if t["type"] == "TRANSFER"]
    got = pages(client, "/transactions", wallet_id=a, type="TRANSFER", limit=2)
    assert [len(p) for p in got] == [2, 2, 2, 2, 1]
    assert [t["id"] for p in got for t in p] == ids(transfers)
    page_refs = pages(client, "/transactions", reference=f"page-{tag}", min_amount="2", limit=3)
    assert [t["amount"] for p in page_refs for t in p] == ["7.00", "6.00", "5.00", "4.00", "3.00", "2.00"]
    own = pages(client, f"/wallets/{a}/transactions", type="TRANSFER", limit=2)
    assert [t["id"] for p in own for t in p] == ids(transfers)
    start = involving(ledger, a)[-3]["created_at"]
    window = pages(client, "/transactions", wallet_id=a, limit=4, **{"from": start})
    assert [t["id"] for p in window for t in p] == ids(involving(ledger, a)[:-2])


def test_without_filters_the_tenant_list_is_newest_first_and_pages_join_up(client, ledger):
    whole = client.get("/transactions?limit=12").get_json()
    assert whole["items"][0]["reference"] == f"tiny-{ledger['tag']}"  # the ledger's last transaction
    assert whole["items"] == newest_first(whole["items"])
    first = client.get("/transactions?limit=5").get_json()
    second = client.get(f"/transactions?limit=7&cursor={first['next_cursor']}").get_json()
    assert ids(first["items"] + second["items"]) == ids(whole["items"])
    assert all(t["created_at"] for t in whole["items"])


def test_a_wallet_list_without_filters_keeps_its_version_order_and_cursor(client, ledger):
    b = ledger["b"]
    plain = client.get(f"/wallets/{b}/transactions?limit=2").get_json()
    assert plain["next_cursor"].isdigit()  # the version of the page's last transaction
    rest = client.get(f"/wallets/{b}/transactions?limit=500&cursor={plain['next_cursor']}").get_json()["items"]
    assert ids(plain["items"] + rest) == ids(ledger["lists"][b])
    assert sorted(ids(ledger["lists"][b])) == sorted(ids(involving(ledger, b)))
    filtered = client.get(f"/wallets/{b}/transactions?type=FUND,TRANSFER,REVERSAL&limit=2").get_json()
    assert "." in filtered["next_cursor"]  # created_at.id, as GET /transactions
    for query, cursor in ((f"type=FUND&cursor={plain['next_cursor']}", "without"),
                          (f"cursor={filtered['next_cursor']}", "with")):
        body = assert_problem(client.get(f"/wallets/{b}/transactions?{query}"), 422, "VALIDATION_FAILED")
        assert list(body["errors"]) == ["cursor"] and f"list {cursor} filters" in body["errors"]["cursor"][0]


# ------------------------------------------------------------------------------------------------------ tenants

def test_another_tenant_sees_none_of_the_transactions(wallet_app, client, ledger):
    other = api_client(wallet_app, TENANT_B_KEY)
    a, rent = ledger["a"], ledger["rent"]
    mine = set(ids(involving(ledger, a, ledger["b"], ledger["c"])))
    assert other.get(f"/transactions?reference={rent}").get_json()["items"] == []
    assert other.get(f"/transactions?wallet_id={a}").get_json()["items"] == []
    seen = [t["id"] for p in pages(other, "/transactions", limit=500) for t in p]
    assert not mine & set(seen)
    assert_problem(other.get(f"/wallets/{a}/transactions?type=FUND"), 404, "WALLET_NOT_FOUND")
    assert len(client.get(f"/transactions?reference={rent}").get_json()["items"]) == 2  # the owner does
    admin = api_client(wallet_app, "test-key-admin")  # an admin key sees every tenant
    assert len(admin.get(f"/transactions?reference={rent}").get_json()["items"]) == 2


# --------------------------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("query, field", [
    ("type=fund", "type"), ("type=FUND,", "type"), ("type=FUND%2C%2CTRANSFER", "type"), ("type=", "type"),
    ("type=FUND%20TRANSFER", "type"), ("type=HOLD", "type"),
    ("reference=a%00b", "reference"), ("reference=" + "r" * 256, "reference"),
    ("min_amount=0", "min_amount"), ("min_amount=-1", "min_amount"), ("min_amount=1.2345", "min_amount"),
    ("max_amount=1e3", "max_amount"), ("max_amount=abc", "max_amount"), ("max_amount=", "max_amount"),
    ("min_amount=10&max_amount=9.99", "min_amount"),
    ("from=yesterday", "from"), ("from=2026-01-01T00:00:00", "from"), ("to=2026-01-01", "to"),
    ("from=2026-01-02T00:00:00Z&to=2026-01-01T23:59:59Z", "from"),
    ("wallet_id=not-a-uuid", "wallet_id"), ("cursor=garbage", "cursor"), ("cursor=12", "cursor"),
    ("limit=0", "limit"), ("limit=501", "limit"), ("color=red", "color"),
])
def test_invalid_search_parameters_are_422_keyed_by_parameter(client, query, field):
    body = assert_problem(client.get(f"/transactions?{query}"), 422, "VALIDATION_FAILED")
    assert list(body["errors"]) == [field], body


@pytest.mark.parametrize("query, field", [
    ("wallet_id=00000000-0000-0000-0000-000000000000", "wallet_id"),  # the path names the wallet
    (f"cursor=1.{'0' * 32}", "cursor"), ("type=FUND&cursor=12", "cursor"), ("cursor=1.2", "cursor"),
    ("metadata[tag]=x&cursor=0", "cursor"),  # a metadata filter alone is a filter: the cursor must be a search's
    ("metadata[tag]=x&metadata[tag]=y", "metadata"), ("metadata=x", "metadata"),
    ("type=TRANSFER;FUND", "type"), ("min_amount=.5", "min_amount"),
    ("from=2026-01-02T01:00:00%2B01:00&to=2026-01-01T23:59:59Z", "from"),
])
def test_invalid_wallet_list_parameters_are_422_keyed_by_parameter(client, ledger, query, field):
    body = assert_problem(client.get(f"/wallets/{ledger['a']}/transactions?{query}"), 422, "VALIDATION_FAILED")
    assert list(body["errors"]) == [field], body


def test_a_metadata_filter_pages_both_lists_with_their_cursors(client):
    from tests.helpers import funded_wallet, run

    w = funded_wallet(client, "100.00", user_id="md-search")
    tag = f"t-{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        assert run(client, f"/wallets/{w}/withdraw", {"amount": "1.00", "metadata": {"tag": tag}})["status"] \
            == "succeeded"
    run(client, f"/wallets/{w}/withdraw", {"amount": "1.00", "metadata": {"tag": "other"}})
    for path in (f"/wallets/{w}/transactions", "/transactions"):
        seen, cursor = [], None
        while True:
            r = client.get(f"{path}?metadata[tag]={tag}&limit=1" + (f"&cursor={cursor}" if cursor else ""))
            assert r.status_code == 200, r.get_json()
            seen += [t["metadata"]["tag"] for t in r.get_json()["items"]]
            cursor = r.get_json()["next_cursor"]
            if cursor is None:
                break
        assert seen == [tag] * 3
    version_cursor = client.get(f"/wallets/{w}/transactions?limit=1").get_json()["next_cursor"]
    r = client.get(f"/wallets/{w}/transactions?metadata[tag]={tag}&cursor={version_cursor}")
    assert r.status_code == 422
    assert r.get_json()["errors"] == {"cursor": ["is a cursor of the list without filters; it cannot continue "
                                                 "this one: ask for the first page again"]}
    r = client.get("/transactions?metadata[bad key]=x")
    assert r.status_code == 422 and "metadata" in r.get_json()["errors"]
