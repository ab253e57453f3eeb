"""Benchmark-only task: `wallet.bench.noop`, the Celery ceiling `make bench` measures against.

It does nothing, with the same delivery options as the command tasks (`wallet.fund`, …)
(acks_late, reject_on_worker_lost, no result), so draining it measures what
Celery + Redis cost per task on this worker setup.
"""
from celery import shared_task


@shared_task(name="wallet.bench.noop", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def noop() -> None:
    """Do nothing."""
    return None
