"""Hold routes: place, read, capture, void."""
from __future__ import annotations

import uuid

from flask import Blueprint, jsonify

from app.api.commands import accept
from app.api.context import json_body
from app.api.problems import validation_failed
from app.api.resources import amount_in, command_wallets, require_hold
from app.api.schemas import CaptureHoldSchema, EmptySchema, PlaceHoldSchema, load
from app.domain import commands
from app.services.views import hold_view

bp = Blueprint("holds", __name__)


@bp.post("/wallets/<wallet_id>/holds")
def place_hold(wallet_id: str):
    body = load(PlaceHoldSchema, json_body())
    wallet, = command_wallets(wallet_id)
    return accept(commands.PLACE_HOLD, commands.PlaceHold(
        hold_id=str(uuid.uuid4()), wallet_id=str(wallet["id"]), amount=amount_in(wallet["currency"], body["amount"]),
        expires_in_seconds=body["expires_in_seconds"], reference=body["reference"]), body["metadata"])


@bp.get("/holds/<hold_id>")
def get_hold(hold_id: str):
    row = require_hold(hold_id)
    return jsonify(hold_view(row, row["read_at"]))


@bp.post("/holds/<hold_id>/capture")
def capture_hold(hold_id: str):
    body = load(CaptureHoldSchema, json_body())
    hold = require_hold(hold_id)
    amount = amount_in(hold["currency"], body["amount"])
    if amount is not None and amount > hold["amount"]:
        raise validation_failed({"amount": ["must not be more than the hold's amount"]})
    to_wallet_id = None
    if body["to_wallet_id"] is not None:
        to_wallet_id = str(body["to_wallet_id"])
        if to_wallet_id == str(hold["wallet_id"]):
            raise validation_failed({"to_wallet_id": ["must be a different wallet than the hold's"]})
        command_wallets(to_wallet_id)
    return accept(commands.CAPTURE_HOLD, commands.CaptureHold(hold_id=str(hold["id"]), amount=amount,
                                                              to_wallet_id=to_wallet_id), body["metadata"])


@bp.post("/holds/<hold_id>/void")
def void_hold(hold_id: str):
    body = load(EmptySchema, json_body())
    hold = require_hold(hold_id)
    return accept(commands.VOID_HOLD, commands.VoidHold(hold_id=str(hold["id"])), body["metadata"])
