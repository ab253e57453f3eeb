"""Bulk submissions (POST /batches) against the real stack: independent and atomic batches, validation,
idempotency, wait, chunked wallet.execute_batch tasks, exactly-once under concurrent deliveries."""
from __future__ import annotations

import json
import threading
import time
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text

from app.adapters.db import engine
from app.domain import commands
from app.services import batch_executor, bulk
from tests.conftest import STATE_DIR, api_client, wait_for
from tests.helpers import balance, create_wallet, funded_wallet

pytestmark = pytest.mark.usefixtures("worker")


def wait_batch(client, batch_id: str, timeout: float = 30.0) -> dict:
    def completed():
        batch = client.get(f"/batches/{batch_id}").get_json()
        return batch if batch["status"] == "completed" else None
    return wait_for(completed, timeout=timeout, what=f"batch {batch_id} to complete", interval=0.05)


def submit_batch(client, commands_: list[dict], atomic: bool = False, **headers) -> dict:
    r = client.post("/batches", json={"atomic": atomic, "commands": commands_}, headers=headers)
    assert r.status_code == 202, (r.status_code, r.get_json())
    assert r.headers["Location"] == f"/batches/{r.get_json()['id']}"
    return r.get_json()


def jobs_of(client, batch: dict) -> list[dict]:
    return [client.get(f"/jobs/{j}").get_json() for j in batch["job_ids"]]


def count(sql: str, **params) -> int:
    with engine().connect() as conn:
        return conn.execute(text(sql), params).scalar()


def test_an_independent_batch_applies_each_command_as_its_own_job_and_a_rejection_affects_no_other(client):
    a, b = funded_wallet(client, "10.00", "bulk-a"), create_wallet(client, "bulk-b")
    batch = submit_batch(client, [
        {"type": "transfer", "wallet_id": a, "to_wallet_id": b, "amount": "4.00", "reference": "r-1"},
        {"type": "withdraw", "wallet_id": a, "amount": "50.00"},  # more than a has: fails alone
        {"type": "fund", "wallet_id": b, "amount": "1.50"},
        {"type": "withdraw", "wallet_id": b, "amount": "5.50"},  # needs the transfer and the fund before it
    ])
    assert batch["status"] == "queued" and batch["size"] == 4 and len(batch["job_ids"]) == 4
    assert batch["counts"] == {"queued": 4, "running": 0, "succeeded": 0, "failed": 0, "canceled": 0}
    done = wait_batch(client, batch["id"])
    assert done["counts"] == {"queued": 0, "running": 0, "succeeded": 3, "failed": 1, "canceled": 0}
    assert done["completed_at"] is not None and done["job_ids"] == batch["job_ids"]

    jobs = jobs_of(client, batch)
    assert [j["type"] for j in jobs] == ["transfer", "withdraw", "fund", "withdraw"]
    assert [j["status"] for j in jobs] == ["succeeded", "failed", "succeeded", "succeeded"]
    assert jobs[1]["error"]["code"] == "INSUFFICIENT_FUNDS"
    assert jobs[0]["result"]["type"] == "TRANSFER" and jobs[0]["result"]["reference"] == "r-1"
    assert [jobs[0]["result"]["balance_after"], jobs[2]["result"]["balance_after"],
            jobs[3]["result"]["balance_after"]] == ["6.00", "5.50", "0.00"]
    assert balance(client, a) == "6.00" and balance(client, b) == "0.00"
    # Each command is a ledger transaction of its own, and its events carry the batch id.
    with engine().connect() as conn:
        entries = conn.execute(text("SELECT count(*) FROM journal_entries WHERE job_id = ANY(CAST(:ids AS uuid[]))"),
                               {"ids": batch["job_ids"]}).scalar()
        events = conn.execute(text("SELECT payload FROM outbox WHERE aggregatetype = 'wallet' AND payload->>'job_id' = ANY(:ids)"
                                 " ORDER BY id"),
                              {"ids": batch["job_ids"]}).scalars().all()
    assert entries == 3
    assert [e["event_type"] for e in events] == ["TRANSFER_COMPLETED", "WALLET_FUNDED", "WALLET_WITHDRAWN"]
    assert {e["batch_id"] for e in events} == {batch["id"]} and all(e["metadata"] == {} for e in events)


