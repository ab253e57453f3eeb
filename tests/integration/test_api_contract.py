"""The Wallet API's contract: validation, errors, jobs, idempotency, waiting."""
import uuid

import pytest
from sqlalchemy import text

from app.adapters.db import engine
from tests.conftest import api_client
from tests.helpers import balance, create_wallet, funded_wallet, run, submit, wait_job

pytestmark = pytest.mark.usefixtures("worker")


def count_jobs() -> int:
    with engine().connect() as conn:
        return conn.execute(text("SELECT count(*) FROM jobs")).scalar()


def assert_problem(response, status: int, code: str):
    assert response.status_code == status, response.get_json()
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.get_json()
    assert body["code"] == code and body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


def test_create_fund_and_transfer_end_to_end(client):
    alice = funded_wallet(client, "100.00", user_id="alice")
    bob = create_wallet(client, user_id="bob")
    job = run(client, f"/wallets/{alice}/transfer", {"to_wallet_id": bob, "amount": "30.50", "reference": "rent"})
    assert job["status"] == "succeeded"
    assert job["result"]["type"] == "TRANSFER"
    assert job["result"]["balance_after"] == "69.50"
    assert job["result"]["counterparty_balance_after"] == "30.50"
    assert job["result"]["reference"] == "rent"
    assert balance(client, alice) == "69.50" and balance(client, bob) == "30.50"
    wallet = client.get(f"/wallets/{alice}").get_json()
    assert wallet["status"] == "active" and wallet["version"] == 3 and wallet["user_id"] == "alice"


def test_a_command_answers_202_with_location_and_retry_after(client):
    wallet_id = create_wallet(client)
    r = client.post(f"/wallets/{wallet_id}/fund", json={"amount": "1.00"})
    assert r.status_code == 202
    job = r.get_json()
    assert r.headers["Location"] == f"/jobs/{job['id']}"
    assert job["status"] in ("queued", "running", "succeeded")
    assert job["type"] == "fund" and job["request_id"] == r.headers["X-Request-ID"]
    assert wait_job(client, job["id"])["status"] == "succeeded"


def test_prefer_wait_answers_200_with_the_final_job(client):
    wallet_id = create_wallet(client)
    r = client.post(f"/wallets/{wallet_id}/fund", json={"amount": "2.00"}, headers={"Prefer": "wait=10"})
    assert r.status_code == 200
    assert r.headers["Preference-Applied"] == "wait=10"
    assert r.get_json()["status"] == "succeeded"
    assert "Retry-After" not in r.headers


def test_request_id_is_echoed_and_kept_on_the_job(client):
    r = client.post("/wallets", json={"user_id": "trace"}, headers={"X-Request-ID": "req-abc-123"})
    assert r.headers["X-Request-ID"] == "req-abc-123"
    assert r.get_json()["request_id"] == "req-abc-123"


def test_business_rejection_fails_the_job_with_its_code_and_changes_nothing(client):
    a = funded_wallet(client, "5.00")
    b = create_wallet(client)
    job = run(client, f"/wallets/{a}/transfer", {"to_wallet_id": b, "amount": "5.01"})
    assert job["status"] == "failed"
    assert job["error"]["code"] == "INSUFFICIENT_FUNDS" and job["error"]["message"]
    assert job["result"] is None
    assert balance(client, a) == "5.00" and balance(client, b) == "0.00"


def test_transfer_across_currencies_fails_currency_mismatch(client):
    usd = funded_wallet(client, "5.00")
    eur = create_wallet(client, currency="EUR")
    job = run(client, f"/wallets/{usd}/transfer", {"to_wallet_id": eur, "amount": "1.00"})
    assert job["status"] == "failed" and job["error"]["code"] == "CURRENCY_MISMATCH"


@pytest.mark.parametrize("currency, amount, expected", [("JPY", "500", "500"), ("KWD", "1.234", "1.234"),
                                                         ("GBP", "7", "7.00")])
def test_amounts_have_exactly_the_currency_minor_units(client, currency, amount, expected):
    wallet_id = funded_wallet(client, amount, currency=currency)
    assert balance(client, wallet_id) == expected


@pytest.mark.parametrize("amount", ["-1.00", "0", "0.00", "abc", 10, 10.5, "1.001", "1e2", " 1", None, "", "NaN"])
def test_bad_amounts_are_422_and_create_no_job(client, amount):
    wallet_id = funded_wallet(client, "10.00")
    before = count_jobs()
    r = client.post(f"/wallets/{wallet_id}/fund", json={"amount": amount})
    body = assert_problem(r, 422, "VALIDATION_FAILED")
    assert "amount" in body["errors"]
    if isinstance(amount, (int, float)):
        assert "string" in body["errors"]["amount"][0]
    assert count_jobs() == before
    assert balance(client, wallet_id) == "10.00"


