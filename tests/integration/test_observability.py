"""Operations: metrics that move, Flower behind basic auth, workers sharing load, graceful SIGTERM."""
import json
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from app.adapters.db import engine
from app.config import settings
from tests.conftest import STATE_DIR, api_client, start_worker, wait_for
from tests.helpers import balance, create_wallet, run, wait_job
from tests.integration.test_concurrency import submit_all, wait_all_final

pytestmark = pytest.mark.usefixtures("worker")


def scrape(app) -> dict[tuple, float]:
    body = api_client(app, "test-key-admin").get("/metrics")
    assert body.status_code == 200 and body.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(body.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_parse_as_one_family_per_name_with_one_content_type(wallet_app):
    """prometheus_client's own parser: a name declared twice (a counter's family and a gauge) would merge them."""
    r = api_client(wallet_app, "test-key-admin").get("/metrics")
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = list(text_string_to_metric_families(r.get_data(as_text=True)))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    kinds = {f.name: f.type for f in families}
    assert kinds.get("wallet_history_dead_letters", "counter") == "counter"  # rendered once a dead letter is counted
    assert kinds["wallet_history_dead_letters_stored"] == "gauge"


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def settled_scrape(app) -> dict[tuple, float]:
    """A scrape once earlier jobs' counts are all in Redis (workers send them about once a second)."""
    def jobs(samples):
        return {k: v for k, v in samples.items() if k[0].startswith("wallet_jobs_completed")}

    interval = settings().metrics_flush_interval_s
    previous = scrape(app)
    deadline = time.monotonic() + 10 * interval + 5
    while time.monotonic() < deadline:
        time.sleep(interval + 0.3)
        current = scrape(app)
        if jobs(current) == jobs(previous):
            return current
        previous = current
    raise AssertionError("wallet_jobs_completed_total kept moving with no command running")


def test_metrics_are_present_and_move_after_commands(wallet_app, client):
    wallet_id = create_wallet(client)
    before = settled_scrape(wallet_app)
    for _ in range(3):
        assert run(client, f"/wallets/{wallet_id}/fund", {"amount": "1.00"})["status"] == "succeeded"
    assert run(client, f"/wallets/{wallet_id}/withdraw", {"amount": "9.00"})["status"] == "failed"

    def delta(samples, name, **labels):
        return value(samples, name, **labels) - value(before, name, **labels)

    def counted():
        # The jobs are final now; their counts reach Redis with the worker's next metrics flush.
        samples = scrape(wallet_app)
        if (delta(samples, "wallet_jobs_completed_total", type="fund", status="succeeded", code="") >= 3
                and delta(samples, "wallet_jobs_completed_total", type="withdraw", status="failed",
                          code="INSUFFICIENT_FUNDS") >= 1
                and delta(samples, "wallet_job_duration_seconds_count", type="fund") >= 3):
            return samples
        return None

    after = wait_for(counted, timeout=settings().metrics_flush_interval_s + 5,
                     what="the jobs in the cluster-wide metrics", interval=0.2)
    assert value(after, "wallet_commands_accepted_total", type="fund") - \
        value(before, "wallet_commands_accepted_total", type="fund") == 3
    assert value(after, "wallet_jobs_completed_total", type="fund", status="succeeded", code="") - \
        value(before, "wallet_jobs_completed_total", type="fund", status="succeeded", code="") == 3
    assert value(after, "wallet_jobs_completed_total", type="withdraw", status="failed",
                 code="INSUFFICIENT_FUNDS") - value(before, "wallet_jobs_completed_total", type="withdraw",
                                                     status="failed", code="INSUFFICIENT_FUNDS") == 1
    assert value(after, "wallet_job_duration_seconds_count", type="fund") - \
        value(before, "wallet_job_duration_seconds_count", type="fund") == 3
    assert value(after, "wallet_job_duration_seconds_bucket", type="fund", le="+Inf") == \
        value(after, "wallet_job_duration_seconds_count", type="fund")
    assert value(after, "wallet_http_requests_total", route="/wallets/<wallet_id>/fund", method="POST",
                 status="202") >= 3
    names = {name for name, _ in after}
    assert {"wallet_outbox_backlog", "wallet_outbox_oldest_unpublished_age_seconds", "wallet_queue_depth",
            "wallet_jobs_unfinished", "wallet_optimistic_lock_conflicts_total"} <= names
    assert api_client(wallet_app).get("/metrics").status_code == 403  # not an admin key


def test_ready_reports_every_dependency(wallet_app):
    body = api_client(wallet_app, None).get("/ready").get_json()
    assert body["checks"] == {"postgres": "ok", "redis": "ok", "kafka": "ok", "workers": "ok"}
    # Whether events flow is reported beside the checks, without changing the status.
    relay, history = body["pipeline"]["relay"], body["pipeline"]["history"]
    assert relay["status"] in ("ok", "stalled") and relay["oldest_unpublished_age_s"] is not None
    assert history["status"] in ("ok", "stalled", "absent") and history["processes"] >= 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, auth: str | None = None) -> int | None:
    headers = {"Authorization": "Basic " + b64encode(auth.encode()).decode()} if auth else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def test_flower_answers_401_without_credentials_and_200_with_them(processes):
    port = free_port()
    proc = processes.start([sys.executable, "-m", "celery", "-A", "tasks", "flower", f"--port={port}",
                            "--address=127.0.0.1", "--basic-auth=ops:s3cret"], log_name="flower")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_status(url + "/") is not None, timeout=30, what="Flower to listen")
        assert http_status(url + "/") == 401
        assert http_status(url + "/", "ops:wrong") == 401
        assert http_status(url + "/api/workers", None) == 401
        assert http_status(url + "/", "ops:s3cret") == 200
        assert http_status(url + "/api/workers", "ops:s3cret") == 200
    finally:
        processes.stop(proc)


