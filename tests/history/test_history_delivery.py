"""At-least-once delivery, exactly-once effect: order, redelivery, crashes, poison messages, broker outages."""
from __future__ import annotations

import json
import threading
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import text

from app.adapters.db import engine
from conftest import Tansu, history_rows, outbox_backlog, paused, wait_caught_up, wallet_client
from tests.conftest import wait_for
from tests.faults import crash_after_db_commit
from tests.helpers import create_wallet, funded_wallet, run


def _topic_messages(bootstrap: str, topic: str) -> list:
    """Every message on the topic, partition by partition, in offset order."""
    from history.ops import _end_offsets

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    ends = _end_offsets(consumer, tps)
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    messages = []
    while sum(consumer.position(tp) for tp in tps) < sum(ends.values()):
        for records in consumer.poll(timeout_ms=1000).values():
            messages += records
    consumer.close()
    return messages


def test_a_wallets_events_reach_kafka_in_version_order_under_concurrent_commands(pipeline, stack, client):
    standby = pipeline.start_relay()  # a hot standby must not disturb the order
    hot = funded_wallet(client, "1000.00", user_id="hot")
    others = [funded_wallet(client, "1000.00", user_id=f"other-{i}") for i in range(3)]
    jobs = []

    clients = [wallet_client() for _ in range(6)]  # built here: building Flask apps in threads is not safe

    def hammer(i):
        c = clients[i]
        for n in range(6):
            if (i + n) % 3 == 0:
                jobs.append(run(c, f"/wallets/{hot}/fund", {"amount": "1.00"}))
            elif (i + n) % 3 == 1:
                jobs.append(run(c, f"/wallets/{hot}/transfer", {"to_wallet_id": others[i % 3], "amount": "2.00"}))
            else:
                jobs.append(run(c, f"/wallets/{others[i % 3]}/transfer", {"to_wallet_id": hot, "amount": "3.00"}))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(j["status"] == "succeeded" for j in jobs)
    wait_caught_up()
    pipeline.stop(standby)

    keyed = [json.loads(m.value) for m in _topic_messages(stack["KAFKA_BOOTSTRAP_SERVERS"], stack["KAFKA_TOPIC"])
             if m.key == hot.encode()]
    versions = [e["wallet_version"] for e in keyed]
    assert len(versions) == 1 + 1 + 24  # created, funded, then the 24 commands it sends or is funded by
    assert versions == sorted(set(versions)), versions  # strictly increasing: in order, no duplicate
    headers = dict(_topic_messages(stack["KAFKA_BOOTSTRAP_SERVERS"], stack["KAFKA_TOPIC"])[0].headers)
    assert set(headers) == {"event_type", "request_id"}
    # The hot wallet's own history has every version once, 1..n.
    rows = history_rows(hot)
    assert [r["wallet_version"] for r in rows] == list(range(1, 2 + 36 + 1))


def _snapshot() -> list[dict]:
    return history_rows()


def test_messages_delivered_again_leave_history_unchanged(pipeline, stack, client):
    a, b = funded_wallet(client, "50.00", "dup-a"), create_wallet(client, "dup-b")
    assert run(client, f"/wallets/{a}/transfer", {"to_wallet_id": b, "amount": "20.00"})["status"] == "succeeded"
    wait_caught_up()
    before = _snapshot()
    total = len(before)

    # 1. The relay publishes everything again (as after a crash before marking rows published).
    with engine().begin() as conn:
        republished = conn.execute(text("UPDATE outbox SET published_at = NULL")).rowcount
    assert republished > 0
    wait_caught_up()
    assert _snapshot() == before

    # 2. A consumer group whose offsets start from the beginning replays the whole topic.
    group = f"replay-{uuid.uuid4().hex[:6]}"
    replayer = pipeline.start_history_worker(KAFKA_GROUP_ID=group)
    wait_caught_up(group_id=group)
    pipeline.stop(replayer)
    assert _snapshot() == before and len(before) == total
    log = (pipeline.log_path(replayer)).read_text()
    assert "already present" in log  # it did read and re-apply the old messages


def test_a_worker_killed_between_db_commit_and_offset_commit_leaves_no_duplicate(pipeline, stack, client):
    """A group of its own (fresh groups join tansu fastest); the session's workers pause meanwhile."""
    wallet = create_wallet(client, "crash")
    wait_caught_up()
    for proc in list(pipeline.history_workers):
        pipeline.stop(proc)
    group = f"crash-{uuid.uuid4().hex[:6]}"
    try:
        for amount in ("1.00", "2.00", "3.00"):
            assert run(client, f"/wallets/{wallet}/fund", {"amount": amount})["status"] == "succeeded"
        wait_for(lambda: outbox_backlog() == 0, timeout=10, what="the relay")
        # Its first batch must reach the end of the topic, which holds what every earlier test published.
        crashy = pipeline.start_history_worker(module=crash_after_db_commit.__name__, KAFKA_GROUP_ID=group,
                                               HISTORY_MAX_POLL_RECORDS="100000")
        # It stored a batch, then died before committing the offsets.
        assert crashy.wait(60) == crash_after_db_commit.EXIT_CODE
        pipeline.stop(crashy)
        assert len(history_rows(wallet)) >= 2  # the batch is in the database ...
        from history.ops import consumer_lag
        assert all(p.committed is None for p in consumer_lag(group))  # ... and the group never heard of it

        again = pipeline.start_history_worker(KAFKA_GROUP_ID=group)
        wait_caught_up(group_id=group)
        pipeline.stop(again)
        assert [(r["event_type"], r["wallet_version"]) for r in history_rows(wallet)] == [
            ("WALLET_CREATED", 1), ("WALLET_FUNDED", 2), ("WALLET_FUNDED", 3), ("WALLET_FUNDED", 4)]
        assert "already present" in pipeline.log_path(again).read_text()  # the batch was replayed and skipped
    finally:
        pipeline.restart_history_workers_in_a_new_group()