def test_a_chunk_is_dated_by_the_databases_clock(client):
    """One transaction plans and writes a chunk: its entries, postings and jobs' completion share its now(),
    and the day its debits count is that instant's UTC day."""
    a, b = funded_wallet(client, "10.00", "bulk-clock-a"), create_wallet(client, "bulk-clock-b")
    batch = submit_batch(client, [{"type": "transfer", "wallet_id": a, "to_wallet_id": b, "amount": "4.00"},
                                  {"type": "withdraw", "wallet_id": b, "amount": "1.00"}])
    wait_batch(client, batch["id"])
    with engine().connect() as conn:
        rows = conn.execute(text("""
            SELECT e.created_at AS entry_at, p.created_at AS posting_at, j.completed_at, w.debit_day,
                   (j.completed_at AT TIME ZONE 'UTC')::date AS utc_day
              FROM journal_entries e JOIN jobs j ON j.id = e.job_id JOIN postings p ON p.entry_id = e.id
              JOIN wallets w ON w.id = p.wallet_id
             WHERE e.job_id = ANY(CAST(:ids AS uuid[]))"""), {"ids": batch["job_ids"]}).all()
    assert len(rows) == 3
    assert all(r.entry_at == r.posting_at == r.completed_at and r.debit_day == r.utc_day for r in rows)


def test_a_wallet_named_many_times_is_applied_in_command_order(client):
    wallet = funded_wallet(client, "10.00", "bulk-order")
    batch = submit_batch(client, [{"type": "withdraw", "wallet_id": wallet, "amount": "3.00", "reference": f"w{i}"}
                                  for i in range(5)])
    wait_batch(client, batch["id"])
    jobs = jobs_of(client, batch)
    assert [j["status"] for j in jobs] == ["succeeded"] * 3 + ["failed"] * 2
    assert [j["result"]["balance_after"] for j in jobs[:3]] == ["7.00", "4.00", "1.00"]
    with engine().connect() as conn:
        versions = conn.execute(text("SELECT wallet_version FROM postings WHERE wallet_id = :w ORDER BY id"),
                                {"w": wallet}).scalars().all()
    assert versions == [2, 3, 4, 5]  # funded at 2, then the three withdrawals in order, one version each


def test_an_atomic_batch_applies_every_command_in_one_job(client):
    a, b = funded_wallet(client, "10.00", "atomic-a"), create_wallet(client, "atomic-b")
    batch = submit_batch(client, [
        {"type": "transfer", "wallet_id": a, "to_wallet_id": b, "amount": "10.00"},
        {"type": "transfer", "wallet_id": b, "to_wallet_id": a, "amount": "2.50"},
        {"type": "fund", "wallet_id": b, "amount": "0.50"},
    ], atomic=True)
    assert batch["atomic"] and batch["size"] == 3 and len(batch["job_ids"]) == 1
    done = wait_batch(client, batch["id"])
    assert done["counts"]["succeeded"] == 1
    (job,) = jobs_of(client, batch)
    assert job["type"] == "batch" and job["status"] == "succeeded"
    txns = job["result"]["transactions"]
    assert [(t["type"], t["amount"], t["balance_after"]) for t in txns] == [
        ("TRANSFER", "10.00", "0.00"), ("TRANSFER", "2.50", "7.50"), ("FUND", "0.50", "8.00")]
    assert balance(client, a) == "2.50" and balance(client, b) == "8.00"
    with engine().connect() as conn:
        events = conn.execute(text("SELECT payload FROM outbox WHERE aggregatetype = 'wallet' AND payload->>'job_id' = :id"
                                 " ORDER BY id"),
                              {"id": job["id"]}).scalars().all()
    assert len(events) == 3 and len({e["event_id"] for e in events}) == 3  # one event per command, distinct ids
    assert {e["batch_id"] for e in events} == {batch["id"]}


def test_an_atomic_batch_with_one_rejected_command_changes_no_balance_and_names_its_index(client):
    a, b = funded_wallet(client, "10.00", "atomic-c"), create_wallet(client, "atomic-d")
    before = count("SELECT count(*) FROM journal_entries")
    batch = submit_batch(client, [
        {"type": "transfer", "wallet_id": a, "to_wallet_id": b, "amount": "6.00"},
        {"type": "withdraw", "wallet_id": a, "amount": "5.00"},  # only 4.00 left after the first
        {"type": "fund", "wallet_id": b, "amount": "1.00"},
    ], atomic=True)
    wait_batch(client, batch["id"])
    (job,) = jobs_of(client, batch)
    assert job["status"] == "failed" and job["error"]["code"] == "INSUFFICIENT_FUNDS" and job["error"]["index"] == 1
    assert balance(client, a) == "10.00" and balance(client, b) == "0.00"
    assert count("SELECT count(*) FROM journal_entries") == before


