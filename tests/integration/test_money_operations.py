"""Withdrawals, holds, reversals, freeze and close, limits, overdraft, balances as of a time, statements,
ETag and If-Match."""
import json
import os
import signal
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app.adapters.db import autocommit, engine
from app.adapters.store import ClaimedJob, WalletStore
from app.domain import commands
from app.services import handlers
from app.services.audit import run_audit
from app.services.views import timestamp
from tests.helpers import balance, create_wallet, funded_wallet, run, submit, wait_job
from tests.integration.test_concurrency import submit_all, wait_all_final
from tests.integration.test_exactly_once import record_job

pytestmark = pytest.mark.usefixtures("worker")


def wallet(client, wallet_id: str) -> dict:
    return client.get(f"/wallets/{wallet_id}").get_json()


def ok(job: dict) -> dict:
    assert job["status"] == "succeeded", job
    return job["result"]


def failed(job: dict, code: str) -> None:
    assert job["status"] == "failed", job
    assert job["error"]["code"] == code, job


def hold(client, wallet_id: str, amount: str, **extra) -> dict:
    return run(client, f"/wallets/{wallet_id}/holds", {"amount": amount, **extra})


def test_withdraw_takes_money_out_through_the_withdrawals_account(client):
    w = funded_wallet(client, "50.00")
    tx = ok(run(client, f"/wallets/{w}/withdraw", {"amount": "20.00", "reference": "payout-1"}))
    assert tx["type"] == "WITHDRAWAL" and tx["balance_after"] == "30.00" and tx["reference"] == "payout-1"
    failed(run(client, f"/wallets/{w}/withdraw", {"amount": "30.01"}), "INSUFFICIENT_FUNDS")
    assert balance(client, w) == "30.00"
    assert run_audit().ok


def test_twenty_concurrent_holds_never_oversubscribe_a_wallet(client, wallet_app):
    w = funded_wallet(client, "100.00")
    job_ids = submit_all(wallet_app, [(f"/wallets/{w}/holds", {"amount": "10.00"})] * 20)
    jobs = wait_all_final(job_ids)
    assert sum(j["status"] == "succeeded" for j in jobs.values()) == 10
    assert {j["error"]["code"] for j in jobs.values() if j["status"] == "failed"} == {"INSUFFICIENT_FUNDS"}
    state = wallet(client, w)
    assert state["balance"] == "100.00" and state["available_balance"] == "0.00"
    failed(run(client, f"/wallets/{w}/withdraw", {"amount": "0.01"}), "INSUFFICIENT_FUNDS")
    assert run_audit().ok


