"""The webhook dispatcher (`python -m app.webhook_dispatcher`): Kafka events → webhook deliveries.

The history worker's consumer loop (history/worker.py: batches, offsets
committed after the DB commit, stall handling) in a consumer group of its own
(WEBHOOK_GROUP_ID). Per batch, one transaction inserts a delivery per
notification and subscribed endpoint (unique per endpoint and webhook-id, so a
replayed batch adds none); the new ones are then published to the `webhooks`
Celery queue, and a publish lost there is found by the `publish_due` sweep.
Runs beside the history worker, as many instances as the topic has partitions.
"""
from __future__ import annotations

import sys

from app.config import settings
from app.services import webhooks
from history import worker

WEBHOOKS = worker.Consumption("webhooks", lambda: settings().webhook_group_id, webhooks.fan_out,
                              report_lag=False)

if __name__ == "__main__":
    sys.exit(worker.run(WEBHOOKS, service="webhook-dispatcher"))
