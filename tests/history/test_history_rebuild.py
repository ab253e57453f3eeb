"""Rebuild and compare: the read model against the event journal and the ledger, after a bank workload."""
from __future__ import annotations

import random
import subprocess
import sys
import threading

from sqlalchemy import text

from app.adapters.db import engine
from conftest import history_rows, wait_caught_up, wallet_client
from tests.conftest import REPO
from tests.helpers import funded_wallet, run


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_rebuild_reproduces_consumption_and_compare_finds_no_difference_after_a_bank_test(pipeline, client):
    wallets = [funded_wallet(client, "100.00", user_id=f"bank-{i}") for i in range(6)]
    clients = [wallet_client() for _ in range(4)]
    outcomes = []

    def bank(c, seed):
        rng = random.Random(seed)
        for _ in range(10):
            src, dst = rng.sample(wallets, 2)
            outcomes.append(run(c, f"/wallets/{src}/transfer",
                                {"to_wallet_id": dst, "amount": f"{rng.randint(1, 4000) / 100:.2f}"})["status"])

    threads = [threading.Thread(target=bank, args=(c, i)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "succeeded" in outcomes
    wait_caught_up()
    consumed = history_rows()

    compared = cli("history", "compare")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert "no differences" in compared.stdout

    rebuilt = cli("history", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt history from" in rebuilt.stdout and "event/s" in rebuilt.stderr  # tqdm's bar
    assert history_rows() == consumed

    status = cli("history", "status")
    assert status.returncode == 0, status.stderr
    assert "outbox: 0 unpublished" in status.stdout and "partition" in status.stdout


def test_compare_prints_every_difference_and_rebuild_repairs_them(pipeline, client):
    w = funded_wallet(client, "10.00", user_id="tamper")
    wait_caught_up()
    with engine().begin() as conn:
        conn.execute(text("DELETE FROM history_events WHERE wallet_id = :w AND event_type = 'WALLET_FUNDED'"), {"w": w})
        conn.execute(text("UPDATE history_events SET balance_after = 99 WHERE wallet_id = :w"), {"w": w})
    compared = cli("history", "compare")
    assert compared.returncode == 1
    lines = [line for line in compared.stdout.splitlines() if w in line]
    assert any(line.startswith("missing") and "WALLET_FUNDED" in line for line in lines), compared.stdout
    assert any(line.startswith("differs") and "balance_after" in line for line in lines), compared.stdout
    assert any("posting without its history row" in line for line in lines), compared.stdout

    assert cli("history", "rebuild", "--no-progress").returncode == 0
    assert [(r["event_type"], str(r["balance_after"])) for r in history_rows(w)] == [
        ("WALLET_CREATED", "0.000"), ("WALLET_FUNDED", "10.000")]
    assert cli("history", "compare").returncode == 0


def test_migrations_match_the_tables(stack):
    """`alembic check`: the history tables' metadata and migration 0002 agree (as the others do)."""
    checked = subprocess.run([sys.executable, "-m", "alembic", "check"], cwd=REPO, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
