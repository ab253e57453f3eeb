"""The one place that reads the environment."""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from app.domain.webhooks import parse_schedule


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    kafka_bootstrap_servers: str
    kafka_topic: str
    kafka_group_id: str
    api_port: int
    history_port: int
    flower_port: int
    # Optimistic-lock conflicts are retried inside the task this many times (jittered
    # backoff), then the task is retried by Celery; a job never fails for it.
    conflict_retries_in_task: int
    conflict_backoff_base_ms: float
    conflict_backoff_cap_ms: float
    # Celery retries a task after a transient fault or a contended command within this many seconds
    # (exponential backoff with full jitter, capped here).
    task_retry_backoff_max_s: int
    # A command whose worker died this many times is failed ATTEMPTS_EXHAUSTED.
    max_lost_deliveries: int
    task_soft_time_limit: int
    task_time_limit: int
    # The sweeper re-enqueues jobs queued or running longer than these.
    requeue_queued_after_s: int
    requeue_running_after_s: int
    idempotency_key_ttl_hours: int
    statement_timeout_ms: int
    lock_timeout_ms: int
    # SQLAlchemy pool per process; the application name (with the pid appended) tells an operator whose backend it is.
    db_pool_size: int
    db_max_overflow: int
    db_application_name: str
    max_wait_seconds: int
    # Outbox relay: rows per batch, poll fallback when no NOTIFY arrives, cap of the retry backoff.
    relay_batch_size: int
    relay_poll_interval_s: float
    relay_backoff_max_s: float
    relay_debounce_ms: float  # after a NOTIFY, wait this long so commits landing together leave as one batch
    # Stall handling of the relay and the history worker: work waiting and none done for this long is a
    # stall (logged, reported in /ready and the metrics, the Kafka client rebuilt); still stalled after
    # twice this long while the broker answers, the process exits non-zero for its supervisor to restart it.
    relay_stall_timeout_s: float
    history_stall_timeout_s: float
    # /ready reports the relay down when an event has waited in the outbox this long.
    pipeline_stall_after_s: float
    # History consumer. tansu needs short group timeouts (joins take ~3 s instead of ~23 s);
    # 6000/1000 are also valid on Apache Kafka (its group.min.session.timeout.ms is 6000).
    kafka_session_timeout_ms: int
    kafka_heartbeat_interval_ms: int
    history_max_poll_records: int
    # The history worker starts a batch (one DB transaction, one offset commit) at most this often;
    # records arriving sooner wait for it, so under load several fetches share one batch.
    history_batch_interval_ms: float
    # Cluster-wide metrics are summed in each process and sent to Redis at most this often.
    metrics_flush_interval_s: float
    # Security: keys seeded at start (TOKEN:TENANT:SCOPES,...), requests per second per key (0 = off),
    # and the command queue depth past which commands get 503 (0 = off).
    api_keys_spec: str | None
    rate_limit_per_second: int
    command_queue_max_depth: int
    audit_interval_s: int
    # Logs: "json" lines for machines, "text" for humans; the root level (INFO, DEBUG, ...).
    log_format: str
    log_level: str
    # Webhooks: seconds between attempts (then the delivery fails), whether loopback and private addresses may
    # be called (development receivers are local; link-local and metadata addresses never), and the Kafka
    # consumer group of the dispatcher that turns events into deliveries.
    webhook_retry_schedule: tuple[int, ...]
    webhook_allow_private_urls: bool
    webhook_group_id: str
    # An attempt's lease (it outlives any attempt, 10 s per phase; a killed worker's deliveries wait it out),
    # and how long a published attempt may wait unstarted before the sweep publishes it again.
    webhook_lease_s: int
    webhook_republish_after_s: int
    # Set (by gunicorn.conf.py) when several processes serve /metrics and must sum their files; prometheus_client
    # reads it too, when it is imported.
    prometheus_multiproc_dir: str | None


# About three days: 5 s, 5 min, 30 min, 2 h, 5 h, then every 10 h (13 attempts in all).
DEFAULT_WEBHOOK_SCHEDULE = "5,300,1800,7200,18000,36000,36000,36000,36000,36000,36000,36000"

# The variables a running `make dev` stack writes to .dev/env for operator tools (scripts/devstack.py).
DEV_ENV_VARS = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "KAFKA_GROUP_ID")


def dev_env_file() -> str:
    """The file a running `make dev` stack writes its URLs to: .dev/env of this checkout, or WALLET_DEV_ENV.

    Read before settings() is built, since the file fills in what settings() reads (see use_env_file).
    """
    return os.environ.get("WALLET_DEV_ENV", str(Path(__file__).resolve().parent.parent / ".dev" / "env"))


