"""Wallet routes: create, fund, transfer, and reads."""
from __future__ import annotations

import uuid

from flask import Blueprint, jsonify, request

from app.api.commands import accept
from app.api.context import current_tenant, json_body
from app.api.problems import ApiError, validation_failed
from app.api.schemas import CreateWalletSchema, FundSchema, PageQuerySchema, TransferSchema, load
from app.domain import commands
from app.domain.errors import InvalidAmount
from app.domain.money import parse_amount
from app.services import queries

bp = Blueprint("wallets", __name__)


def require_wallet(wallet_id: str) -> dict:
    """The caller's wallet row, or 404 exactly as if it did not exist."""
    try:
        uuid.UUID(wallet_id)
    except ValueError:
        row = None
    else:
        row = queries.wallet_row(wallet_id, current_tenant())
    if row is None:
        raise ApiError("WALLET_NOT_FOUND", f"wallet {wallet_id} does not exist")
    return row


def amount_for(body: dict, wallet: dict):
    """The body's amount, checked against the wallet's currency precision (422)."""
    try:
        return parse_amount(body["amount"], wallet["currency"])
    except InvalidAmount as e:
        raise validation_failed({"amount": [e.message]}) from e


def page_args() -> dict:
    return load(PageQuerySchema(), request.args.to_dict())


@bp.post("/wallets")
def create_wallet():
    body = load(CreateWalletSchema(), json_body())
    return accept(commands.CREATE_WALLET, commands.CreateWallet(
        wallet_id=str(uuid.uuid4()), user_id=body["user_id"], currency=body["currency"]))


@bp.get("/wallets/<wallet_id>")
def get_wallet(wallet_id: str):
    require_wallet(wallet_id)
    return jsonify(queries.get_wallet(wallet_id, current_tenant()))


@bp.get("/users/<user_id>/wallets")
def list_user_wallets(user_id: str):
    args = page_args()
    try:
        return jsonify(queries.list_user_wallets(user_id, current_tenant(), args["limit"], args["cursor"]))
    except queries.InvalidCursor as e:
        raise validation_failed({"cursor": [str(e)]}) from e


@bp.post("/wallets/<wallet_id>/fund")
def fund(wallet_id: str):
    body = load(FundSchema(), json_body())
    wallet = require_wallet(wallet_id)
    return accept(commands.FUND, commands.Fund(
        wallet_id=wallet_id, amount=amount_for(body, wallet), reference=body["reference"]))


@bp.post("/wallets/<wallet_id>/transfer")
def transfer(wallet_id: str):
    body = load(TransferSchema(), json_body())
    to_wallet_id = str(body["to_wallet_id"])
    if to_wallet_id == wallet_id.lower():
        raise validation_failed({"to_wallet_id": ["must be a different wallet than the source"]})
    wallet = require_wallet(wallet_id)
    require_wallet(to_wallet_id)
    return accept(commands.TRANSFER, commands.Transfer(
        wallet_id=str(wallet["id"]), to_wallet_id=to_wallet_id, amount=amount_for(body, wallet),
        reference=body["reference"]))


@bp.get("/wallets/<wallet_id>/transactions")
def list_transactions(wallet_id: str):
    args = page_args()
    require_wallet(wallet_id)
    try:
        return jsonify(queries.list_transactions(wallet_id, args["limit"], args["cursor"]))
    except queries.InvalidCursor as e:
        raise validation_failed({"cursor": [str(e)]}) from e
