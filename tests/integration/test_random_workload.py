"""A randomized concurrent workload of every money operation keeps the ledger's invariants."""
import random

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from app.services.audit import run_audit
from tests.helpers import create_wallet, funded_wallet, submit
from tests.integration.test_concurrency import submit_all, wait_all_final

pytestmark = pytest.mark.usefixtures("worker", "beat")

BUSINESS_CODES = {"INSUFFICIENT_FUNDS", "WALLET_NOT_ACTIVE", "HOLD_NOT_ACTIVE", "REVERSAL_EXCEEDS_ORIGINAL",
                  "LIMIT_EXCEEDED", "LIMIT_BELOW_DEBT", "WALLET_NOT_EMPTY", "CURRENCY_MISMATCH"}


def amount(rng: random.Random) -> str:
    return f"{rng.randint(1, 4000) / 100:.2f}"


def first_wave(rng, wallets):
    for _ in range(60):
        w = rng.choice(wallets)
        kind = rng.choice(["fund", "withdraw", "transfer", "transfer", "hold", "hold"])
        if kind == "fund":
            yield f"/wallets/{w}/fund", {"amount": amount(rng)}
        elif kind == "withdraw":
            yield f"/wallets/{w}/withdraw", {"amount": amount(rng)}
        elif kind == "transfer":
            yield f"/wallets/{w}/transfer", {"to_wallet_id": rng.choice([x for x in wallets if x != w]),
                                             "amount": amount(rng)}
        else:
            yield f"/wallets/{w}/holds", {"amount": amount(rng), "expires_in_seconds": rng.choice([1, 2, 3600])}


def second_wave(rng, wallets, holds, transactions):
    for _ in range(60):
        w = rng.choice(wallets)
        kind = rng.choice(["capture", "void", "reverse", "freeze", "unfreeze", "limits", "transfer", "close"])
        if kind == "capture" and holds:
            hold_id, hold_wallet, hold_amount = rng.choice(holds)
            body = {}
            if rng.random() < 0.5:
                body["amount"] = f"{max(1, int(float(hold_amount) * 100 * rng.random())) / 100:.2f}"
            to = rng.choice([None, rng.choice(wallets)])
            if to and to != hold_wallet:
                body["to_wallet_id"] = to
            yield f"/holds/{hold_id}/capture", body
        elif kind == "void" and holds:
            yield f"/holds/{rng.choice(holds)[0]}/void", {}
        elif kind == "reverse" and transactions:
            transaction_id, original_amount = rng.choice(transactions)
            part = f"{max(1, int(float(original_amount) * 100 * rng.random())) / 100:.2f}"
            yield f"/transactions/{transaction_id}/reverse", rng.choice([{}, {"amount": part}])
        elif kind == "freeze":
            yield f"/wallets/{w}/freeze", {"reason": "random"}
        elif kind == "unfreeze":
            yield f"/wallets/{w}/unfreeze", {}
        elif kind == "close":
            yield f"/wallets/{w}/close", {}
        elif kind == "limits":  # an overdraft (or none), racing the debits that may use it
            yield "PUT", f"/wallets/{w}/limits", {"overdraft_limit": rng.choice(["0", "20.00", "60.00"])}
        else:
            yield f"/wallets/{w}/transfer", {"to_wallet_id": rng.choice([x for x in wallets if x != w]),
                                             "amount": amount(rng)}


def run_wave(wallet_app, requests) -> list[dict]:
    job_ids = submit_all(wallet_app, requests)
    jobs = wait_all_final(job_ids)
    codes = {j["error"]["code"] for j in jobs.values() if j["status"] == "failed"}
    assert codes <= BUSINESS_CODES, codes
    return [jobs[j] for j in job_ids]


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.generate])  # no shrinking: each example is a whole workload
@given(seed=st.integers(0, 2**32 - 1))
def test_random_concurrent_workload_keeps_every_invariant(client, wallet_app, seed):
    from sqlalchemy import text

    from app.adapters.db import engine

    rng = random.Random(seed)
    wallets = [funded_wallet(client, "100.00", user_id=f"rand-{i}") for i in range(6)] + [create_wallet(client)]
    for w in wallets[:3]:  # some wallets may go below zero from the start
        submit(client, f"/wallets/{w}/limits", {"overdraft_limit": "50.00"}, method="PUT")
    run_wave(wallet_app, list(first_wave(rng, wallets)))
    with engine().connect() as conn:
        holds = [tuple(r) for r in conn.execute(text(
            "SELECT id::text, wallet_id::text, amount FROM holds WHERE wallet_id = ANY(CAST(:w AS uuid[]))"),
            {"w": wallets}).all()]
        transactions = [tuple(r) for r in conn.execute(text(
            "SELECT id::text, amount FROM journal_entries WHERE wallet_id = ANY(CAST(:w AS uuid[]))"
            " AND type <> 'REVERSAL'"), {"w": wallets}).all()]
    run_wave(wallet_app, list(second_wave(rng, wallets, holds, transactions)))
    run_wave(wallet_app, list(first_wave(rng, wallets)))
    report = run_audit()
    assert report.ok, report.problems