def use_env_file(path: str) -> list[str]:
    """Take `KEY=value` lines of `path` into the environment where a variable is unset; returns the ones taken.

    Lets an operator command (`python -m app.cli ...`) reach the running `make dev`
    stack without copying its URLs; a variable already set always wins.
    """
    taken = []
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError:
        return taken
    for line in lines:
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key in DEV_ENV_VARS and not os.environ.get(key):
            os.environ[key] = value.strip()
            taken.append(key)
    if taken:
        settings.cache_clear()
    return taken


@lru_cache(maxsize=1)
def settings() -> Settings:
    """Settings read once per process from the environment."""
    hard_limit = _int("TASK_TIME_LIMIT", 60)
    return Settings(
        database_url=os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/wallet"),
        redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        kafka_bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        kafka_topic=os.environ.get("KAFKA_TOPIC", "wallet-events"),
        kafka_group_id=os.environ.get("KAFKA_GROUP_ID", "history-service-group"),
        api_port=_int("API_PORT", 3000),
        history_port=_int("HISTORY_PORT", 3001),
        flower_port=_int("FLOWER_PORT", 5555),
        conflict_retries_in_task=_int("CONFLICT_RETRIES_IN_TASK", 3),
        conflict_backoff_base_ms=_float("CONFLICT_BACKOFF_BASE_MS", 1.0),
        conflict_backoff_cap_ms=_float("CONFLICT_BACKOFF_CAP_MS", 50.0),
        max_lost_deliveries=_int("MAX_LOST_DELIVERIES", 3),
        task_retry_backoff_max_s=30,
        task_soft_time_limit=_int("TASK_SOFT_TIME_LIMIT", 30),
        task_time_limit=hard_limit,
        requeue_queued_after_s=_int("REQUEUE_QUEUED_AFTER_S", 30),
        requeue_running_after_s=_int("REQUEUE_RUNNING_AFTER_S", hard_limit + 30),
        idempotency_key_ttl_hours=_int("IDEMPOTENCY_KEY_TTL_HOURS", 72),
        statement_timeout_ms=_int("DB_STATEMENT_TIMEOUT_MS", 10000),
        lock_timeout_ms=_int("DB_LOCK_TIMEOUT_MS", 5000),
        db_pool_size=_int("DB_POOL_SIZE", 10),
        db_max_overflow=_int("DB_MAX_OVERFLOW", 10),
        db_application_name=os.environ.get("DB_APPLICATION_NAME", "wallet"),
        max_wait_seconds=30,
        relay_batch_size=_int("RELAY_BATCH_SIZE", 500),
        relay_poll_interval_s=_float("RELAY_POLL_INTERVAL_S", 1.0),
        relay_backoff_max_s=_float("RELAY_BACKOFF_MAX_S", 10.0),
        relay_debounce_ms=_float("RELAY_DEBOUNCE_MS", 20.0),
        relay_stall_timeout_s=_float("RELAY_STALL_TIMEOUT_S", 30.0),
        history_stall_timeout_s=_float("HISTORY_STALL_TIMEOUT_S", 30.0),
        pipeline_stall_after_s=_float("PIPELINE_STALL_AFTER_S", 60.0),
        kafka_session_timeout_ms=_int("KAFKA_SESSION_TIMEOUT_MS", 6000),
        kafka_heartbeat_interval_ms=_int("KAFKA_HEARTBEAT_INTERVAL_MS", 1000),
        history_max_poll_records=_int("HISTORY_MAX_POLL_RECORDS", 500),
        history_batch_interval_ms=_float("HISTORY_BATCH_INTERVAL_MS", 50.0),
        metrics_flush_interval_s=_float("METRICS_FLUSH_INTERVAL_S", 1.0),
        api_keys_spec=os.environ.get("WALLET_API_KEYS") or None,
        rate_limit_per_second=_int("RATE_LIMIT", 1000),
        command_queue_max_depth=_int("COMMAND_QUEUE_MAX_DEPTH", 10000),
        audit_interval_s=_int("AUDIT_INTERVAL_S", 300),
        log_format=os.environ.get("LOG_FORMAT", "json").lower(),
        log_level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        prometheus_multiproc_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None,
        webhook_retry_schedule=parse_schedule(os.environ.get("WEBHOOK_RETRY_SCHEDULE", DEFAULT_WEBHOOK_SCHEDULE)),
        webhook_allow_private_urls=os.environ.get("WEBHOOK_ALLOW_PRIVATE_URLS", "0") == "1",
        webhook_group_id=os.environ.get("WEBHOOK_GROUP_ID", "webhook-dispatcher"),
        webhook_lease_s=max(35, _int("WEBHOOK_LEASE_S", 60)),
        webhook_republish_after_s=_int("WEBHOOK_REPUBLISH_AFTER_S", 60),
    )
