"""Kombu's Redis transport, with one fix: a channel whose broker connection is gone fails like a lost connection.

When its Redis connection breaks, Celery 5.7's consumer collects the connection
(dropping the transport's client) and reconnects on a new one. Two things still
touch the old channel afterwards: closing it (which restores unacked tasks)
and acking a task that finishes after the reconnect. Both build a Redis client
from the dropped connection info and raise AttributeError ('NoneType' object
has no attribute 'hostname'), which neither `ignore_errors` nor
`Message.ack_log_error` expects, so the worker's main process exited
"Unrecoverable error" instead of going on with the new connection (found by
`make chaos`: Redis restarted under load). Here that case raises the transport's
own ConnectionError, which both already handle. Nothing is lost: those messages
lived in the Redis that went away, and the sweeper re-enqueues jobs whose task
was lost. Selected by `broker_transport` in celeryconfig.
"""
from __future__ import annotations

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous=False):
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("the broker connection of this channel was closed after a connection loss")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
