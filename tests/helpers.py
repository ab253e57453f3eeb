"""Helpers for tests that drive the Wallet API and wait on jobs."""
from __future__ import annotations

import time

FINAL = ("succeeded", "failed")


def wait_job(client, job_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").get_json()
        if job["status"] in FINAL:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not final after {timeout}s: {job}")
        time.sleep(0.02)


def submit(client, path: str, body: dict | None = None, method: str = "POST", **headers) -> dict:
    r = client.open(path, method=method, json=body if body is not None else {}, headers=headers)
    assert r.status_code in (200, 202), (r.status_code, r.get_json())
    return r.get_json()


def run(client, path: str, body: dict | None = None, **headers) -> dict:
    """Submit a command and wait until its job is final."""
    return wait_job(client, submit(client, path, body, **headers)["id"])


def create_wallet(client, user_id: str = "user-1", currency: str = "USD") -> str:
    job = run(client, "/wallets", {"user_id": user_id, "currency": currency})
    assert job["status"] == "succeeded", job
    return job["result"]["id"]


def funded_wallet(client, amount: str, user_id: str = "user-1", currency: str = "USD") -> str:
    wallet_id = create_wallet(client, user_id, currency)
    job = run(client, f"/wallets/{wallet_id}/fund", {"amount": amount})
    assert job["status"] == "succeeded", job
    return wallet_id


def balance(client, wallet_id: str) -> str:
    return client.get(f"/wallets/{wallet_id}").get_json()["balance"]
