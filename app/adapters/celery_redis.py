"""Kombu's Redis transport, with two fixes: a channel whose broker connection is gone fails like a lost
connection, and a channel reuses one Redis client instead of building one per command.

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

Kombu 5.7 builds a new `redis.Redis` object for every publish, ack and queue
operation (`conn_or_acquire`); building one registers ~170 response callbacks
and cost about 0.5 ms of CPU per published task, half of `send_task`. The
client is a thin, thread-safe front of the channel's connection pool, so the
channel keeps one per pool (a new pool after a reconnect gets a new client).
"""
from __future__ import annotations

from contextlib import contextmanager

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    _sync_client = None

    @contextmanager
    def conn_or_acquire(self, client=None):
        if client:
            yield client
            return
        cached = self._sync_client
        if cached is None or cached.connection_pool is not self.pool:
            cached = self._sync_client = self._create_client()
        yield cached

    def _connparams(self, asynchronous=False):
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("the broker connection of this channel was closed after a connection loss")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
