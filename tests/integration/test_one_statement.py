"""A fund, withdraw or transfer is one autocommit statement: all of it applies, or none of it.

Its optimistic checks (each wallet still at the version read, the job still
running) live inside that statement (`expect_rows`, migration 0007); a failed
check aborts the statement, so no wallet, journal, outbox or job row changes.
"""
import uuid
from contextlib import contextmanager
from decimal import Decimal

import pytest
from sqlalchemy import text

from app.adapters.db import autocommit, engine
from app.adapters.store import WalletStore
from app.domain import commands
from app.domain.errors import ConcurrencyConflict
from app.services import executor, handlers
from tests.integration.test_exactly_once import entries_for, job_row, record_job


def _funded_wallet(amount: str) -> str:
    wallet_id = str(uuid.uuid4())
    assert executor.execute_job(record_job(commands.CREATE_WALLET,
                                           commands.CreateWallet(wallet_id, "one", "USD"))).status == "succeeded"
    if Decimal(amount):
        assert executor.execute_job(record_job(commands.FUND,
                                               commands.Fund(wallet_id, Decimal(amount)))).status == "succeeded"
    return wallet_id


def _wallet(wallet_id: str) -> tuple[Decimal, int]:
    with engine().connect() as conn:
        return tuple(conn.execute(text("SELECT balance, version FROM wallets WHERE id = :id"),
                                  {"id": wallet_id}).one())


def _outbox_rows(job_id: str) -> int:
    with engine().connect() as conn:
        return conn.execute(text("SELECT count(*) FROM outbox WHERE aggregatetype = 'wallet'"
                                 " AND payload->>'job_id' = :id"), {"id": job_id}).scalar()


def _bump_version(wallet_id: str) -> None:
    """Another worker changed the wallet (same balance, next version)."""
    with engine().begin() as conn:
        conn.execute(text("UPDATE wallets SET version = version + 1 WHERE id = :id"), {"id": wallet_id})


def _claimed_transfer(source: str, destination: str, amount: str):
    job_id = record_job(commands.TRANSFER, commands.Transfer(source, destination, Decimal(amount)))
    with autocommit() as conn:
        return WalletStore(conn).claim_job(job_id)


@contextmanager
def _staged_transfer():
    """A claimed transfer of 4.00 from a wallet holding 10.00, its writes kept by a one-statement store, not sent."""
    source, destination = _funded_wallet("10.00"), _funded_wallet("0.00")
    job = _claimed_transfer(source, destination, "4.00")
    with autocommit() as conn:
        store = WalletStore(conn, one_statement=True)
        handlers.transfer(store, job, commands.from_payload(job.type, job.payload))
        yield source, destination, job, store


def test_a_wallet_changed_after_it_was_read_aborts_the_whole_statement(stack):
    with _staged_transfer() as (source, destination, job, store):
        _bump_version(destination)  # the second wallet's check fails after the first wallet's UPDATE ran
        with pytest.raises(ConcurrencyConflict, match=destination):
            store.finish_job(job.id, status="succeeded", result={})
    assert _wallet(source) == (Decimal("10.00"), 2)
    assert _wallet(destination) == (Decimal("0.00"), 2)
    assert entries_for(job.id) == 0 and _outbox_rows(job.id) == 0
    assert job_row(job.id)["status"] == "running"
    # Run again, it reads afresh and applies once.
    assert executor.run_claimed(job).status == "succeeded"
    assert entries_for(job.id) == 1 and _wallet(destination)[0] == Decimal("4.00")


def test_a_job_final_meanwhile_leaves_the_wallets_alone(stack):
    with _staged_transfer() as (source, _destination, job, store):
        with engine().begin() as other:  # another delivery finished it first (failed: the audit needs no entry)
            other.execute(text("UPDATE jobs SET status = 'failed', completed_at = now() WHERE id = :id"),
                          {"id": job.id})
        assert store.finish_job(job.id, status="succeeded", result={}) is None
    assert _wallet(source) == (Decimal("10.00"), 2)
    assert entries_for(job.id) == 0 and _outbox_rows(job.id) == 0


def test_a_wallet_that_moved_after_its_read_costs_one_conflict_and_a_fresh_read(stack, monkeypatch):
    source, destination = _funded_wallet("10.00"), _funded_wallet("0.00")
    job = _claimed_transfer(source, destination, "4.00")
    read = WalletStore.load_wallets
    moved = []

    def read_then_move(self, ids):
        wallets = read(self, ids)
        if not moved:  # another command commits on the source between this read and the write
            moved.append(True)
            _bump_version(source)
        return wallets

    monkeypatch.setattr(WalletStore, "load_wallets", read_then_move)
    outcome = executor.run_claimed(job)
    assert (outcome.status, outcome.conflicts) == ("succeeded", 1)
    assert _wallet(source) == (Decimal("6.00"), 4) and _wallet(destination) == (Decimal("4.00"), 2)
    assert entries_for(job.id) == 1 and _outbox_rows(job.id) == 1


def test_a_one_statement_command_cannot_send_a_write_on_its_own(stack):
    with autocommit() as conn:
        store = WalletStore(conn, one_statement=True)
        with pytest.raises(RuntimeError, match="one-statement"):
            store.add_reversed(str(uuid.uuid4()), Decimal("1"), Decimal("0"))
