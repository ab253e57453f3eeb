"""Structured logs: one JSON object per line, carrying the request id of the command at hand.

The id comes from the HTTP request (X-Request-ID) into the job row; workers
set it again from the job, so one id finds a command in every process's logs.
"""
from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import datetime, timezone

from app.config import settings

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
job_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line; `extra=` fields are kept, secrets never passed in."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if (request_id := request_id_var.get()) is not None:
            entry["request_id"] = request_id
        if (job_id := job_id_var.get()) is not None:
            entry["job_id"] = job_id
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def formatter(service: str) -> logging.Formatter:
    if settings().log_format == "text":
        return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return JsonFormatter(service)


def configure(service: str) -> None:
    """Send this process's logs to stderr, as JSON lines (LOG_FORMAT=text for humans)."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(service))
    root.handlers[:] = [handler]
    root.setLevel(settings().log_level)
    for noisy in ("kafka", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