def test_a_garbage_message_goes_to_dead_letters_and_the_partition_moves_on(pipeline, stack, client):
    wallet = create_wallet(client, "poison")
    wait_caught_up()
    producer = KafkaProducer(bootstrap_servers=stack["KAFKA_BOOTSTRAP_SERVERS"])
    key = wallet.encode()  # the wallet's own partition: its next events queue up behind the garbage
    garbage = [b"\xff\xfe not json", json.dumps({"event_type": "WALLET_FUNDED", "wallet_id": wallet}).encode(),
               json.dumps({"event_id": str(uuid.uuid4()), "event_type": "WALLET_FUNDED", "wallet_id": wallet,
                           "wallet_version": 2, "tenant_id": "t", "user_id": "u", "currency": "USD",
                           "occurred_at": "2026-01-01T00:00:00Z", "amount": 12.5}).encode()]
    sent = [producer.send(stack["KAFKA_TOPIC"], key=key, value=v).get(10) for v in garbage]
    producer.close()
    assert run(client, f"/wallets/{wallet}/fund", {"amount": "4.00"})["status"] == "succeeded"
    wait_caught_up()

    assert [(r["event_type"], r["wallet_version"]) for r in history_rows(wallet)] == [
        ("WALLET_CREATED", 1), ("WALLET_FUNDED", 2)]
    with engine().connect() as conn:
        dead = conn.execute(text('SELECT topic, partition, "offset", key, error FROM history_dead_letters'
                                 " WHERE key = :key ORDER BY \"offset\""), {"key": key}).all()
    assert [(d.topic, d.partition, d.offset) for d in dead] == [(stack["KAFKA_TOPIC"], s.partition, s.offset)
                                                                for s in sent]
    assert "not JSON" in dead[0].error and "missing" in dead[1].error and "decimal string" in dead[2].error


def test_broker_stopped_commands_succeed_and_every_event_arrives_once_after_restart(pipeline, stack, client):
    """A broker of its own (the session's is shared): relay and history worker point at it.

    tansu keeps its log in memory, so the restarted broker is empty: the history
    worker is restarted with it (a fresh group reading from the start). What is
    shown is the relay's side: rows committed while Kafka is down wait in the
    outbox and go out once, in order, when it is back.
    """
    broker = Tansu(stack["KAFKA_TOPIC"])
    broker.start()
    for relay in list(pipeline.relays):
        pipeline.stop(relay)
    env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_GROUP_ID": f"outage-{uuid.uuid4().hex[:6]}"}
    relay = pipeline.start_relay(**env)
    consumer = pipeline.start_history_worker(**env)
    try:
        a = create_wallet(client, "outage-a")
        wait_for(lambda: history_rows(a), timeout=20, what="history through the second broker")
        pipeline.stop(consumer)

        broker.stop()
        b = create_wallet(client, "outage-b")
        jobs = [run(client, f"/wallets/{a}/fund", {"amount": "10.00"}),
                run(client, f"/wallets/{a}/transfer", {"to_wallet_id": b, "amount": "4.00"}),
                run(client, f"/wallets/{b}/fund", {"amount": "1.00"})]
        assert [j["status"] for j in jobs] == ["succeeded"] * 3  # the command path does not need Kafka
        assert outbox_backlog() == 4 + 4  # the wallet events and the four jobs' outcomes
        assert len(history_rows(a, b)) == 1

        # The broker comes back empty, without the topic. Were the relay (retrying all along) to reach it
        # before the topic is created again, tansu would ack the backlog into the missing topic, where no
        # consumer can ever read it. A real broker returns with its topics: the relay is held meanwhile.
        with paused(relay):
            broker.start()
        env["KAFKA_GROUP_ID"] = f"outage-{uuid.uuid4().hex[:6]}"
        consumer = pipeline.start_history_worker(**env)
        wait_for(lambda: outbox_backlog() == 0, timeout=30, what="the relay to publish the backlog")
        wait_for(lambda: len(history_rows(a, b)) == 6, timeout=30, what="the backlog in history")
        assert [(r["event_type"], r["wallet_version"]) for r in history_rows(a)] == [
            ("WALLET_CREATED", 1), ("WALLET_FUNDED", 2), ("TRANSFER_OUT", 3)]
        assert [(r["event_type"], r["wallet_version"]) for r in history_rows(b)] == [
            ("WALLET_CREATED", 1), ("TRANSFER_IN", 2), ("WALLET_FUNDED", 3)]
        # Once each: the restarted broker holds exactly the four wallet events that waited (and the jobs' outcomes).
        messages = _topic_messages(broker.bootstrap, stack["KAFKA_TOPIC"])
        wallet_events = [json.loads(m.value)["event_type"] for m in messages]
        assert sorted(t for t in wallet_events if not t.startswith("JOB_")) == [
            "TRANSFER_COMPLETED", "WALLET_CREATED", "WALLET_FUNDED", "WALLET_FUNDED"]
        # The same relay carried on: a short outage is absorbed within the producer's delivery timeout,
        # a longer one is retried with backoff ("kafka unavailable"), neither ends the process.
        assert relay.poll() is None
    finally:
        pipeline.stop(relay)
        pipeline.stop(consumer)
        broker.stop()
        pipeline.start_relay(wait=True)  # the next module measures lag from its first event
