"""Money under concurrency: optimistic locking, retries, and the bank invariants."""
import random
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from sqlalchemy import text

from app.adapters.db import engine
from app.services.audit import run_audit
from tests.conftest import api_client
from tests.helpers import balance, create_wallet, funded_wallet, submit

pytestmark = pytest.mark.usefixtures("worker")


def wait_all_final(job_ids: list[str], timeout: float = 120) -> dict[str, dict]:
    """Final jobs by id, read straight from the jobs table."""
    deadline = time.monotonic() + timeout
    while True:
        with engine().connect() as conn:
            rows = conn.execute(text(
                "SELECT id::text, status, attempts, error FROM jobs WHERE id = ANY(CAST(:ids AS uuid[]))"),
                {"ids": job_ids}).mappings().all()
        if len(rows) == len(job_ids) and all(r["status"] in ("succeeded", "failed") for r in rows):
            return {r["id"]: dict(r) for r in rows}
        if time.monotonic() > deadline:
            pending = [r["id"] for r in rows if r["status"] not in ("succeeded", "failed")]
            raise AssertionError(f"{len(pending)} jobs not final after {timeout}s")
        time.sleep(0.05)


def submit_all(app, requests: list[tuple], threads: int = 16) -> list[str]:
    """Submit commands ((path, body), or (method, path, body)) from many HTTP clients at once; returns job ids
    in request order."""

    def post(req):
        method, path, body = req if len(req) == 3 else ("POST", *req)
        return submit(api_client(app), path, body, method=method)["id"]

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, requests))


def test_fifty_concurrent_funds_on_one_wallet_all_apply_with_retried_conflicts(client, wallet_app):
    wallet_id = create_wallet(client)
    job_ids = submit_all(wallet_app, [(f"/wallets/{wallet_id}/fund", {"amount": "1.00"})] * 50)
    jobs = wait_all_final(job_ids)
    assert all(j["status"] == "succeeded" for j in jobs.values()), [j for j in jobs.values() if j["status"] != "succeeded"]
    assert balance(client, wallet_id) == "50.00"
    retried = [j for j in jobs.values() if j["attempts"] > 1]
    assert retried, "expected optimistic-lock conflicts to be retried under contention"
    wallet = client.get(f"/wallets/{wallet_id}").get_json()
    assert wallet["version"] == 51  # one version per applied fund, no lost update
    assert run_audit().ok


def test_bank_transfers_conserve_money_and_never_overdraw(client, wallet_app):
    wallets = [funded_wallet(client, "100.00", user_id=f"bank-{i}") for i in range(10)]
    rng = random.Random(42)
    requests = []
    for _ in range(500):
        src, dst = rng.sample(wallets, 2)
        amount = Decimal(rng.randint(1, 6000)) / 100  # up to 60.00: many overdraw
        requests.append((f"/wallets/{src}/transfer", {"to_wallet_id": dst, "amount": str(amount)}))
    started = time.monotonic()
    job_ids = submit_all(wallet_app, requests)
    jobs = wait_all_final(job_ids)
    elapsed = time.monotonic() - started
    print(f"\nbank test: 500 transfers final in {elapsed:.2f}s ({500 / elapsed:.0f}/s)")

    balances = {w: Decimal(balance(client, w)) for w in wallets}
    assert sum(balances.values()) == Decimal("1000.00")
    assert all(b >= 0 for b in balances.values())
    failed = [j for j in jobs.values() if j["status"] == "failed"]
    assert failed, "the workload was built to overdraw"
    assert {j["error"]["code"] for j in failed} == {"INSUFFICIENT_FUNDS"}
    succeeded = sum(1 for j in jobs.values() if j["status"] == "succeeded")
    assert succeeded + len(failed) == 500

    with engine().connect() as conn:
        postings = dict(conn.execute(text(
            "SELECT wallet_id::text, sum(amount) FROM postings WHERE wallet_id = ANY(CAST(:ids AS uuid[]))"
            " GROUP BY wallet_id"), {"ids": wallets}).all())
        entries = conn.execute(text(
            "SELECT count(*) FROM journal_entries WHERE job_id = ANY(CAST(:ids AS uuid[]))"), {"ids": job_ids}).scalar()
    assert {w: Decimal(postings[w]) for w in wallets} == balances
    assert entries == succeeded
    report = run_audit()
    assert report.ok, report.problems


def test_concurrent_debits_never_take_a_wallet_below_its_overdraft_limit(client, wallet_app):
    from tests.integration.test_money_operations import put_limits

    w = funded_wallet(client, "50.00")
    other = create_wallet(client)
    assert put_limits(client, w, {"overdraft_limit": "50.00"})["status"] == "succeeded"
    debits = [(f"/wallets/{w}/withdraw", {"amount": "7.00"}), (f"/wallets/{w}/holds", {"amount": "7.00"}),
              (f"/wallets/{w}/transfer", {"to_wallet_id": other, "amount": "7.00"})] * 10
    jobs = wait_all_final(submit_all(wallet_app, debits))
    succeeded = sum(j["status"] == "succeeded" for j in jobs.values())
    assert succeeded == 14  # 14 × 7.00 = 98.00 of the 100.00 (50.00 and the overdraft of 50.00); a 15th: 105.00
    assert {j["error"]["code"] for j in jobs.values() if j["status"] == "failed"} == {"INSUFFICIENT_FUNDS"}
    view = client.get(f"/wallets/{w}").get_json()
    assert view["available_balance"] == "-48.00"
    assert Decimal(view["balance"]) >= Decimal("-50.00")
    report = run_audit()
    assert report.ok, report.problems
