"""Bulk submission routes: POST /batches, GET /batches/{id}, GET /batches/{id}/jobs."""
from __future__ import annotations

import time
import uuid

from flask import Blueprint, jsonify, request
from marshmallow import ValidationError

from app.api.commands import idempotency_key, prefer_wait, refuse_when_backlogged
from app.api.context import current_tenant, json_body, owner_tenant, request_id
from app.api.problems import ApiError, validation_failed
from app.api.resources import query_args
from app.api.schemas import BATCH_ITEM_SCHEMAS, BatchJobsQuerySchema, BatchSchema, load
from app.domain import commands
from app.domain.errors import InvalidAmount
from app.domain.money import parse_amount
from app.services import bulk, queries, submission

bp = Blueprint("batches", __name__)

# A batch's body: up to 1000 commands of a few hundred bytes each (a single command's limit is 64 KiB).
MAX_BATCH_BODY_BYTES = 1024 * 1024


@bp.before_request
def _room_for_a_batch() -> None:
    request.max_content_length = MAX_BATCH_BODY_BYTES

_COMMAND_CLASSES = {"fund": commands.Fund, "withdraw": commands.Withdraw, "transfer": commands.Transfer}


def _flat(index: int, messages: dict) -> dict:
    return {f"commands.{index}.{field}": value for field, value in messages.items()}


def _items(raw: list) -> list[tuple[str, object, dict]]:
    """Each item validated by its type's schema, its wallets the caller's, its amount in their currency.

    Any invalid item rejects the whole request, with errors keyed commands.<index>.<field>
    (422), or 404 WALLET_NOT_FOUND for wallets the caller cannot see.
    """
    errors: dict = {}
    bodies: list = []
    for index, item in enumerate(raw):
        kind = item.get("type") if isinstance(item, dict) else None
        schema = BATCH_ITEM_SCHEMAS.get(kind) if isinstance(kind, str) else None
        if schema is None:
            errors[f"commands.{index}.type"] = ["must be one of: fund, withdraw, transfer"]
            continue
        try:
            body = load(schema, item)
        except ValidationError as e:
            errors.update(_flat(index, e.messages))
            continue
        if body["type"] == "transfer" and body["to_wallet_id"] == body["wallet_id"]:
            errors[f"commands.{index}.to_wallet_id"] = ["must be a different wallet than the source"]
            continue
        bodies.append((index, body))
    if errors:
        raise validation_failed(errors, "one or more commands are not valid; nothing was recorded")

    named = {str(w) for _, body in bodies for w in (body["wallet_id"], body.get("to_wallet_id")) if w}
    facts = queries.wallet_facts(sorted(named), current_tenant())
    unknown: dict = {}
    for index, body in bodies:
        for field in ("wallet_id", "to_wallet_id"):
            if body.get(field) is not None and str(body[field]) not in facts:
                unknown[f"commands.{index}.{field}"] = [f"wallet {body[field]} does not exist"]
    if unknown:
        raise ApiError("WALLET_NOT_FOUND", "a command names a wallet that does not exist; nothing was recorded",
                       errors=unknown)

    items = []
    for index, body in bodies:
        wallet_id = str(body["wallet_id"])
        try:
            amount = parse_amount(body["amount"], facts[wallet_id]["currency"])
        except InvalidAmount as e:
            errors[f"commands.{index}.amount"] = [e.message]
            continue
        fields = {"wallet_id": wallet_id, "amount": amount, "reference": body["reference"]}
        if body["type"] == "transfer":
            fields["to_wallet_id"] = str(body["to_wallet_id"])
        items.append((body["type"], _COMMAND_CLASSES[body["type"]](**fields), body["metadata"]))
    if errors:
        raise validation_failed(errors, "one or more commands are not valid; nothing was recorded")
    return items


def _batch_id(batch_id: str) -> str:
    try:
        return str(uuid.UUID(batch_id))
    except ValueError:
        raise ApiError("BATCH_NOT_FOUND", f"batch {batch_id} does not exist") from None


def _wait_until_completed(batch: dict, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    pause = 0.01
    while not bulk.is_completed(batch) and time.monotonic() < deadline:
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 1.5, 0.2)
        batch = bulk.get_batch(batch["id"], None) or batch
    return batch


@bp.post("/batches")
def submit_batch():
    refuse_when_backlogged()
    key = idempotency_key()
    wait = prefer_wait()
    body = load(BatchSchema, json_body())
    accepted = bulk.submit_batch(
        body["atomic"], _items(body["commands"]), tenant_id=owner_tenant(), request_id=request_id(),
        idempotency_key=key,
        request_fingerprint=submission.fingerprint(request.method, request.path, json_body()) if key else None)
    batch = accepted.batch
    if wait is not None and not bulk.is_completed(batch):
        batch = _wait_until_completed(batch, wait)
    response = jsonify(batch)
    response.status_code = 200 if accepted.replayed or bulk.is_completed(batch) else 202
    response.headers["Location"] = f"/batches/{batch['id']}"
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    if wait is not None:
        response.headers["Preference-Applied"] = f"wait={wait}"
    if not bulk.is_completed(batch):
        response.headers["Retry-After"] = "1"
    return response


@bp.get("/batches/<batch_id>")
def get_batch(batch_id: str):
    batch = bulk.get_batch(_batch_id(batch_id), current_tenant())
    if batch is None:
        raise ApiError("BATCH_NOT_FOUND", f"batch {batch_id} does not exist")
    response = jsonify(batch)
    if not bulk.is_completed(batch):
        response.headers["Retry-After"] = "1"
    return response


@bp.get("/batches/<batch_id>/jobs")
def list_batch_jobs(batch_id: str):
    args = query_args(BatchJobsQuerySchema)
    batch_id = _batch_id(batch_id)
    if not bulk.exists(batch_id, current_tenant()):
        raise ApiError("BATCH_NOT_FOUND", f"batch {batch_id} does not exist")
    return jsonify(bulk.batch_jobs(batch_id, current_tenant(), args.get("status"), args["limit"], args.get("cursor")))
