"""schemathesis, run as a user runs it, over every operation of the Wallet API served by gunicorn.

Every default check, every phase (examples, coverage, fuzzing, stateful), a
fixed seed and a bounded number of examples; schemathesis.toml at the repo
root adds the state-rule check (tests/schemathesis_hooks.py). It must find
nothing, and the ledger audit must still pass after the thousands of requests
it sent. The History API gets the same run in tests/history/.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.services.audit import run_audit
from scripts.devstack import pick_port
from tests.conftest import REPO, TENANT_A_KEY, wait_for
from tests.integration.test_readme import answers

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
SEED = 20261128


def run_schemathesis(base_url: str, examples: int, min_cases: int) -> None:
    """`schemathesis run` from the repo root (so it reads schemathesis.toml); fails on any finding."""
    run = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{base_url}/openapi.json", "-H", f"Authorization: Bearer {TENANT_A_KEY}",
         "--max-examples", str(examples), "--seed", str(SEED), "--no-color"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    summary = run.stdout[run.stdout.rfind("SUMMARY"):]
    print(summary)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    generated = re.search(r"(\d+) generated", summary)
    assert generated and int(generated.group(1)) >= min_cases, summary


@pytest.fixture()
def wallet_api_url(processes, worker):
    port = pick_port()
    processes.start([sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "--bind",
                     f"127.0.0.1:{port}", "--workers", "2", "app.api:create_app()"], log_name="schemathesis-api")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: answers(url + "/health"), timeout=30, what=f"the Wallet API on {url}")
    return url


def test_schemathesis_finds_nothing_on_the_wallet_api(wallet_api_url):
    run_schemathesis(wallet_api_url, examples=40, min_cases=1500)
    report = run_audit()
    assert report.ok, report.problems
