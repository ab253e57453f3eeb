"""Webhook deliveries on the `webhooks` queue: one task per attempt, and the sweep that publishes due ones.

The webhook worker runs threads (`-P threads`): an attempt waits on a receiver
for up to 10 s, so many run at once and a hanging receiver holds one thread,
never the command workers.
"""
from celery import shared_task

from app.services import webhooks


@shared_task(name="wallet.webhooks.deliver", acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             soft_time_limit=30, time_limit=45)
def deliver(delivery_id: str) -> str | None:
    """One attempt, if the delivery is due and no other attempt holds it (else nothing); a retry due soon
    is published here with its countdown, a later one by the sweep."""
    outcome = webhooks.attempt(delivery_id)
    countdown = webhooks.retry_countdown(outcome)
    if countdown is not None:
        deliver.apply_async(args=[delivery_id], countdown=countdown)
    return None if outcome is None else outcome.status


@shared_task(name="wallet.webhooks.publish_due", ignore_result=True)
def publish_due() -> int:
    """Retries that came due, and attempts whose task was lost (broker away, worker killed)."""
    return webhooks.publish_due()
