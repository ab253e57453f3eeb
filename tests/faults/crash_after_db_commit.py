"""The history worker, dying right after its first batch is in the database and before its offset commit.

`python -m tests.faults.crash_after_db_commit` runs history.worker with its
apply_batch wrapped: once the batch's transaction has committed, the process
ends with os._exit, with no offset commit, no consumer close and no cleanup, as
a worker killed at that instant would. The next owner of the partitions replays
the batch, which must leave no duplicate.
"""
from __future__ import annotations

import logging
import os
import sys

from history import worker

EXIT_CODE = 70


def crash_after(apply_batch):
    """apply_batch, then the end of the process."""

    def apply_then_crash(messages: list):
        apply_batch(messages)
        logging.getLogger("history.worker").warning("fault: exiting after the DB commit, before the offset commit")
        os._exit(EXIT_CODE)

    return apply_then_crash


if __name__ == "__main__":
    worker.apply_batch = crash_after(worker.apply_batch)
    sys.exit(worker.run())