def test_a_hold_reads_and_counts_as_described(client):
    w = funded_wallet(client, "40.00")
    h = ok(hold(client, w, "15.00", reference="order-9"))
    assert h["status"] == "active" and h["amount"] == "15.00" and h["captured_amount"] == "0.00"
    assert h["reference"] == "order-9" and h["wallet_id"] == w
    expires = datetime.fromisoformat(h["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=6, hours=23) < expires - datetime.now(timezone.utc) <= timedelta(days=7)
    assert client.get(f"/holds/{h['id']}").get_json() == h
    assert wallet(client, w)["available_balance"] == "25.00"


def test_partial_capture_moves_money_releases_the_rest_and_is_final(client):
    payer = funded_wallet(client, "100.00")
    merchant = create_wallet(client, user_id="merchant")
    h = ok(hold(client, payer, "30.00"))
    tx = ok(run(client, f"/holds/{h['id']}/capture", {"amount": "12.50", "to_wallet_id": merchant}))
    assert tx["type"] == "CAPTURE" and tx["amount"] == "12.50"
    assert tx["balance_after"] == "87.50" and tx["counterparty_balance_after"] == "12.50"
    captured = client.get(f"/holds/{h['id']}").get_json()
    assert captured["status"] == "captured" and captured["captured_amount"] == "12.50"
    assert wallet(client, payer)["available_balance"] == "87.50"
    failed(run(client, f"/holds/{h['id']}/void"), "HOLD_NOT_ACTIVE")
    failed(run(client, f"/holds/{h['id']}/capture"), "HOLD_NOT_ACTIVE")
    assert balance(client, merchant) == "12.50" and balance(client, payer) == "87.50"
    assert run_audit().ok


def test_capture_out_of_the_system_and_void(client):
    w = funded_wallet(client, "10.00")
    h1 = ok(hold(client, w, "4.00"))
    tx = ok(run(client, f"/holds/{h1['id']}/capture"))  # whole hold, to the withdrawals account
    assert tx["amount"] == "4.00" and tx["counterparty_wallet_id"] is None
    h2 = ok(hold(client, w, "6.00"))
    assert wallet(client, w)["available_balance"] == "0.00"
    voided = ok(run(client, f"/holds/{h2['id']}/void", None))
    assert voided["status"] == "voided"
    assert wallet(client, w)["available_balance"] == "6.00" and balance(client, w) == "6.00"


def test_capture_rules_checked_at_submit(client):
    w = funded_wallet(client, "10.00")
    h = ok(hold(client, w, "4.00"))
    r = client.post(f"/holds/{h['id']}/capture", json={"amount": "4.01"})
    assert r.status_code == 422 and "amount" in r.get_json()["errors"]
    r = client.post(f"/holds/{h['id']}/capture", json={"to_wallet_id": str(uuid.uuid4())})
    assert r.status_code == 404 and r.get_json()["code"] == "WALLET_NOT_FOUND"
    r = client.post(f"/holds/{uuid.uuid4()}/capture", json={})
    assert r.status_code == 404 and r.get_json()["code"] == "HOLD_NOT_FOUND"
    eur = create_wallet(client, currency="EUR")
    failed(run(client, f"/holds/{h['id']}/capture", {"to_wallet_id": eur}), "CURRENCY_MISMATCH")


@pytest.mark.usefixtures("beat")
def test_an_expired_hold_releases_its_funds_by_itself_and_cannot_be_captured(client):
    w = funded_wallet(client, "10.00")
    h = ok(hold(client, w, "10.00", expires_in_seconds=1))
    assert wallet(client, w)["available_balance"] == "0.00"
    time.sleep(1.2)
    # Nothing touched the hold: its money is available again and it reads expired.
    assert wallet(client, w)["available_balance"] == "10.00"
    assert client.get(f"/holds/{h['id']}").get_json()["status"] == "expired"
    failed(run(client, f"/holds/{h['id']}/capture"), "HOLD_NOT_ACTIVE")
    failed(run(client, f"/holds/{h['id']}/void"), "HOLD_NOT_ACTIVE")

    def recorded_expired():
        with engine().connect() as conn:
            return conn.execute(text("SELECT status, released_at FROM holds WHERE id = :id"), {"id": h["id"]}).one()

    deadline = time.monotonic() + 30  # the contract's bound for HOLD_EXPIRED (beat runs the sweep every 10 s)
    while recorded_expired().status != "expired":
        assert time.monotonic() < deadline, "beat did not record the expiry within 30 s"
        time.sleep(0.2)
    with engine().connect() as conn:
        events = conn.execute(text("SELECT count(*) FROM outbox WHERE type = 'HOLD_EXPIRED' AND aggregateid = :w"),
                              {"w": w}).scalar()
    assert events == 1
    assert ok(run(client, f"/wallets/{w}/withdraw", {"amount": "10.00"}))["balance_after"] == "0.00"
    assert run_audit().ok


def test_a_hold_is_dated_by_the_same_now_that_finishes_its_job(client):
    """Placed in one transaction: its row, its wallet's change and its job's completion are that transaction's now()."""
    w = funded_wallet(client, "10.00")
    job = hold(client, w, "4.00", expires_in_seconds=60)
    with engine().connect() as conn:
        row = conn.execute(text("""
            SELECT h.created_at, h.expires_at, w.updated_at, w.debit_day, j.completed_at,
                   (j.completed_at AT TIME ZONE 'UTC')::date AS utc_day
              FROM holds h JOIN wallets w ON w.id = h.wallet_id JOIN jobs j ON j.id = h.job_id
             WHERE h.id = :id"""), {"id": ok(job)["id"]}).one()
    assert row.created_at == row.updated_at == row.completed_at
    assert row.expires_at == row.created_at + timedelta(seconds=60) and row.debit_day == row.utc_day


def _claimed(command_type: str, command) -> ClaimedJob:
    with autocommit() as conn:
        return WalletStore(conn).claim_job(record_job(command_type, command))


def _in_lagging_transaction(handler, job: ClaimedJob, lag_s: float) -> tuple[datetime, dict]:
    """Run a handler in a transaction whose now() is `lag_s` behind the worker's clock, in a UTC+14 session.

    Returns the transaction's now() and the handler's result, committed with its job.
    """
    with engine().begin() as conn:
        conn.execute(text("SET LOCAL TIME ZONE 'Pacific/Kiritimati'"))
        db_now = conn.execute(text("SELECT now()")).scalar()
        time.sleep(lag_s)
        store = WalletStore(conn)
        result = handler(store, job, commands.from_payload(job.type, job.payload))
        assert store.finish_job(job.id, status="succeeded", result=result) is not None
    return db_now, result


def test_the_workers_clock_plays_no_part_in_a_hold(client):
    """Expiry and the day a debit counts come from the database's now(), never the worker's clock.

    In a transaction that began a while ago, now() lags the worker's clock: a
    hold placed there is dated by now() (in UTC, whatever the session's time
    zone), and one captured there is judged at now(), before its expiry, even
    when the worker's clock has passed it.
    """
    w = funded_wallet(client, "10.00")
    place = _claimed(commands.PLACE_HOLD, commands.PlaceHold(str(uuid.uuid4()), w, Decimal("4.00"), 60))
    db_now, placed = _in_lagging_transaction(handlers.place_hold, place, lag_s=1.0)
    assert placed["created_at"] == timestamp(db_now)
    assert placed["expires_at"] == timestamp(db_now + timedelta(seconds=60))
    with engine().connect() as conn:
        debit_day = conn.execute(text("SELECT debit_day FROM wallets WHERE id = :id"), {"id": w}).scalar()
    assert debit_day == db_now.astimezone(timezone.utc).date()

    short = ok(hold(client, w, "3.00", expires_in_seconds=4))
    expires_at = datetime.fromisoformat(short["expires_at"].replace("Z", "+00:00"))
    capture = _claimed(commands.CAPTURE_HOLD, commands.CaptureHold(short["id"]))
    lag = (expires_at - datetime.now(timezone.utc)).total_seconds() + 0.5
    db_now, captured = _in_lagging_transaction(handlers.capture_hold, capture, lag_s=lag)
    assert db_now < expires_at < datetime.now(timezone.utc)
    assert captured["type"] == "CAPTURE" and captured["created_at"] == timestamp(db_now)
    assert client.get(f"/holds/{short['id']}").get_json()["status"] == "captured"
    assert client.get(f"/holds/{placed['id']}").get_json()["status"] == "active"
    assert run_audit().ok


def test_reversal_of_a_transfer_and_beyond_the_original(client):
    a = funded_wallet(client, "100.00")
    b = create_wallet(client)
    tx = ok(run(client, f"/wallets/{a}/transfer", {"to_wallet_id": b, "amount": "40.00"}))
    rev = ok(run(client, f"/transactions/{tx['id']}/reverse", {"amount": "15.00", "reason": "partial refund"}))
    assert rev["type"] == "REVERSAL" and rev["reverses_transaction_id"] == tx["id"]
    assert balance(client, a) == "75.00" and balance(client, b) == "25.00"
    failed(run(client, f"/transactions/{tx['id']}/reverse", {"amount": "25.01"}), "REVERSAL_EXCEEDS_ORIGINAL")
    ok(run(client, f"/transactions/{tx['id']}/reverse"))  # the remaining 25.00
    assert balance(client, a) == "100.00" and balance(client, b) == "0.00"
    failed(run(client, f"/transactions/{tx['id']}/reverse", {"amount": "0.01"}), "REVERSAL_EXCEEDS_ORIGINAL")
    r = client.post(f"/transactions/{rev['id']}/reverse", json={})
    assert r.status_code == 422
    assert run_audit().ok


def test_reversal_of_a_transfer_needs_the_receivers_available_balance(client):
    a = funded_wallet(client, "10.00")
    b = create_wallet(client)
    c = create_wallet(client)
    tx = ok(run(client, f"/wallets/{a}/transfer", {"to_wallet_id": b, "amount": "10.00"}))
    ok(run(client, f"/wallets/{b}/transfer", {"to_wallet_id": c, "amount": "8.00"}))
    failed(run(client, f"/transactions/{tx['id']}/reverse"), "INSUFFICIENT_FUNDS")
    ok(run(client, f"/transactions/{tx['id']}/reverse", {"amount": "2.00"}))
    assert balance(client, a) == "2.00" and balance(client, b) == "0.00"


@pytest.mark.parametrize("kind", ["fund", "withdrawal", "capture"])
def test_reversal_of_fund_withdrawal_and_capture(client, kind):
    w = funded_wallet(client, "50.00")
    if kind == "fund":
        tx = client.get(f"/wallets/{w}/transactions").get_json()["items"][0]
        expected = "30.00"
    elif kind == "withdrawal":
        tx = ok(run(client, f"/wallets/{w}/withdraw", {"amount": "20.00"}))
        expected = "50.00"
    else:
        h = ok(hold(client, w, "20.00"))
        tx = ok(run(client, f"/holds/{h['id']}/capture"))
        expected = "50.00"
    ok(run(client, f"/transactions/{tx['id']}/reverse", {"amount": "20.00"}))
    assert balance(client, w) == expected
    assert run_audit().ok


def test_a_frozen_wallet_refuses_debits_and_credits_until_unfrozen(client):
    a = funded_wallet(client, "20.00")
    b = funded_wallet(client, "20.00")
    frozen = ok(run(client, f"/wallets/{a}/freeze", {"reason": "fraud review"}))
    assert frozen["status"] == "frozen"
    failed(run(client, f"/wallets/{a}/fund", {"amount": "1.00"}), "WALLET_NOT_ACTIVE")
    failed(run(client, f"/wallets/{a}/withdraw", {"amount": "1.00"}), "WALLET_NOT_ACTIVE")
    failed(run(client, f"/wallets/{a}/transfer", {"to_wallet_id": b, "amount": "1.00"}), "WALLET_NOT_ACTIVE")
    failed(run(client, f"/wallets/{b}/transfer", {"to_wallet_id": a, "amount": "1.00"}), "WALLET_NOT_ACTIVE")
    failed(run(client, f"/wallets/{a}/holds", {"amount": "1.00"}), "WALLET_NOT_ACTIVE")
    assert client.post(f"/wallets/{a}/freeze", json={}).status_code == 422  # a reason is required
    assert ok(run(client, f"/wallets/{a}/unfreeze"))["status"] == "active"
    ok(run(client, f"/wallets/{b}/transfer", {"to_wallet_id": a, "amount": "1.00"}))
    assert balance(client, a) == "21.00" and balance(client, b) == "19.00"


def test_close_needs_an_empty_wallet_and_is_final(client):
    w = funded_wallet(client, "5.00")
    failed(run(client, f"/wallets/{w}/close"), "WALLET_NOT_EMPTY")
    ok(run(client, f"/wallets/{w}/withdraw", {"amount": "2.00"}))
    h = ok(hold(client, w, "3.00"))
    ok(run(client, f"/holds/{h['id']}/capture", {"amount": "3.00"}))
    assert balance(client, w) == "0.00"
    h2_job = run(client, f"/wallets/{w}/holds", {"amount": "1.00"})
    failed(h2_job, "INSUFFICIENT_FUNDS")
    closed = ok(run(client, f"/wallets/{w}/close"))
    assert closed["status"] == "closed"
    failed(run(client, f"/wallets/{w}/fund", {"amount": "1.00"}), "WALLET_NOT_ACTIVE")
    failed(run(client, f"/wallets/{w}/unfreeze"), "WALLET_NOT_ACTIVE")
    failed(run(client, f"/wallets/{w}/freeze", {"reason": "x"}), "WALLET_NOT_ACTIVE")
    failed(put_limits(client, w, {"per_transaction": "1.00"}), "WALLET_NOT_ACTIVE")
    failed(run(client, f"/wallets/{w}/close"), "WALLET_NOT_ACTIVE")
    assert run_audit().ok


def test_close_is_refused_while_a_hold_is_active(client):
    w = funded_wallet(client, "5.00")
    h = ok(hold(client, w, "5.00"))
    assert wallet(client, w)["available_balance"] == "0.00"
    failed(run(client, f"/wallets/{w}/close"), "WALLET_NOT_EMPTY")
    ok(run(client, f"/holds/{h['id']}/capture"))
    assert ok(run(client, f"/wallets/{w}/close"))["status"] == "closed"


def put_limits(client, wallet_id: str, body: dict) -> dict:
    r = client.put(f"/wallets/{wallet_id}/limits", json=body)
    assert r.status_code == 202, r.get_json()
    return wait_job(client, r.get_json()["id"])


def test_limits_refuse_the_debit_that_crosses_them(client):
    a = funded_wallet(client, "1000.00")
    b = create_wallet(client)
    result = ok(put_limits(client, a, {"per_transaction": "100.00", "daily_debit": "250.00"}))
    assert result["limits"] == {"per_transaction": "100.00", "daily_debit": "250.00", "overdraft_limit": "0.00"}
    failed(run(client, f"/wallets/{a}/withdraw", {"amount": "100.01"}), "LIMIT_EXCEEDED")
    ok(run(client, f"/wallets/{a}/withdraw", {"amount": "100.00"}))
    ok(run(client, f"/wallets/{a}/transfer", {"to_wallet_id": b, "amount": "100.00"}))
    failed(run(client, f"/wallets/{a}/holds", {"amount": "50.01"}), "LIMIT_EXCEEDED")
    ok(run(client, f"/wallets/{a}/holds", {"amount": "50.00"}))
    failed(run(client, f"/wallets/{a}/withdraw", {"amount": "0.01"}), "LIMIT_EXCEEDED")
    ok(run(client, f"/wallets/{a}/fund", {"amount": "1.00"}))  # credits are not limited
    ok(put_limits(client, a, {}))  # PUT replaces: no limits
    ok(run(client, f"/wallets/{a}/withdraw", {"amount": "500.00"}))
    assert wallet(client, a)["limits"] == {"per_transaction": None, "daily_debit": None, "overdraft_limit": "0.00"}


def test_daily_limit_holds_under_concurrent_debits(client, wallet_app):
    w = funded_wallet(client, "1000.00")
    ok(put_limits(client, w, {"daily_debit": "100.00"}))
    job_ids = submit_all(wallet_app, [(f"/wallets/{w}/withdraw", {"amount": "7.00"})] * 30)
    jobs = wait_all_final(job_ids)
    succeeded = sum(j["status"] == "succeeded" for j in jobs.values())
    assert succeeded == 14  # 14 × 7.00 = 98.00; a 15th would cross 100.00
    assert {j["error"]["code"] for j in jobs.values() if j["status"] == "failed"} == {"LIMIT_EXCEEDED"}
    assert balance(client, w) == "902.00"


def test_limit_amounts_are_validated(client):
    w = create_wallet(client, currency="JPY")
    assert client.put(f"/wallets/{w}/limits", json={"per_transaction": "1.5"}).status_code == 422
    assert client.put(f"/wallets/{w}/limits", json={"daily_debit": 5}).status_code == 422
    assert client.put(f"/wallets/{w}/limits", json={"weekly": "5"}).status_code == 422
    for overdraft in ("-1", "0.5", 10, "1e3"):  # below zero, more digits than JPY has, not a string
        r = client.put(f"/wallets/{w}/limits", json={"overdraft_limit": overdraft})
        assert r.status_code == 422 and r.get_json()["code"] == "VALIDATION_FAILED", (overdraft, r.get_json())


def test_overdraft_lets_debits_go_down_to_minus_the_limit_and_no_further(client):
    a = funded_wallet(client, "30.00")
    b = create_wallet(client)
    failed(run(client, f"/wallets/{a}/withdraw", {"amount": "30.01"}), "INSUFFICIENT_FUNDS")
    assert ok(put_limits(client, a, {"overdraft_limit": "50.00"}))["limits"]["overdraft_limit"] == "50.00"
    ok(run(client, f"/wallets/{a}/withdraw", {"amount": "40.00"}))  # balance -10.00
    ok(run(client, f"/wallets/{a}/transfer", {"to_wallet_id": b, "amount": "25.00"}))  # -35.00
    h = ok(run(client, f"/wallets/{a}/holds", {"amount": "15.00"}))  # available -50.00: the whole overdraft
    view = wallet(client, a)
    assert (view["balance"], view["available_balance"]) == ("-35.00", "-50.00")
    failed(run(client, f"/wallets/{a}/withdraw", {"amount": "0.01"}), "INSUFFICIENT_FUNDS")
    failed(run(client, f"/wallets/{a}/holds", {"amount": "0.01"}), "INSUFFICIENT_FUNDS")
    # Lowering the limit below what it owes, holds included (so the hold stays capturable), is refused.
    failed(put_limits(client, a, {"overdraft_limit": "49.99"}), "LIMIT_BELOW_DEBT")
    failed(run(client, f"/wallets/{a}/close", {}), "WALLET_NOT_EMPTY")
    ok(run(client, f"/holds/{h['id']}/capture", {"to_wallet_id": b}))  # balance -50.00
    assert wallet(client, a)["balance"] == "-50.00"
    # The database holds the bound on its own, whatever a worker would let through.
    with pytest.raises(IntegrityError, match="ck_wallets_balance_within_overdraft"), engine().begin() as conn:
        conn.execute(text("UPDATE wallets SET balance = balance - 0.01 WHERE id = :id"), {"id": a})
    with pytest.raises(IntegrityError, match="ck_wallets_balance_within_overdraft"), engine().begin() as conn:
        conn.execute(text("UPDATE wallets SET overdraft_limit = 49.99 WHERE id = :id"), {"id": a})
    ok(run(client, f"/wallets/{a}/fund", {"amount": "50.00"}))
    ok(put_limits(client, a, {}))  # PUT replaces: back to no overdraft, which it no longer needs
    ok(run(client, f"/wallets/{a}/close", {}))


def test_balance_as_of_and_statement_match_a_hand_computed_example(client):
    a = create_wallet(client)
    b = create_wallet(client)
    ok(run(client, f"/wallets/{a}/fund", {"amount": "100.00"}))          # 100.00
    time.sleep(0.05)
    t1 = datetime.now(timezone.utc)
    time.sleep(0.05)
    ok(run(client, f"/wallets/{a}/transfer", {"to_wallet_id": b, "amount": "30.00"}))  # 70.00
    ok(run(client, f"/wallets/{a}/withdraw", {"amount": "5.25"}))        # 64.75
    h = ok(hold(client, a, "10.00"))                                   # available 54.75
    time.sleep(0.05)
    t2 = datetime.now(timezone.utc)
    time.sleep(0.05)
    ok(run(client, f"/wallets/{b}/transfer", {"to_wallet_id": a, "amount": "0.75"}))   # 65.50
    ok(run(client, f"/holds/{h['id']}/void"))                           # available 65.50

    def balance_at(t):
        return client.get(f"/wallets/{a}/balance", query_string={"as_of": t.isoformat()}).get_json()

    assert balance_at(t1) == {"balance": "100.00", "available_balance": "100.00",
                              "as_of": t1.isoformat(timespec="microseconds").replace("+00:00", "Z")}
    at_t2 = balance_at(t2)
    assert (at_t2["balance"], at_t2["available_balance"]) == ("64.75", "54.75")
    now = client.get(f"/wallets/{a}/balance").get_json()
    assert (now["balance"], now["available_balance"]) == ("65.50", "65.50")

    statement = client.get(f"/wallets/{a}/statement",
                           query_string={"from": t1.isoformat(), "to": t2.isoformat()}).get_json()
    assert statement["opening_balance"] == "100.00" and statement["closing_balance"] == "64.75"
    assert [(i["type"], i["amount"], i["direction"], i["running_balance"]) for i in statement["items"]] == [
        ("TRANSFER", "30.00", "debit", "70.00"), ("WITHDRAWAL", "5.25", "debit", "64.75")]
    whole = client.get(f"/wallets/{a}/statement").get_json()
    assert whole["opening_balance"] == "0.00" and whole["closing_balance"] == "65.50"
    assert [i["type"] for i in whole["items"]] == ["FUND", "TRANSFER", "WITHDRAWAL", "TRANSFER"]
    # Before the wallet existed it had no balance at all (not a zero one): 422, naming its creation time.
    before = client.get(f"/wallets/{a}/balance", query_string={"as_of": "2020-01-01T00:00:00Z"})
    assert before.status_code == 422 and "created" in before.get_json()["errors"]["as_of"][0]
    created = client.get(f"/wallets/{a}").get_json()["created_at"]
    assert client.get(f"/wallets/{a}/balance", query_string={"as_of": created}).get_json()["balance"] == "0.00"
    assert client.get(f"/wallets/{a}/balance?as_of=yesterday").status_code == 422
    assert client.get(f"/wallets/{a}/balance?as_of=2999-01-01T00:00:00Z").status_code == 422
    assert client.get(f"/wallets/{a}/statement?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z").status_code == 422


def test_etag_and_if_match_make_a_command_conditional_on_the_wallet_it_names(client):
    a = funded_wallet(client, "100.00")
    r = client.get(f"/wallets/{a}")
    assert r.headers["ETag"] == f'"{r.get_json()["version"]}"'
    etag = r.headers["ETag"]
    jobs_before = _job_count()
    # At the version named: accepted, and it runs.
    ok(run(client, f"/wallets/{a}/withdraw", {"amount": "1.00"}, **{"If-Match": etag}))
    # The wallet moved on: 412, nothing recorded.
    r = client.post(f"/wallets/{a}/withdraw", json={"amount": "1.00"}, headers={"If-Match": etag})
    assert r.status_code == 412 and r.mimetype == "application/problem+json"
    assert r.get_json()["code"] == "PRECONDITION_FAILED"
    assert _job_count() == jobs_before + 1
    current = client.get(f"/wallets/{a}").headers["ETag"]
    # A list matches any of its tags; a weak tag never matches (strong comparison); "*" is no condition.
    ok(run(client, f"/wallets/{a}/holds", {"amount": "1.00"}, **{"If-Match": f'"999", {current}'}))
    current = client.get(f"/wallets/{a}").headers["ETag"]
    assert client.post(f"/wallets/{a}/withdraw", json={"amount": "1.00"},
                       headers={"If-Match": f"W/{current}"}).status_code == 412
    ok(run(client, f"/wallets/{a}/withdraw", {"amount": "1.00"}, **{"If-Match": "*"}))
    ok(put_limits_if(client, a, client.get(f"/wallets/{a}").headers["ETag"]))
    # Malformed (no entity tag to match) and a command whose path names no wallet (no ETag): 412 too.
    r = client.post(f"/wallets/{a}/withdraw", json={"amount": "1.00"}, headers={"If-Match": "7"})
    assert r.status_code == 412 and "names no entity tag" in r.get_json()["detail"]
    h = ok(run(client, f"/wallets/{a}/holds", {"amount": "1.00"}))
    assert client.post(f"/holds/{h['id']}/void", json={}, headers={"If-Match": current}).status_code == 412
    # A replay of an accepted request answers with its job, whatever the wallet's version now.
    key = {"Idempotency-Key": f"if-match-{uuid.uuid4()}"}
    etag = client.get(f"/wallets/{a}").headers["ETag"]
    first = run(client, f"/wallets/{a}/withdraw", {"amount": "1.00"}, **{"If-Match": etag}, **key)
    replay = client.post(f"/wallets/{a}/withdraw", json={"amount": "1.00"}, headers={"If-Match": etag, **key})
    assert replay.status_code == 200 and replay.get_json()["id"] == first["id"]


def put_limits_if(client, wallet_id: str, etag: str) -> dict:
    r = client.put(f"/wallets/{wallet_id}/limits", json={"overdraft_limit": "5.00"}, headers={"If-Match": etag})
    assert r.status_code == 202, r.get_json()
    return wait_job(client, r.get_json()["id"])


def test_a_wallet_that_changes_between_submit_and_execution_fails_the_job_version_mismatch(client, worker):
    a, b = funded_wallet(client, "100.00"), create_wallet(client)
    etag = client.get(f"/wallets/{a}").headers["ETag"]
    os.killpg(worker.pid, signal.SIGSTOP)  # both are accepted at the same version before either runs
    try:
        first = submit(client, f"/wallets/{a}/withdraw", {"amount": "1.00"}, **{"If-Match": etag})
        second = submit(client, f"/wallets/{a}/transfer", {"to_wallet_id": b, "amount": "1.00"},
                        **{"If-Match": etag})
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
    jobs = [wait_job(client, first["id"]), wait_job(client, second["id"])]
    assert sorted(j["status"] for j in jobs) == ["failed", "succeeded"]
    (loser,) = [j for j in jobs if j["status"] == "failed"]
    assert loser["error"]["code"] == "VERSION_MISMATCH"
    # Not retried into success: it fails at its first read after the change (a second attempt at most, when
    # both ran at once and it lost the optimistic check).
    assert loser["attempts"] <= 2
    assert balance(client, a) == "99.00"


def _job_count() -> int:
    with engine().connect() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM jobs").scalar()


def test_metadata_is_kept_on_the_job_and_on_what_each_command_produced(client):
    md = {"order_id": "A-1042", "channel.web": "café ☕"}
    created = ok_job(run(client, "/wallets", {"user_id": "md-user", "currency": "USD", "metadata": md}))
    assert created["metadata"] == md and created["result"]["metadata"] == md
    a = created["result"]["id"]
    assert wallet(client, a)["metadata"] == md
    b = create_wallet(client)
    assert wallet(client, b)["metadata"] == {}  # none sent: {}
    fund = ok_job(run(client, f"/wallets/{a}/fund", {"amount": "50.00", "metadata": {"k": "fund"}}))
    assert fund["metadata"] == {"k": "fund"} and fund["result"]["metadata"] == {"k": "fund"}
    assert client.get(f"/transactions/{fund['result']['id']}").get_json()["metadata"] == {"k": "fund"}
    h = ok_job(run(client, f"/wallets/{a}/holds", {"amount": "5.00", "metadata": {"k": "hold"}}))["result"]
    assert h["metadata"] == {"k": "hold"} and client.get(f"/holds/{h['id']}").get_json()["metadata"] == {"k": "hold"}
    capture = ok(run(client, f"/holds/{h['id']}/capture", {"to_wallet_id": b, "metadata": {"k": "capture"}}))
    assert capture["metadata"] == {"k": "capture"}
    listed = client.get(f"/wallets/{a}/transactions").get_json()["items"]
    assert [t["metadata"] for t in listed][:2] == [{"k": "capture"}, {"k": "fund"}]
    reversal = ok(run(client, f"/transactions/{fund['result']['id']}/reverse",
                      {"amount": "1.00", "metadata": {"k": "reverse"}}))
    assert reversal["metadata"] == {"k": "reverse"}
    for path, body in ((f"/wallets/{a}/freeze", {"reason": "r"}), (f"/wallets/{a}/unfreeze", {})):
        assert ok_job(run(client, path, {**body, "metadata": {"k": "state"}}))["metadata"] == {"k": "state"}
    # A batch: each item's metadata, whether its own job (independent) or one job for all (atomic).
    for atomic in (False, True):
        r = client.post("/batches", headers={"Prefer": "wait=10"}, json={"atomic": atomic, "commands": [
            {"type": "fund", "wallet_id": b, "amount": "1.00", "metadata": {"item": "0"}},
            {"type": "transfer", "wallet_id": b, "to_wallet_id": a, "amount": "1.00", "metadata": {"item": "1"}},
            {"type": "withdraw", "wallet_id": a, "amount": "1.00"}]})
        assert r.get_json()["status"] == "completed", r.get_json()
        jobs = client.get(f"/batches/{r.get_json()['id']}/jobs").get_json()["items"]
        transactions = [t for j in jobs for t in (j["result"]["transactions"] if atomic else [j["result"]])]
        assert [t["metadata"] for t in transactions] == [{"item": "0"}, {"item": "1"}, {}]
        for t in transactions:
            assert client.get(f"/transactions/{t['id']}").get_json()["metadata"] == t["metadata"]
        if not atomic:
            assert [j["metadata"] for j in jobs] == [{"item": "0"}, {"item": "1"}, {}]


def ok_job(job: dict) -> dict:
    assert job["status"] == "succeeded", job
    return job


@pytest.mark.parametrize("metadata, why", [
    ({f"k{i}": "v" for i in range(21)}, "at most 20 keys"),
    ({"": "v"}, "must be 1-40 characters"),
    ({"a" * 41: "v"}, "must be 1-40 characters"),
    ({"has space": "v"}, "must be 1-40 characters"),
    ({"k": "v" * 501}, "at most 500 characters"),
    ({"k": 5}, "must be a string"),
    ({"k": None}, "must be a string"),
    ({"k": "a\u0000b"}, "NUL"),
    (["k", "v"], "must be an object"),
    ("k=v", "must be an object"),
])
def test_metadata_outside_the_rules_is_refused_and_records_nothing(client, metadata, why):
    a = funded_wallet(client, "10.00")
    before = _job_count()
    for path, body in ((f"/wallets/{a}/fund", {"amount": "1.00"}), ("/wallets", {"user_id": "u", "currency": "USD"}),
                       ("/batches", {"commands": [{"type": "fund", "wallet_id": a, "amount": "1.00"}]})):
        if path == "/batches":
            body["commands"][0]["metadata"] = metadata
        else:
            body["metadata"] = metadata
        r = client.post(path, json=body)
        assert r.status_code == 422 and r.get_json()["code"] == "VALIDATION_FAILED", r.get_json()
        assert why in json.dumps(r.get_json()["errors"]), r.get_json()
    assert _job_count() == before
    assert {f"k{i}": "v" * 500 for i in range(20)} == ok_job(run(
        client, f"/wallets/{a}/fund", {"amount": "1.00", "metadata": {f"k{i}": "v" * 500 for i in range(20)}}))["metadata"]
