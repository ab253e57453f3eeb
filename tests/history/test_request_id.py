"""One request id finds a command everywhere: response, job, ledger, Kafka headers, history row, logs."""
import json
import time
import uuid

from kafka import TopicPartition
from sqlalchemy import text

from app.adapters import kafka as kafka_clients
from app.adapters.db import engine
from app.config import settings
from tests.conftest import STATE_DIR, wait_for
from tests.helpers import create_wallet, wait_job
from tests.history.conftest import history_rows


def kafka_message_of(job_id: str, timeout: float = 20):
    """The event message a job produced, read from the topic without a consumer group."""
    consumer = kafka_clients.admin_consumer(consumer_timeout_ms=1000)
    try:
        partitions = [TopicPartition(settings().kafka_topic, p)
                      for p in consumer.partitions_for_topic(settings().kafka_topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in consumer:
                try:
                    event = json.loads(message.value)
                except ValueError:
                    continue  # another test's garbage message (dead-letter test)
                if isinstance(event, dict) and event.get("job_id") == job_id:
                    return message
        raise AssertionError(f"no Kafka message for job {job_id}")
    finally:
        consumer.close()


def test_a_request_id_is_carried_from_the_request_to_every_record(pipeline, client):
    wallet_id = create_wallet(client)
    request_id = f"trace-{uuid.uuid4()}"
    response = client.post(f"/wallets/{wallet_id}/fund", json={"amount": "4.00"},
                           headers={"X-Request-ID": request_id})
    assert response.headers["X-Request-ID"] == request_id
    job = wait_job(client, response.get_json()["id"])
    assert job["request_id"] == request_id
    with engine().connect() as conn:
        ledger = conn.execute(text("SELECT request_id FROM journal_entries WHERE job_id = :j"),
                              {"j": job["id"]}).scalar()
    assert ledger == request_id
    message = kafka_message_of(job["id"])
    assert dict(message.headers)["request_id"] == request_id.encode()
    assert json.loads(message.value)["request_id"] == request_id
    funded = wait_for(lambda: [r for r in history_rows(wallet_id) if r["event_type"] == "WALLET_FUNDED"],
                      timeout=30, what="the funding to reach the history")
    assert [r["request_id"] for r in funded] == [request_id]
    worker_log = (STATE_DIR / "worker-main.log").read_text(errors="replace")
    lines = [json.loads(line) for line in worker_log.splitlines() if request_id in line and line.startswith("{")]
    assert any(entry["job_id"] == job["id"] and entry["message"] == "job succeeded" for entry in lines)
