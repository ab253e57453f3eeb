"""Celery settings for the wallet workers, each with its reason."""
from kombu import Exchange, Queue

from app.config import settings

_s = settings()

broker_url = _s.redis_url
# Kombu's Redis transport, fixed so that losing Redis with tasks unacked does not end the worker (see the module).
broker_transport = "app.adapters.celery_redis:Transport"
# Job state lives in PostgreSQL (the jobs table), not in a result backend.
result_backend = None
task_ignore_result = True

# JSON only: tasks carry ids and primitives, never pickled objects.
task_serializer = "json"
accept_content = ["json"]

# Ack after the task ran, and requeue it if its worker process dies, so a
# killed worker never loses a command (the job's lost-delivery cap stops a
# command that keeps killing workers).
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_cancel_long_running_tasks_on_connection_loss = True

task_soft_time_limit = _s.task_soft_time_limit
task_time_limit = _s.task_time_limit

# Redis redelivers unacked tasks after the visibility timeout; keep it well
# above the hard time limit, and set it everywhere Celery reads it (#9339).
_visibility_timeout = max(3600, _s.task_time_limit * 4)
broker_transport_options = {"visibility_timeout": _visibility_timeout}
result_backend_transport_options = {"visibility_timeout": _visibility_timeout}
visibility_timeout = _visibility_timeout

# Fail fast when Redis is down at publish time: the job row is durable and the
# sweeper re-enqueues it, so the API should not hang on the broker.
broker_connection_timeout = 2
task_publish_retry_policy = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
broker_connection_retry_on_startup = True

# Commands (and later bulk batches) on `commands`, upkeep on `maintenance`, webhook deliveries on
# `webhooks`: a host can serve any subset (`-Q commands`), and a slow queue never delays another.
task_queues = tuple(Queue(name, Exchange(name), routing_key=name) for name in ("commands", "maintenance", "webhooks",
                                                                           "webhooks-failing"))
task_default_queue = "commands"
task_default_exchange = "commands"
task_default_routing_key = "commands"
task_routes = {
    "wallet.maintenance.*": {"queue": "maintenance"},
    "wallet.webhooks.*": {"queue": "webhooks"},
    "wallet.*": {"queue": "commands"},
}

# Task events feed Flower, and cost the worker's main process a Redis PUBLISH
# per task state (about a third of its CPU). Off by default: Flower switches
# them on in the workers while it runs (its --enable_events, on by default).
worker_send_task_events = False
task_send_sent_event = False

# A warm shutdown waits for running tasks; a soft shutdown gives them this long.
worker_soft_shutdown_timeout = 10.0

beat_schedule = {
    "requeue-stranded-jobs": {"task": "wallet.maintenance.requeue_stranded_jobs", "schedule": 10.0},
    # A hold stops counting and reads expired at expires_at by itself (computed on read); this records
    # it and emits HOLD_EXPIRED within 10 s. No periodic task runs more often: Flower shows commands.
    "expire-holds": {"task": "wallet.maintenance.expire_holds", "schedule": 10.0},
    # The whole-ledger audit; its last result is in audit_runs (`python -m app.cli audit last`).
    "audit-ledger": {"task": "wallet.maintenance.audit_ledger", "schedule": float(_s.audit_interval_s)},
    "purge-idempotency-keys": {"task": "wallet.maintenance.purge_idempotency_keys", "schedule": 3600.0},
    # Webhook retries that came due and attempts whose task was lost; on the webhooks queue.
    "publish-due-webhooks": {"task": "wallet.webhooks.publish_due", "schedule": 10.0},
}
timezone = "UTC"