def test_any_invalid_item_rejects_the_whole_request_with_errors_keyed_by_index(client):
    a, b = create_wallet(client, "bulk-v1"), create_wallet(client, "bulk-v2")
    batches_before = count("SELECT count(*) FROM batches")
    r = client.post("/batches", json={"commands": [
        {"type": "fund", "wallet_id": a, "amount": "1.00"},
        {"type": "fund", "wallet_id": a, "amount": "-1"},
        {"type": "transfer", "wallet_id": a, "to_wallet_id": a, "amount": "1.00"},
        {"type": "hold", "wallet_id": a, "amount": "1.00"},
        {"type": "withdraw", "wallet_id": a, "amount": "1.00", "to_wallet_id": b},
        {"type": "fund", "wallet_id": a, "amount": "1.001"},
        {"type": {}, "wallet_id": a, "amount": "1.00"},
        "fund",
    ]})
    assert r.status_code == 422 and r.headers["Content-Type"] == "application/problem+json"
    errors = r.get_json()["errors"]
    assert set(errors) == {"commands.1.amount", "commands.2.to_wallet_id", "commands.3.type",
                           "commands.4.to_wallet_id", "commands.6.type", "commands.7.type"}, errors
    r = client.post("/batches", json={"commands": [{"type": "fund", "wallet_id": a, "amount": "1.001"}]})
    assert r.status_code == 422 and set(r.get_json()["errors"]) == {"commands.0.amount"}

    unknown = str(uuid.uuid4())
    r = client.post("/batches", json={"commands": [{"type": "fund", "wallet_id": a, "amount": "1.00"},
                                                   {"type": "transfer", "wallet_id": a, "to_wallet_id": unknown,
                                                    "amount": "1.00"}]})
    assert r.status_code == 404 and r.get_json()["code"] == "WALLET_NOT_FOUND"
    assert set(r.get_json()["errors"]) == {"commands.1.to_wallet_id"}
    # Another tenant's wallet is as unknown as a missing one.
    other = api_client(client.application, "test-key-tenant-b")
    r = other.post("/batches", json={"commands": [{"type": "fund", "wallet_id": a, "amount": "1.00"}]})
    assert r.status_code == 404
    for bad in ({"commands": []}, {"commands": [{"type": "fund", "wallet_id": a, "amount": "1"}] * 1001},
                {"commands": "x"}, {"atomic": "yes", "commands": [{"type": "fund", "wallet_id": a, "amount": "1"}]},
                []):
        assert client.post("/batches", json=bad).status_code == 422, bad
    assert count("SELECT count(*) FROM batches") == batches_before


