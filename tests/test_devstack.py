"""The embedded dev/test services start, answer, and leave no process behind."""

import time
import uuid

import psutil
import psycopg
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from scripts.devstack import EmbeddedServices


def _running(pid: int) -> bool:
    # A stopped postmaster is re-parented away from us and may linger as a zombie
    # until PID 1 reaps it: that counts as gone.
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_embedded_services_answer_and_stop(tmp_path):
    topic = f"devstack-{uuid.uuid4().hex[:8]}"
    services = EmbeddedServices(tmp_path / "state", env={}, kafka_topic=topic, kafka_partitions=3, timeout=30)
    env = services.start()
    try:
        assert set(services.started) == {"postgres", "redis", "kafka"}
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://")

        with psycopg.connect(env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.execute("SELECT current_database()").fetchone() == ("wallet",)

        client = redis.Redis.from_url(env["REDIS_URL"])
        assert client.ping() is True
        client.close()

        bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        assert producer.partitions_for(topic) == {0, 1, 2}
        sent = producer.send(topic, key=b"wallet-1", value=b"hello").get(timeout=10)
        producer.close()
        # Manual assignment: no consumer-group join, so this stays fast.
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=10_000)
        consumer.assign([TopicPartition(topic, sent.partition)])
        received = next(iter(consumer)).value  # StopIteration after 10 s without a message
        consumer.close()
        assert received == b"hello"

        pids = services.pids()
        assert set(pids) == {"postgres", "redis", "kafka"}
    finally:
        services.stop()

    deadline = time.monotonic() + 10
    while any(_running(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [name for name, pid in pids.items() if _running(pid)] == []


def test_urls_already_set_are_passed_through(tmp_path):
    given = {
        "DATABASE_URL": "postgresql+psycopg://u@db/wallet",
        "REDIS_URL": "redis://cache:6379/0",
        "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
    }
    with EmbeddedServices(tmp_path, env=given) as env:
        assert env == given
    assert not (tmp_path / "pg").exists()
