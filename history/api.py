"""The History API (Flask, `create_app`): wallet history and user activity from the read model."""
from __future__ import annotations

import re
import uuid
from datetime import datetime

from flask import Blueprint, Flask, jsonify, request

from app.api import context
from app.api.metadata_query import metadata_filter
from app.api.base import build_app
from app.api.problems import ApiError, validation_failed
from app.api.resources import user_id_in_path
from app.services import readiness
from app.services import cursors
from history import operations, queries
from history.projector import KNOWN_TYPES

bp = Blueprint("history", __name__)


def _list_args(cursor_format: cursors.CursorFormat) -> dict:
    """limit, cursor, type, from, to, reference, metadata[KEY] from the query string; every malformed one is a 422."""
    args, errors = request.args, {}
    limit = 50
    if "limit" in args:
        try:
            limit = int(args["limit"])
            if not 1 <= limit <= 500:
                raise ValueError
        except ValueError:
            errors["limit"] = ["must be an integer from 1 to 500"]
    cursor = args.get("cursor")
    if cursor is not None and not re.fullmatch(cursor_format.pattern, cursor):
        errors["cursor"] = [cursors.MALFORMED]
    types = [t for value in args.getlist("type") for t in value.split(",")] or None
    unknown = sorted(set(types or ()) - KNOWN_TYPES)
    if unknown:
        errors["type"] = [f"unknown event type {', '.join(map(repr, unknown))}; one or more of "
                          f"{', '.join(sorted(KNOWN_TYPES))}, comma-separated"]
    bounds = {}
    for name in ("from", "to"):
        if name in args:
            try:
                value = datetime.fromisoformat(args[name])
                if value.tzinfo is None or "T" not in args[name].upper():
                    raise ValueError
                bounds[name] = value
            except ValueError:
                errors[name] = ["must be an RFC 3339 timestamp with a UTC offset, e.g. 2026-01-31T12:00:00Z"]
    if "from" in bounds and "to" in bounds and bounds["from"] > bounds["to"]:
        errors["to"] = ["must not be before from"]
    reference = args.get("reference")
    if reference is not None and not (1 <= len(reference) <= 255 and "\x00" not in reference):
        errors["reference"] = ["must be 1-255 characters, without NUL"]
    metadata, problems = metadata_filter(args)
    if problems:
        errors["metadata"] = problems
    if errors:
        raise validation_failed(errors, "the query string is not valid")
    return {"limit": limit, "cursor": cursor, "types": types, "since": bounds.get("from"), "until": bounds.get("to"),
            "reference": reference, "metadata": metadata or None}


def _page(read, key: str, cursor_format: cursors.CursorFormat):
    # Another tenant's wallet or user reads like an unknown one: 200 with no items.
    return jsonify(read(key, **_list_args(cursor_format), tenant_id=context.current_tenant()))


@bp.get("/wallets/<wallet_id>/history")
def wallet_history(wallet_id: str):
    # An unknown wallet is 200 with no items: the read model may lag behind the wallet's creation.
    # A wallet id that is not a UUID can never name a wallet: 404, as on the Wallet API.
    try:
        wallet_id = str(uuid.UUID(wallet_id))
    except ValueError:
        raise ApiError("WALLET_NOT_FOUND", f"wallet {wallet_id} does not exist") from None
    return _page(queries.wallet_history, wallet_id, cursors.WALLET_HISTORY)


@bp.get("/users/<user_id>/activity")
def user_activity(user_id: str):
    return _page(queries.user_activity, user_id_in_path(user_id), cursors.USER_ACTIVITY)


@bp.get("/health")
def health():
    return jsonify(status="ok")


@bp.get("/ready")
def ready():
    """200 while the read model is kept up to date; 503 naming what stops it (its data is then going stale).

    Down: PostgreSQL not answering, the relay stalled (events wait in the outbox past
    PIPELINE_STALL_AFTER_S), the history worker stalled or absent.
    """
    pipeline = readiness.pipeline_status()
    checks = {"postgres": "ok" if readiness.postgres_answers() else "down",
              "relay": pipeline["relay"]["status"], "history": pipeline["history"]["status"]}
    down = sorted(name for name, status in checks.items() if status != "ok")
    body = {"status": "ok" if not down else "unavailable", "checks": checks, "pipeline": pipeline}
    if down:
        body["down"] = down
    return jsonify(body), 200 if not down else 503


def create_app(test_config: dict | None = None) -> Flask:
    return build_app(__name__, "history-api", [bp], title=operations.TITLE, description=operations.DESCRIPTION,
                     operations=operations.OPERATIONS, test_config=test_config)
