"""Graceful stop for the long-running loops (relay, history worker)."""
from __future__ import annotations

import logging
import signal
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
