"""Commands are Celery tasks as operators know them: named for the command, task id = job id, in Flower,
found by `inspect query_task` while they run, cancelable while queued."""
import base64
import json
import sys
import urllib.request
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text

from app.adapters import command_queue
from app.adapters.db import engine
from app.domain import commands
from app.services import submission
from tests.conftest import api_client, wait_for
from tests.helpers import balance, create_wallet, funded_wallet, run, wait_job

pytestmark = pytest.mark.usefixtures("worker")


def _record(command_type: str, command) -> str:
    """A durable job whose task was not published (yet)."""
    return str(submission.record_job(command_type, command, "tenant-a", f"test-{uuid.uuid4()}", None, None).job["id"])


def test_every_command_type_is_a_task_of_its_own_name_on_the_commands_queue():
    from tasks import celery_app

    for job_type in commands.COMMAND_CLASSES:
        name = command_queue.task_name(job_type)
        assert name == f"wallet.{job_type}" and name in celery_app.tasks
        assert celery_app.amqp.router.route({}, name)["queue"].name == "commands"
    assert celery_app.amqp.router.route({}, "wallet.maintenance.expire_holds")["queue"].name == "maintenance"
    # No periodic task more often than every 10 s: Flower's task list shows commands, not upkeep.
    assert min(entry["schedule"] for entry in celery_app.conf.beat_schedule.values()) >= 10


def test_a_running_command_is_found_by_inspect_query_task_under_its_job_id(client):
    from tasks import celery_app

    wallet_id = create_wallet(client)
    with engine().connect() as blocker:
        blocker.begin()
        blocker.execute(text("SELECT 1 FROM wallets WHERE id = :id FOR UPDATE"), {"id": wallet_id})
        job_id = client.post(f"/wallets/{wallet_id}/fund", json={"amount": "2.00"}).get_json()["id"]

        def running():  # received ("reserved") first, then "active" while its statement waits on our lock
            replies = celery_app.control.inspect(timeout=1.0).query_task(job_id) or {}
            return [info for reply in replies.values() for state, info in reply.values() if state == "active"]

        (info,) = wait_for(running, timeout=20, what="the worker to report the task running")
        assert info["name"] == "wallet.fund" and info["id"] == job_id and info["args"] == [job_id]
        blocker.rollback()
    assert wait_job(client, job_id)["status"] == "succeeded"


def test_flower_shows_a_fund_command_under_its_job_id(processes, client):
    from scripts.devstack import pick_port

    port = pick_port()
    flower = processes.start([sys.executable, "-m", "celery", "-A", "tasks", "flower", f"--port={port}",
                              "--address=127.0.0.1", "--basic-auth=ops:flower-test"], log_name="flower")
    auth = {"Authorization": "Basic " + base64.b64encode(b"ops:flower-test").decode()}

    def get(path: str):
        try:
            with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=auth),
                                        timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            return None

    def flower_up():
        return bool(get("/api/workers?refresh=1"))

    def events_flowing():
        """Flower switches task events on in the running workers; they reach it a few seconds later.

        The probe is the task of a fund job that does not exist: the worker runs it and finds nothing to do.
        """
        probe = str(uuid.uuid4())
        command_queue.enqueue(probe, commands.FUND)
        try:
            return wait_for(lambda: get(f"/api/task/info/{probe}"), timeout=2, what="the probe", interval=0.2)
        except AssertionError:
            return None

    try:
        wait_for(flower_up, timeout=60, what="Flower and its view of the workers", interval=0.5)
        wait_for(events_flowing, timeout=60, what="task events from the workers to Flower", interval=0.1)
        wallet_id = create_wallet(client)
        job = run(client, f"/wallets/{wallet_id}/fund", {"amount": "1.00"})

        info = wait_for(lambda: get(f"/api/task/info/{job['id']}"), timeout=30, what="Flower to know the task", interval=0.5)
        assert info["name"] == "wallet.fund" and info["uuid"] == job["id"], info
        assert info["state"] == "SUCCESS" and job["id"] in info["args"]
        assert "1.00" not in json.dumps(info.get("args")) + json.dumps(info.get("kwargs"))  # ids only
    finally:
        processes.stop(flower)


def test_a_queued_job_can_be_canceled_and_never_touches_the_ledger(client, wallet_app):
    wallet_id = funded_wallet(client, "10.00", user_id="cancel")
    job_id = _record(commands.WITHDRAW, commands.Withdraw(wallet_id, Decimal("4.00")))
    r = client.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.get_json()["status"] == "canceled", r.get_json()
    assert r.get_json()["completed_at"] is not None and "Retry-After" not in client.get(f"/jobs/{job_id}").headers
    # Its task, delivered anyway (revoked where the broker allows), does nothing.
    command_queue.enqueue(job_id, commands.WITHDRAW)
    other = run(client, f"/wallets/{wallet_id}/fund", {"amount": "1.00"})  # a later task has run by then
    assert other["status"] == "succeeded"
    assert client.get(f"/jobs/{job_id}").get_json()["status"] == "canceled"
    assert balance(client, wallet_id) == "11.00"
    with engine().connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM journal_entries WHERE job_id = :id"), {"id": job_id}).scalar() == 0

    again = client.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409 and again.get_json()["code"] == "JOB_NOT_CANCELABLE"
    done = client.post(f"/jobs/{other['id']}/cancel")
    assert done.status_code == 409 and done.get_json()["code"] == "JOB_NOT_CANCELABLE"
    assert "succeeded" in done.get_json()["detail"]


def test_cancel_is_scoped_to_the_tenant_and_needs_the_write_scope(client, wallet_app):
    wallet_id = create_wallet(client, user_id="cancel-scope")
    job_id = _record(commands.FUND, commands.Fund(wallet_id, Decimal("1.00")))
    assert api_client(wallet_app, "test-key-tenant-b").post(f"/jobs/{job_id}/cancel").status_code == 404
    assert api_client(wallet_app, "test-key-read-only").post(f"/jobs/{job_id}/cancel").status_code == 403
    assert client.post(f"/jobs/{uuid.uuid4()}/cancel").get_json()["code"] == "JOB_NOT_FOUND"
    assert client.post("/jobs/not-a-uuid/cancel").status_code == 404
    assert client.post(f"/jobs/{job_id}/cancel").get_json()["status"] == "canceled"


def test_canceled_jobs_are_counted_in_the_metrics(client, wallet_app):
    from prometheus_client.parser import text_string_to_metric_families

    from app.observability import metrics

    wallet_id = create_wallet(client, user_id="cancel-metrics")
    job_id = _record(commands.FUND, commands.Fund(wallet_id, Decimal("1.00")))
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    metrics.flush()

    def canceled_count():
        body = api_client(wallet_app, "test-key-admin").get("/metrics").get_data(as_text=True)
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if (sample.name == "wallet_jobs_completed_total" and sample.labels.get("status") == "canceled"
                        and sample.labels.get("type") == "fund"):
                    return sample.value
        return 0

    assert wait_for(canceled_count, timeout=10, what="the canceled job in the metrics") >= 1
