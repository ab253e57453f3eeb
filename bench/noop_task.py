"""The bench's no-op Celery task, `wallet.bench.noop`: the ceiling `make bench` measures against.

It does nothing, with the same delivery options as the command tasks (`wallet.fund`, …)
(acks_late, reject_on_worker_lost, no result), so draining it measures what
Celery + Redis cost per task on this worker setup. The bench's workers load it
with `celery -A tasks worker -I bench.noop_task`; the wallet's own workers do not.
"""
from celery import shared_task

NAME = "wallet.bench.noop"


@shared_task(name=NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def noop() -> None:
    """Do nothing."""
    return None
