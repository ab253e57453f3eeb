"""Celery app of the wallet workers. `celery -A tasks worker` finds `celery_app` here."""
from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

celery_app = Celery("wallet")
celery_app.config_from_object("celeryconfig")
app = celery_app  # the name `celery -A tasks` looks for


@worker_process_init.connect
def _fresh_connections_in_child(**_):
    # Never use a connection pool inherited across fork.
    from app.adapters.db import dispose_engine

    dispose_engine()


@worker_process_shutdown.connect
def _close_connections(**_):
    from app.adapters.db import dispose_engine

    dispose_engine()


from tasks import commands, maintenance  # noqa: E402,F401  (register the tasks)
from tasks import bench  # noqa: E402,F401  (wallet.bench.noop: the ceiling of `make bench`)
