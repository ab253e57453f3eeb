"""No job stays open: commands invalid for the state they meet end failed with a business code, at once.

Issue 15: reversing an already fully reversed transaction without `amount` built a
zero-amount posting, PostgreSQL refused it (ck_postings_amount_not_zero) and the task
retried the IntegrityError as if the database were away, for ever.
"""
import random

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from app.adapters.db import engine
from tests.helpers import create_wallet, funded_wallet, run
from tests.integration.test_concurrency import submit_all, wait_all_final
from tests.integration.test_random_workload import BUSINESS_CODES, amount

pytestmark = pytest.mark.usefixtures("worker")

# A job must be final this soon after the last command was accepted: no retry loop may outlast it.
FINAL_WITHIN_S = 60
FAULT_CODES = {"INTERNAL_ERROR", "ATTEMPTS_EXHAUSTED"}


def test_a_second_full_reversal_fails_at_once_with_reversal_exceeds_original(client):
    wallet = funded_wallet(client, "10.00", user_id="twice")
    transaction = run(client, f"/wallets/{wallet}/withdraw", {"amount": "4.00"})["result"]["id"]
    first = run(client, f"/transactions/{transaction}/reverse", {})
    assert first["status"] == "succeeded", first
    second = run(client, f"/transactions/{transaction}/reverse", {})
    assert second["status"] == "failed" and second["error"]["code"] == "REVERSAL_EXCEEDS_ORIGINAL", second
    assert second["attempts"] == 1  # rejected on its first try, never retried
    assert client.get(f"/wallets/{wallet}").get_json()["balance"] == "10.00"


def _stale_commands(rng: random.Random, wallets: list[str], closed: str, holds: list[str], transactions: list[str]):
    """Commands that meet a state they are invalid for, mixed with valid ones, in a random order."""
    for _ in range(80):
        w = rng.choice(wallets)
        kind = rng.choice(["reverse-again", "capture-settled", "void-settled", "to-closed",
                           "from-closed", "overdraw", "fund", "transfer"])
        if kind == "reverse-again" and transactions:
            yield f"/transactions/{rng.choice(transactions)}/reverse", rng.choice([{}, {"amount": "0.01"}])
        elif kind == "capture-settled" and holds:
            yield f"/holds/{rng.choice(holds)}/capture", {}
        elif kind == "void-settled" and holds:
            yield f"/holds/{rng.choice(holds)}/void", {}
        elif kind == "to-closed":
            yield f"/wallets/{w}/transfer", {"to_wallet_id": closed, "amount": amount(rng)}
        elif kind == "from-closed":
            yield f"/wallets/{closed}/withdraw", {"amount": amount(rng)}
        elif kind == "overdraw":
            yield f"/wallets/{w}/withdraw", {"amount": "100000.00"}
        elif kind == "fund":
            yield f"/wallets/{w}/fund", {"amount": amount(rng)}
        else:
            yield f"/wallets/{w}/transfer", {"to_wallet_id": rng.choice([x for x in wallets if x != w]),
                                             "amount": amount(rng)}


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          phases=[Phase.explicit, Phase.generate])  # no shrinking: each example is a whole workload
@given(seed=st.integers(0, 2**32 - 1))
def test_random_commands_invalid_for_their_state_all_end_final_with_a_business_code(client, wallet_app, seed):
    rng = random.Random(seed)
    wallets = [funded_wallet(client, "100.00", user_id=f"stale-{i}") for i in range(4)]
    closed = create_wallet(client, user_id="stale-closed")
    assert run(client, f"/wallets/{closed}/close", {})["status"] == "succeeded"
    # Settled holds and fully reversed transactions, for the commands below to meet.
    holds, transactions = [], []
    for w in wallets:
        for settle in ("capture", "void"):
            hold = run(client, f"/wallets/{w}/holds", {"amount": "1.00", "expires_in_seconds": 3600})["result"]["id"]
            assert run(client, f"/holds/{hold}/{settle}", {})["status"] == "succeeded"
            holds.append(hold)
        paid = run(client, f"/wallets/{w}/withdraw", {"amount": "2.00"})["result"]["id"]
        reversal = run(client, f"/transactions/{paid}/reverse", {})
        assert reversal["status"] == "succeeded", reversal
        transactions.append(paid)

    job_ids = submit_all(wallet_app, list(_stale_commands(rng, wallets, closed, holds, transactions)))
    jobs = wait_all_final(job_ids, timeout=FINAL_WITHIN_S)
    failed = [j for j in jobs.values() if j["status"] == "failed"]
    codes = {j["error"]["code"] for j in failed}
    assert not codes & FAULT_CODES, [j for j in failed if j["error"]["code"] in FAULT_CODES]
    assert codes <= BUSINESS_CODES | {"CAPTURE_EXCEEDS_HOLD", "HOLD_NOT_ACTIVE"}, codes
    assert {"REVERSAL_EXCEEDS_ORIGINAL", "WALLET_NOT_ACTIVE", "INSUFFICIENT_FUNDS"} <= codes
    with engine().connect() as conn:  # a zero-amount or otherwise refused posting never reached the ledger
        assert conn.execute(text("SELECT count(*) FROM postings WHERE amount = 0")).scalar() == 0
