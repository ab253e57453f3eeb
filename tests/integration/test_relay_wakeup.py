"""The relay's wake-up on NOTIFY: one debounce per wake-up, however many commits notified meanwhile.

Under load hundreds of commits NOTIFY while the relay fetches and marks a
batch; psycopg keeps them and yields them all on the next notifies(). The
relay once slept its debounce for each of them and fell minutes behind.
"""
import threading
import time

import psycopg

from app.config import settings
from app.relay import libpq_url, wait_for_commits


def _connect() -> psycopg.Connection:
    return psycopg.connect(libpq_url(settings().database_url), autocommit=True)


def _notify(times: int) -> None:
    """`times` commits that NOTIFY outbox, as the workers' commits do (one per transaction)."""
    with _connect() as other:
        for _ in range(times):
            other.execute("NOTIFY outbox")


def test_many_pending_notifications_cost_one_debounce_and_are_all_consumed(stack):
    with _connect() as relay:
        relay.execute("LISTEN outbox")
        _notify(300)
        relay.execute("SELECT 1")  # like the relay's fetch: the notifications arrive during a query

        started = time.monotonic()
        assert wait_for_commits(relay, timeout=5.0, debounce=0.02) is True
        elapsed = time.monotonic() - started

        assert elapsed < 1.0, f"woke after {elapsed:.2f} s: the debounce ran once per notification"
        # Every pending notification was consumed: the next wait sleeps until its timeout.
        assert wait_for_commits(relay, timeout=0.2, debounce=0.02) is False


def test_without_a_notification_the_wait_ends_at_the_poll_interval(stack):
    with _connect() as relay:
        relay.execute("LISTEN outbox")
        started = time.monotonic()
        assert wait_for_commits(relay, timeout=0.3, debounce=0.02) is False
        assert 0.25 <= time.monotonic() - started < 2.0


def test_a_notification_arriving_during_the_wait_wakes_it(stack):
    with _connect() as relay:
        relay.execute("LISTEN outbox")
        threading.Timer(0.2, _notify, args=(1,)).start()
        started = time.monotonic()
        assert wait_for_commits(relay, timeout=5.0, debounce=0.02) is True
        assert time.monotonic() - started < 2.0