@pytest.mark.parametrize("path, body", [("fund", {"amount": "1.00", "reference": "a\u0000b"}),
                                        ("freeze", {"reason": "\u0000"}), ("fund", {"amount": "1", "reference": "\ud800"})])
def test_text_postgresql_cannot_store_is_422_not_500(client, path, body):
    wallet_id = create_wallet(client)
    before = count_jobs()
    body = assert_problem(client.post(f"/wallets/{wallet_id}/{path}", json=body), 422, "VALIDATION_FAILED")
    assert set(body["errors"]) <= {"reference", "reason"} and body["errors"]
    assert count_jobs() == before


def test_too_many_decimals_for_the_wallets_currency_is_422(client):
    jpy = create_wallet(client, currency="JPY")
    assert_problem(client.post(f"/wallets/{jpy}/fund", json={"amount": "1.5"}), 422, "VALIDATION_FAILED")


def test_unknown_wallet_is_404_and_creates_no_job(client):
    before = count_jobs()
    assert_problem(client.post(f"/wallets/{uuid.uuid4()}/fund", json={"amount": "1.00"}), 404, "WALLET_NOT_FOUND")
    assert_problem(client.post("/wallets/not-a-uuid/fund", json={"amount": "1.00"}), 404, "WALLET_NOT_FOUND")
    assert_problem(client.get(f"/wallets/{uuid.uuid4()}"), 404, "WALLET_NOT_FOUND")
    a = create_wallet(client)
    before = count_jobs()
    assert_problem(client.post(f"/wallets/{a}/transfer", json={"to_wallet_id": str(uuid.uuid4()), "amount": "1"}),
                   404, "WALLET_NOT_FOUND")
    assert count_jobs() == before


def test_transfer_to_itself_is_422(client):
    a = funded_wallet(client, "10.00")
    before = count_jobs()
    body = assert_problem(client.post(f"/wallets/{a}/transfer", json={"to_wallet_id": a, "amount": "1"}),
                          422, "VALIDATION_FAILED")
    assert "to_wallet_id" in body["errors"]
    assert count_jobs() == before and balance(client, a) == "10.00"


def test_malformed_json_is_400_and_schema_failures_are_422(client):
    before = count_jobs()
    assert_problem(client.post("/wallets", data="{not json", content_type="application/json"), 400, "MALFORMED_JSON")
    assert_problem(client.post("/wallets", json=["user_id"]), 422, "VALIDATION_FAILED")
    assert_problem(client.post("/wallets", json={}), 422, "VALIDATION_FAILED")
    assert_problem(client.post("/wallets", json={"user_id": ""}), 422, "VALIDATION_FAILED")
    assert_problem(client.post("/wallets", json={"user_id": "x" * 101}), 422, "VALIDATION_FAILED")
    assert_problem(client.post("/wallets", json={"user_id": "a", "currency": "XXX"}), 422, "VALIDATION_FAILED")
    assert_problem(client.post("/wallets", json={"user_id": "a", "extra": 1}), 422, "VALIDATION_FAILED")
    assert count_jobs() == before


def test_unknown_job_and_route_are_404_problems(client):
    assert_problem(client.get(f"/jobs/{uuid.uuid4()}"), 404, "JOB_NOT_FOUND")
    assert_problem(client.get("/jobs/nope"), 404, "JOB_NOT_FOUND")
    assert_problem(client.get("/nowhere"), 404, "NOT_FOUND")
    assert_problem(client.delete("/wallets"), 405, "METHOD_NOT_ALLOWED")
    assert client.delete("/wallets").headers["Allow"] == "OPTIONS, POST"
    assert client.put("/batches/x").headers["Allow"] == "GET, HEAD, OPTIONS"


def test_same_idempotency_key_and_body_returns_the_same_job_executed_once(client):
    wallet_id = create_wallet(client)
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = client.post(f"/wallets/{wallet_id}/fund", json={"amount": "10.00"}, headers=key)
    assert first.status_code == 202
    second = client.post(f"/wallets/{wallet_id}/fund", json={"amount": "10.00"}, headers=key)
    assert second.status_code == 200
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.get_json()["id"] == first.get_json()["id"]
    wait_job(client, first.get_json()["id"])
    third = client.post(f"/wallets/{wallet_id}/fund", json={"amount": "10.00"}, headers=key)
    assert third.get_json()["id"] == first.get_json()["id"] and third.get_json()["status"] == "succeeded"
    assert balance(client, wallet_id) == "10.00"


