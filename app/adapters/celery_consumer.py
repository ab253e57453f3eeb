"""The Celery worker's consumer, with one fix: it survives losing its Redis broker while tasks are unacked.

On a broken broker connection Celery 5.7's consumer first `collect()`s the
connection (which drops the transport's client) and then closes it; closing
the channel tries to restore the unacked messages through that dropped client,
kombu's redis transport raises AttributeError ('NoneType' object has no
attribute 'hostname'), `ignore_errors` lets it through, and the worker main
process exits with "Unrecoverable error" instead of reconnecting. Found by
`make chaos` (Redis restarted under load). Nothing is lost by skipping that
restore: the broker is unreachable anyway, and jobs whose tasks were unacked
are either still running here or re-enqueued by the sweeper.
"""
from __future__ import annotations

import logging

from celery.worker.consumer import Consumer as CeleryConsumer

log = logging.getLogger(__name__)


class Consumer(CeleryConsumer):
    """`worker_consumer` of celeryconfig: Celery's consumer whose broken connection always closes quietly."""

    def on_connection_error_after_connected(self, exc):
        connection = self.connection
        if connection is not None:
            close = connection.close

            def close_quietly():
                try:
                    close()
                except AttributeError:
                    log.warning("broker connection lost with unacked messages; they are not restored "
                                "(the sweeper re-enqueues their jobs)", exc_info=True)

            connection.close = close_quietly  # the instance attribute shadows the method for this call
        super().on_connection_error_after_connected(exc)