def executed_jobs(log_name: str) -> set[str]:
    """Job ids a worker's JSON log says it made final."""
    done = set()
    for line in (STATE_DIR / f"{log_name}.log").read_text(errors="replace").splitlines():
        if line.startswith("{") and '"job ' in line:
            entry = json.loads(line)
            if entry.get("message", "").startswith("job ") and entry.get("job_id"):
                done.add(entry["job_id"])
    return done


def test_two_workers_share_the_load(processes, wallet_app, client):
    (STATE_DIR / "worker-second.log").unlink(missing_ok=True)
    second = start_worker(processes, "worker-second", concurrency=2)
    try:
        wallets = [create_wallet(client) for _ in range(4)]
        job_ids = submit_all(wallet_app, [(f"/wallets/{w}/fund", {"amount": "1.00"}) for w in wallets] * 15)
        jobs = wait_all_final(job_ids)
        assert all(j["status"] == "succeeded" for j in jobs.values())
        by_second = executed_jobs("worker-second") & set(job_ids)
        by_main = executed_jobs("worker-main") & set(job_ids)
        assert by_second and by_main, (len(by_second), len(by_main))
        assert by_second | by_main == set(job_ids) and not by_second & by_main
    finally:
        processes.stop(second)


def test_sigterm_to_a_busy_worker_loses_no_job(processes, client):
    victim = start_worker(processes, "worker-sigterm", concurrency=2)
    wallet_id = create_wallet(client)
    with engine().connect() as blocker:
        blocker.begin()
        blocker.execute(text("SELECT 1 FROM wallets WHERE id = :id FOR UPDATE"), {"id": wallet_id})
        job_ids = [client.post(f"/wallets/{wallet_id}/fund", json={"amount": "1.00"}).get_json()["id"]
                   for _ in range(12)]

        def victim_is_busy():
            with engine().connect() as conn:
                names = conn.execute(text("SELECT application_name FROM pg_stat_activity "
                                          "WHERE wait_event_type = 'Lock'")).scalars().all()
            pids = {int(n.rsplit(":", 1)[1]) for n in names if n.startswith("wallet:")}
            import psutil

            return pids & {c.pid for c in psutil.Process(victim.pid).children(recursive=True)}

        wait_for(victim_is_busy, timeout=20, what="the victim worker to be mid-task")
        victim.send_signal(signal.SIGTERM)  # warm shutdown: finish running tasks, hand back the rest
        time.sleep(0.5)
        blocker.rollback()
    victim.wait(timeout=30)
    for job_id in job_ids:
        assert wait_job(client, job_id, timeout=60)["status"] == "succeeded"
    assert balance(client, wallet_id) == "12.00"
    with engine().connect() as conn:
        entries = conn.execute(text("SELECT count(*) FROM journal_entries WHERE job_id = ANY(CAST(:ids AS uuid[]))"),
                               {"ids": job_ids}).scalar()
    assert entries == 12
