"""Graceful stop, progress and stall watch for the long-running loops (relay, history worker)."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time


class StopFlag:
    """Set by SIGTERM or SIGINT; loops finish their current batch and return."""

    def __init__(self, log: logging.Logger):
        self.requested = False
        self._log = log

    def install(self) -> "StopFlag":
        signal.signal(signal.SIGTERM, self._request)
        signal.signal(signal.SIGINT, self._request)
        return self

    def _request(self, signum, _frame) -> None:
        self._log.info("%s received: finishing the current batch", signal.Signals(signum).name)
        self.requested = True

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early when a stop is requested."""
        deadline = time.monotonic() + seconds
        while not self.requested and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))


class ProgressWatch:
    """How long a loop has had work waiting and got none of it done (0 right after it did, or had none)."""

    def __init__(self, clock=None):
        self._clock = clock or (lambda: time.monotonic())
        self._since = self._clock()

    def progressed(self) -> None:
        """Some work got done, or none was waiting."""
        self._since = self._clock()

    def stalled_for(self) -> float:
        return self._clock() - self._since


class StallClock:
    """Two clocks of a loop that has work waiting: since it last got any done (what it reports), and since it
    last got any done or found the broker away (its own stall, which decides the remedies: rebuilding a
    client or restarting the process brings no broker back)."""

    def __init__(self, clock=None):
        self._since_progress = ProgressWatch(clock)
        self._own = ProgressWatch(clock)

    def progressed(self) -> None:
        self._since_progress.progressed()
        self._own.progressed()

    def broker_away(self) -> None:
        self._own.progressed()

    def stalled_for(self) -> float:
        return self._since_progress.stalled_for()

    def own_stall(self) -> float:
        return self._own.stalled_for()


# Exit status of a process that found itself wedged, for its supervisor to restart it.
EXIT_WEDGED = 70


class LoopWatchdog:
    """Watches a loop from a thread of its own: beats its heartbeat, rescues or ends an iteration stuck in a call.

    The loop calls `tick()` at the start of every iteration; every call it makes
    is bounded, so an iteration that lasts `stuck_after` seconds is stuck in a
    call that ignored its bound. Then `on_stuck()` runs once (it should make the
    call return, e.g. by aborting a Kafka client); if the iteration still lasts
    twice that long, the process exits with EXIT_WEDGED for its supervisor to
    restart it. `beat()` runs every `beat_every` seconds (the process's heartbeat).
    """

    def __init__(self, log: logging.Logger, *, stuck_after: float, on_stuck, beat, beat_every: float = 5.0):
        self._log = log
        self.stuck_after = stuck_after
        self._on_stuck = on_stuck
        self._beat = beat
        self._beat_every = beat_every
        self._tick = time.monotonic()
        self._rescued = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loop-watchdog", daemon=True)

    def start(self) -> "LoopWatchdog":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def tick(self) -> None:
        self._tick = time.monotonic()
        self._rescued = False

    def _run(self) -> None:
        last_beat = 0.0
        while not self._stop.wait(0.5):
            now = time.monotonic()
            stuck = now - self._tick
            if stuck > 2 * self.stuck_after:
                self._log.critical("an iteration has been stuck for %.0f s despite the rescue: exiting with status"
                                   " %d for the supervisor to restart this process", stuck, EXIT_WEDGED)
                logging.shutdown()
                os._exit(EXIT_WEDGED)
            if stuck > self.stuck_after and not self._rescued:
                self._rescued = True
                self._log.error("an iteration has been stuck for %.0f s: aborting its Kafka client", stuck)
                self._guarded(self._on_stuck)
            if now - last_beat >= self._beat_every:
                last_beat = now
                self._guarded(self._beat)

    def _guarded(self, fn) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - the watchdog must outlive what it calls
            self._log.warning("watchdog callback failed", exc_info=True)