def test_same_idempotency_key_with_another_body_is_422(client):
    wallet_id = create_wallet(client)
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    submit(client, f"/wallets/{wallet_id}/fund", {"amount": "10.00"}, **key)
    other = create_wallet(client)
    before = count_jobs()
    assert_problem(client.post(f"/wallets/{wallet_id}/fund", json={"amount": "11.00"}, headers=key),
                   422, "IDEMPOTENCY_KEY_REUSED")
    assert_problem(client.post(f"/wallets/{other}/fund", json={"amount": "10.00"}, headers=key),
                   422, "IDEMPOTENCY_KEY_REUSED")
    assert count_jobs() == before


def test_concurrent_requests_with_one_idempotency_key_make_one_job(client, wallet_app):
    from concurrent.futures import ThreadPoolExecutor

    wallet_id = create_wallet(client)
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}

    def post(_):
        return api_client(wallet_app).post(f"/wallets/{wallet_id}/fund", json={"amount": "3.00"}, headers=key).get_json()

    with ThreadPoolExecutor(8) as pool:
        ids = {job["id"] for job in pool.map(post, range(16))}
    assert len(ids) == 1
    wait_job(client, ids.pop())
    assert balance(client, wallet_id) == "3.00"


def test_transactions_are_listed_newest_first_with_a_cursor(client):
    a = funded_wallet(client, "100.00")
    b = create_wallet(client)
    for amount in ("1.00", "2.00", "3.00"):
        run(client, f"/wallets/{a}/transfer", {"to_wallet_id": b, "amount": amount})
    page = client.get(f"/wallets/{a}/transactions?limit=2").get_json()
    assert [t["amount"] for t in page["items"]] == ["3.00", "2.00"]
    assert page["next_cursor"]
    rest = client.get(f"/wallets/{a}/transactions?limit=2&cursor={page['next_cursor']}").get_json()
    assert [t["type"] for t in rest["items"]] == ["TRANSFER", "FUND"]
    assert rest["items"][0]["amount"] == "1.00" and rest["next_cursor"] is None
    received = client.get(f"/wallets/{b}/transactions").get_json()["items"]
    assert [t["counterparty_wallet_id"] for t in received] == [b, b, b]
    assert_problem(client.get(f"/wallets/{a}/transactions?cursor=garbage"), 422, "VALIDATION_FAILED")
    assert_problem(client.get(f"/wallets/{a}/transactions?limit=0"), 422, "VALIDATION_FAILED")
    assert_problem(client.get(f"/wallets/{a}/transactions?limit=501"), 422, "VALIDATION_FAILED")
    assert_problem(client.get(f"/wallets/{a}/transactions?limit=x"), 422, "VALIDATION_FAILED")


def test_a_users_wallets_are_listed(client):
    user = f"lister-{uuid.uuid4().hex[:6]}"
    ids = [create_wallet(client, user_id=user, currency=c) for c in ("USD", "EUR", "JPY")]
    page = client.get(f"/users/{user}/wallets?limit=2").get_json()
    assert [w["id"] for w in page["items"]] == ids[::-1][:2]
    rest = client.get(f"/users/{user}/wallets?limit=2&cursor={page['next_cursor']}").get_json()
    assert [w["id"] for w in rest["items"]] == [ids[0]] and rest["next_cursor"] is None
    # A user id no wallet can have (101 characters, or not printable ASCII) is 422, an unknown one 200 empty.
    assert_problem(client.get("/users/" + "u" * 101 + "/wallets"), 422, "VALIDATION_FAILED")
    assert_problem(client.get("/users/%C3%A9/wallets"), 422, "VALIDATION_FAILED")
    assert client.get("/users/nobody-at-all/wallets").get_json() == {"items": [], "next_cursor": None}


def test_health_and_ready(client):
    assert client.get("/health").get_json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.get_json()["checks"]["postgres"] == "ok"


def test_a_database_outage_answers_503_with_retry_after_not_500(client, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from app.services import queries

    def database_down(*_args, **_kwargs):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(queries, "wallet_row", database_down)
    r = client.get(f"/wallets/{uuid.uuid4()}")
    body = assert_problem(r, 503, "SERVICE_UNAVAILABLE")
    assert r.headers["Retry-After"] == "1" and "SELECT" not in body["detail"]


def test_a_wallet_id_in_the_path_in_any_uuid_spelling_names_that_wallet(client):
    wallet = create_wallet(client, "spelling")
    for spelling in (wallet.upper(), wallet.replace("-", ""), "{" + wallet + "}"):
        r = client.post(f"/wallets/{spelling}/freeze", json={"reason": "check"}, headers={"Prefer": "wait=5"})
        assert r.get_json()["status"] == "succeeded", r.get_json()
        assert client.post(f"/wallets/{spelling}/unfreeze", headers={"Prefer": "wait=5"}).get_json()["status"] \
            == "succeeded"
    assert client.post(f"/wallets/{wallet}/transfer", json={"to_wallet_id": wallet.upper(), "amount": "1.00"}) \
        .status_code == 422
