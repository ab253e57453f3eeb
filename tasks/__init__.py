"""The wallet workers: `celery -A tasks worker` finds the Celery app here, with its signals and tasks."""
import logging
import threading
import time

from celery.signals import (
    after_setup_logger, after_setup_task_logger, task_postrun, task_prerun, worker_process_init,
    worker_process_shutdown, worker_ready, worker_shutting_down,
)

from app.adapters import command_queue
from app.adapters.celery_app import celery_app

app = celery_app  # the name `celery -A tasks` looks for
_STARTED_AT = time.time()  # this worker's start: leases of its node name taken before are its dead run's


@worker_process_init.connect
def _fresh_connections_in_child(**_):
    # Never use a connection pool inherited across fork.
    from app.adapters import db

    db.dispose_engine()
    db.configure(pool_pre_ping=False)


@worker_process_shutdown.connect
def _close_connections(**_):
    from app.adapters.db import dispose_engine
    from app.observability import metrics

    metrics.flush()  # a pool process leaves with os._exit: atexit would not send its last second of metrics
    dispose_engine()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger, **_):
    from app.observability import logs

    for handler in logger.handlers:
        handler.setFormatter(logs.formatter("worker"))
    # Celery's own "Task received / succeeded" lines say less than the executor's
    # structured "job <status>" line, and cost about a millisecond per command.
    for name in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


@task_prerun.connect
def _log_context(task_id=None, **_):
    from app.observability import logs

    logs.job_id_var.set(task_id)  # the task id is the job id
    logs.request_id_var.set(None)  # the executor sets it from the job


@task_postrun.connect
def _clear_log_context(**_):
    from app.observability import logs

    logs.job_id_var.set(None)
    logs.request_id_var.set(None)


_heartbeat_stop = threading.Event()


@worker_ready.connect
def _start_heartbeat(sender=None, **_):
    """Tell /ready this worker is alive: a Redis key with a short TTL, refreshed by the main process."""
    from app.services import readiness

    hostname = getattr(sender, "hostname", "worker")
    threading.Thread(target=readiness.worker_heartbeat, args=(hostname, _heartbeat_stop), daemon=True,
                     name="wallet-heartbeat").start()


@worker_ready.connect
def _free_interrupted_webhook_attempts(sender=None, **_):
    """A webhook worker that starts again under its node name frees what its killed run held (see
    services.webhooks.release_leases); a worker of another queue holds none."""
    from app.services import webhooks as webhook_service

    queues = {q.name for q in getattr(getattr(sender, "task_consumer", None), "queues", ())}
    if queues & {command_queue.WEBHOOKS_QUEUE, command_queue.FAILING_WEBHOOKS_QUEUE}:
        try:
            webhook_service.release_leases(sender.hostname, _STARTED_AT)
        except Exception:  # noqa: BLE001 - the database away at start: the leases run out on their own
            logging.getLogger(__name__).exception("could not free the webhook leases of %s", sender.hostname)


@worker_shutting_down.connect
def _stop_heartbeat(**_):
    _heartbeat_stop.set()


from tasks import commands, maintenance, webhooks  # noqa: E402,F401  (register the tasks)
