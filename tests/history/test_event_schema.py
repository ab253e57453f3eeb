"""Every Kafka event type, published through the real stack, matches docs/events.schema.json."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from kafka import KafkaConsumer, TopicPartition

from conftest import wait_caught_up
from tests.conftest import wait_for
from tests.helpers import create_wallet, funded_wallet, run

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "events.schema.json").read_text())


def _json_or_none(value: bytes):
    try:
        return json.loads(value)
    except ValueError:  # the dead-letter tests publish records that are not JSON
        return None


def _all_events(bootstrap: str, topic: str, json_only: bool = False) -> list[dict]:
    from history.ops import _end_offsets

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    ends = _end_offsets(consumer, tps)
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    values = []
    while sum(consumer.position(tp) for tp in tps) < sum(ends.values()):
        for records in consumer.poll(timeout_ms=1000).values():
            values += [_json_or_none(r.value) if json_only else json.loads(r.value) for r in records]
    consumer.close()
    return [v for v in values if isinstance(v, dict)] if json_only else values


def test_every_event_type_read_back_from_kafka_matches_the_published_schema(pipeline, beat, stack, client):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    a, b = funded_wallet(client, "100.00", "schema-a"), create_wallet(client, "schema-b")
    tx = run(client, f"/wallets/{a}/transfer", {"to_wallet_id": b, "amount": "10.00"})["result"]["id"]
    run(client, f"/wallets/{a}/withdraw", {"amount": "1.00", "reference": "out"})
    run(client, f"/transactions/{tx}/reverse", {"amount": "2.00", "reason": "refund"})
    hold = run(client, f"/wallets/{a}/holds", {"amount": "5.00"})["result"]["id"]
    run(client, f"/holds/{hold}/capture", {"amount": "3.00", "to_wallet_id": b})
    voided = run(client, f"/wallets/{a}/holds", {"amount": "1.00"})["result"]["id"]
    run(client, f"/holds/{voided}/void")
    run(client, f"/wallets/{a}/holds", {"amount": "1.00", "expires_in_seconds": 1})
    client.put(f"/wallets/{a}/limits", json={"daily_debit": "50.00"}, headers={"Prefer": "wait=5"})
    run(client, f"/wallets/{a}/freeze", {"reason": "check"})
    run(client, f"/wallets/{a}/unfreeze")
    c = create_wallet(client, "schema-c")
    run(client, f"/wallets/{c}/close")
    r = client.post("/batches", headers={"Prefer": "wait=5"},
                    json={"commands": [{"type": "fund", "wallet_id": b, "amount": "1.00"}]})
    assert r.get_json()["status"] == "completed"
    assert run(client, f"/wallets/{b}/withdraw", {"amount": "999999.00"})["status"] == "failed"  # JOB_FAILED

    def expired():  # beat's sweeper records the expiry within a few seconds
        events = _all_events(stack["KAFKA_BOOTSTRAP_SERVERS"], stack["KAFKA_TOPIC"], json_only=True)
        return events if any(e["event_type"] == "HOLD_EXPIRED" and e.get("wallet_id") == a for e in events) else None

    wait_for(lambda: (wait_caught_up() or True) and expired(), timeout=40, what="HOLD_EXPIRED on Kafka")
    events = _all_events(stack["KAFKA_BOOTSTRAP_SERVERS"], stack["KAFKA_TOPIC"], json_only=True)  # not the dead-letter tests' garbage
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for event in events:
        errors = sorted(validator.iter_errors(event), key=str)
        assert not errors, (event, [e.message for e in errors][:3])
    wallet_events = [e for e in events if "wallet_id" in e]
    mine = {e["event_type"] for e in wallet_events if e["wallet_id"] in (a, b, c)}
    jobs = {e["event_type"] for e in events if e["event_type"].startswith("JOB_") and e["tenant_id"] == "tenant-a"}
    assert mine | jobs == set(SCHEMA["$defs"]), set(SCHEMA["$defs"]) - mine - jobs
    assert any(e["batch_id"] for e in wallet_events if e["wallet_id"] == b)