def test_idempotency_key_and_prefer_wait_cover_the_whole_batch(client):
    wallet = create_wallet(client, "bulk-idem")
    body = {"commands": [{"type": "fund", "wallet_id": wallet, "amount": "2.00"}] * 3}
    key = f"batch-{uuid.uuid4()}"
    r = client.post("/batches", json=body, headers={"Idempotency-Key": key, "Prefer": "wait=10"})
    assert r.status_code == 200 and r.headers["Preference-Applied"] == "wait=10"
    first = r.get_json()
    assert first["status"] == "completed" and first["counts"]["succeeded"] == 3
    again = client.post("/batches", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first
    assert balance(client, wallet) == "6.00"
    other = client.post("/batches", json={"commands": body["commands"][:1]}, headers={"Idempotency-Key": key})
    assert other.status_code == 422 and other.get_json()["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_batch_jobs_are_listed_in_command_order_with_status_filter_and_cursor(client):
    wallet = funded_wallet(client, "5.00", "bulk-list")
    batch = submit_batch(client, [{"type": "withdraw", "wallet_id": wallet, "amount": "1.00"} for _ in range(7)])
    wait_batch(client, batch["id"])
    seen, cursor = [], None
    while True:
        page = client.get(f"/batches/{batch['id']}/jobs", query_string={"limit": 3, **({"cursor": cursor} if cursor
                                                                                          else {})}).get_json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [j["id"] for j in seen] == batch["job_ids"]
    failed = client.get(f"/batches/{batch['id']}/jobs?status=failed").get_json()["items"]
    assert [j["id"] for j in failed] == batch["job_ids"][5:]
    assert client.get(f"/batches/{batch['id']}/jobs?cursor=nope").status_code == 422
    assert client.get(f"/batches/{uuid.uuid4()}").status_code == 404
    assert client.get("/batches/not-a-uuid").get_json()["code"] == "BATCH_NOT_FOUND"
    other = api_client(client.application, "test-key-tenant-b")
    assert other.get(f"/batches/{batch['id']}").status_code == 404
    assert other.get(f"/batches/{batch['id']}/jobs").status_code == 404


def test_a_large_batch_runs_as_execute_batch_tasks_of_at_most_100_jobs(client):
    wallets = [funded_wallet(client, "100.00", f"bulk-big-{i}") for i in range(4)]
    items = [{"type": "transfer", "wallet_id": wallets[i % 4], "to_wallet_id": wallets[(i + 1) % 4], "amount": "0.01"}
             for i in range(250)]
    batch = submit_batch(client, items)
    done = wait_batch(client, batch["id"], timeout=60)
    assert done["counts"]["succeeded"] == 250
    assert sum(Decimal(balance(client, w)) for w in wallets) == Decimal("400.00")
    assert balance(client, wallets[0]) == "99.99"  # sent 63 times, received 62 times
    # Three wallet.execute_batch tasks, their ids derived from the batch and the chunk's first index
    # (the worker logs each line of a task with its task id).
    lines = [json.loads(line) for line in (STATE_DIR / "worker-main.log").read_text(errors="replace").splitlines()
             if line.startswith("{") and '"batch chunk applied"' in line]
    chunks = {line["job_id"]: line["jobs"] for line in lines if line.get("batch_id") == batch["id"]}
    assert chunks == {bulk.chunk_task_id(batch["id"], 0): 100, bulk.chunk_task_id(batch["id"], 100): 100,
                      bulk.chunk_task_id(batch["id"], 200): 50}


def test_concurrent_deliveries_of_one_chunk_apply_each_job_once():
    """Two workers handed the same chunk at once (a redelivery racing the first): each job applies once."""
    wallet = _seed_wallet("500.00")
    items = [(commands.WITHDRAW, commands.Withdraw(wallet_id=wallet, amount=Decimal("1.00")), {}) for _ in range(40)]
    accepted, job_ids = bulk._record(False, items, "tenant-a", f"test-{uuid.uuid4()}", None, None)
    results = []
    threads = [threading.Thread(target=lambda: results.append(batch_executor.execute_chunk(job_ids)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r["succeeded"] for r in results) == 40
    assert count("SELECT count(*) FROM postings WHERE job_id = ANY(CAST(:ids AS uuid[]))", ids=job_ids) == 80
    assert count("SELECT balance FROM wallets WHERE id = :id", id=wallet) == Decimal("460.000")
    # A later delivery of the same task finds every job final and applies nothing.
    assert batch_executor.execute_chunk(job_ids) == {"succeeded": 0, "failed": 0, "already_final": 40}


def _seed_wallet(amount: str) -> str:
    from app.api import create_app
    client = api_client(create_app({"TESTING": True}))
    return funded_wallet(client, amount, f"bulk-race-{time.monotonic_ns()}")



def test_a_canceled_job_of_a_batch_never_runs_and_the_batch_still_completes(client):
    wallet = _seed_wallet("10.00")
    items = [(commands.WITHDRAW, commands.Withdraw(wallet_id=wallet, amount=Decimal("1.00")), {}) for _ in range(3)]
    accepted, job_ids = bulk._record(False, items, "tenant-a", f"test-{uuid.uuid4()}", None, None)
    assert client.post(f"/jobs/{job_ids[1]}/cancel").get_json()["status"] == "canceled"
    assert batch_executor.execute_chunk(job_ids) == {"succeeded": 2, "failed": 0, "already_final": 1}
    batch = client.get(f"/batches/{accepted.batch['id']}").get_json()
    assert batch["status"] == "completed" and batch["counts"]["canceled"] == 1 and batch["counts"]["succeeded"] == 2
    assert balance(client, wallet) == "8.00"


def test_jobs_of_a_batch_whose_tasks_were_lost_are_requeued_in_chunks_by_the_sweeper(beat, client):
    """The publish after the commit can be lost (Redis away): the sweeper finds the queued jobs."""
    wallet = _seed_wallet("10.00")
    items = [(commands.FUND, commands.Fund(wallet_id=wallet, amount=Decimal("1.00")), {}) for _ in range(3)]
    accepted, _ = bulk._record(False, items, "tenant-a", f"test-{uuid.uuid4()}", None, None)
    atomic, _ = bulk._record(True, items, "tenant-a", f"test-{uuid.uuid4()}", None, None)
    for batch in (accepted.batch, atomic.batch):  # never published: only the sweeper can start them
        done = wait_batch(client, batch["id"], timeout=60)
        assert done["counts"]["succeeded"] == len(batch["job_ids"])
    assert balance(client, wallet) == "16.00"

