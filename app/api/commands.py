"""Answering a command: 202 + job (or the final job with Prefer: wait)."""
from __future__ import annotations

import re
import time

from flask import Response, jsonify, request

from app.api.context import json_body, owner_tenant, request_id
from app.api.problems import ApiError
from app.config import settings
from app.domain import commands
from app.domain.commands import FINAL_STATUSES
from app.domain.errors import PreconditionFailed
from app.services import queries, submission
from app.services.views import job_view

_IDEMPOTENCY_KEY = re.compile(r"\A[\x20-\x7e]{1,255}\Z")
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+)", re.IGNORECASE)
FINAL = FINAL_STATUSES
# RFC 9110 If-Match: "*" or a comma-separated list of entity tags. A wallet's ETag is its version, strong: "7".
_ENTITY_TAG = r'(?:W/)?"[\x21\x23-\x7e]*"'
_IF_MATCH = re.compile(rf'^[ \t]*(?:\*|{_ENTITY_TAG}(?:[ \t]*,[ \t]*{_ENTITY_TAG})*)[ \t]*$')
_STRONG_VERSION_TAG = re.compile(r'^"([0-9]{1,18})"$')
# The commands whose path names a wallet (its ETag is what If-Match compares); the others' targets have none.
WALLET_PATH_COMMANDS = frozenset({commands.FUND, commands.WITHDRAW, commands.TRANSFER, commands.PLACE_HOLD,
                                  commands.FREEZE, commands.UNFREEZE, commands.CLOSE, commands.SET_LIMITS})


def idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise ApiError("VALIDATION_FAILED", "Idempotency-Key must be 1-255 printable characters",
                       errors={"Idempotency-Key": ["must be 1-255 printable characters"]})
    return key


def if_match(command_type: str, command) -> tuple[str, list[int]] | None:
    """(wallet id, the versions If-Match allows) to check at submit and execution; None when there is no
    condition (no If-Match, or "*": any current version). Strong comparison: a weak tag matches nothing."""
    value = request.headers.get("If-Match")
    if value is None:
        return None
    if not _IF_MATCH.match(value):  # names no entity tag: the condition cannot hold
        raise PreconditionFailed('If-Match names no entity tag: it must be "*" or a comma-separated list of tags '
                                 'such as "7" (the wallet\'s ETag)')
    if value.strip() == "*":
        return None
    if command_type not in WALLET_PATH_COMMANDS:
        raise PreconditionFailed("only a command whose path names a wallet can be made conditional: "
                                 "this resource has no ETag")
    tags = [t.strip() for t in re.findall(_ENTITY_TAG, value)]
    versions = [int(m.group(1)) for m in map(_STRONG_VERSION_TAG.match, tags) if m is not None]
    return command.wallet_id, versions


def prefer_wait() -> int | None:
    match = _PREFER_WAIT.search(request.headers.get("Prefer", ""))
    return None if match is None else min(int(match.group(1)), settings().max_wait_seconds)


def wait_until_final(job_id: str, seconds: float) -> dict | None:
    """Poll the job until it is final or the time is up."""
    deadline = time.monotonic() + seconds
    pause = 0.005
    while True:
        job = queries.get_job(job_id, None)
        if job is None or job["status"] in FINAL or time.monotonic() >= deadline:
            return job
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 0.1)


def refuse_when_backlogged() -> None:
    """Backpressure: past COMMAND_QUEUE_MAX_DEPTH queued jobs, new commands get 503 + Retry-After."""
    limit = settings().command_queue_max_depth
    if limit <= 0:
        return
    try:
        backlog = submission.backlog(limit)
    except Exception:  # noqa: BLE001 - the database is away: recording the job will say so
        return
    if backlog > limit:
        raise ApiError("SERVICE_UNAVAILABLE", f"{backlog} commands are waiting; retry later",
                       headers={"Retry-After": str(min(30, 1 + backlog // max(1, limit)))})


def accept(command_type: str, command, metadata: dict) -> Response:
    """Record the command (with the client's metadata, validated by the route's schema) as a job and answer 202
    (or 200 for a replay or a finished wait)."""
    refuse_when_backlogged()
    key = idempotency_key()
    wait = prefer_wait()
    condition = if_match(command_type, command)
    accepted = submission.submit(
        command_type, command, tenant_id=owner_tenant(), request_id=request_id(), idempotency_key=key,
        request_fingerprint=submission.fingerprint(request.method, request.path, json_body()) if key else None,
        if_match=condition, metadata=metadata,
    )
    job = job_view(accepted.job)
    if wait is not None and job["status"] not in FINAL:
        job = wait_until_final(job["id"], wait) or job
    status = 200 if accepted.replayed or job["status"] in FINAL else 202
    response = jsonify(job)
    response.status_code = status
    response.headers["Location"] = f"/jobs/{job['id']}"
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    if wait is not None:
        response.headers["Preference-Applied"] = f"wait={wait}"
    if job["status"] not in FINAL:
        response.headers["Retry-After"] = "1"
    return response
