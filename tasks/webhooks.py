"""Webhook deliveries on the `webhooks` queue: one task per attempt, and the sweep that publishes due ones.

The webhook workers run threads (`-P threads`): an attempt waits on a receiver
for up to 10 s, so many run at once. Queue `webhooks` carries the attempts of
healthy endpoints, `webhooks-failing` those of endpoints whose last attempt
failed, each with a worker of its own: a receiver that hangs holds threads of
the second only, never those of healthy endpoints nor the command workers.
"""
from celery import shared_task

from app.adapters import command_queue
from app.services import webhooks


@shared_task(name="wallet.webhooks.deliver", bind=True, acks_late=True, reject_on_worker_lost=True,
             ignore_result=True, soft_time_limit=30, time_limit=45)
def deliver(self, delivery_id: str) -> str | None:
    """One attempt, if the delivery is due and no other attempt holds it (else nothing); a retry due soon
    is published here with its countdown, a later one by the sweep."""
    queue = (self.request.delivery_info or {}).get("routing_key")
    outcome = webhooks.attempt(delivery_id, failing_queue=queue == command_queue.FAILING_WEBHOOKS_QUEUE,
                               worker=self.request.hostname)
    countdown = webhooks.retry_countdown(outcome)
    if countdown is not None:  # it failed: its endpoint is failing now, so the retry goes to webhooks-failing
        command_queue.enqueue_delivery(delivery_id, failing=True, countdown=countdown)
    return None if outcome is None else outcome.status


@shared_task(name="wallet.webhooks.publish_due", ignore_result=True)
def publish_due() -> int:
    """Retries that came due, and attempts whose task was lost (broker away, worker killed)."""
    return webhooks.publish_due()
