"""Wallet routes: create, read, list, freeze, unfreeze, close, limits, balance, statement."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from flask import Blueprint, jsonify

from app.api.commands import accept
from app.api.context import current_tenant, json_body
from app.api.problems import validation_failed
from app.api.resources import amount_in, query_args, require_wallet, user_id_in_path
from app.api.schemas import (
    BalanceQuerySchema, CreateWalletSchema, EmptySchema, FreezeSchema, LimitsSchema, StatementQuerySchema,
    TransactionsQuerySchema, UserWalletsQuerySchema, load,
)
from app.domain import commands
from app.services import queries, transaction_search
from app.services.views import timestamp, wallet_view

bp = Blueprint("wallets", __name__)


@bp.post("/wallets")
def create_wallet():
    body = load(CreateWalletSchema, json_body())
    return accept(commands.CREATE_WALLET, commands.CreateWallet(
        wallet_id=str(uuid.uuid4()), user_id=body["user_id"], currency=body["currency"]), body["metadata"])


@bp.get("/wallets/<wallet_id>")
def get_wallet(wallet_id: str):
    view = wallet_view(require_wallet(wallet_id))
    response = jsonify(view)
    response.set_etag(str(view["version"]))  # what If-Match on a command of this wallet compares
    return response


@bp.get("/users/<user_id>/wallets")
def list_user_wallets(user_id: str):
    args = query_args(UserWalletsQuerySchema)
    return jsonify(queries.list_user_wallets(user_id_in_path(user_id), current_tenant(), args["limit"],
                                             args.get("cursor")))


@bp.get("/wallets/<wallet_id>/transactions")
def list_transactions(wallet_id: str):
    args = query_args(TransactionsQuerySchema)
    wallet = require_wallet(wallet_id)
    return jsonify(transaction_search.wallet_transactions(str(wallet["id"]), current_tenant(), args["filters"],
                                                          args["limit"], args["cursor"]))


@bp.post("/wallets/<wallet_id>/freeze")
def freeze(wallet_id: str):
    body = load(FreezeSchema, json_body())
    wallet = require_wallet(wallet_id)
    return accept(commands.FREEZE, commands.Freeze(wallet_id=str(wallet["id"]), reason=body["reason"]),
                  body["metadata"])


@bp.post("/wallets/<wallet_id>/unfreeze")
def unfreeze(wallet_id: str):
    body = load(EmptySchema, json_body())
    wallet = require_wallet(wallet_id)
    return accept(commands.UNFREEZE, commands.Unfreeze(wallet_id=str(wallet["id"])), body["metadata"])


@bp.post("/wallets/<wallet_id>/close")
def close(wallet_id: str):
    body = load(EmptySchema, json_body())
    wallet = require_wallet(wallet_id)
    return accept(commands.CLOSE, commands.Close(wallet_id=str(wallet["id"])), body["metadata"])


@bp.put("/wallets/<wallet_id>/limits")
def set_limits(wallet_id: str):
    body = load(LimitsSchema, json_body())
    wallet = require_wallet(wallet_id)
    currency = wallet["currency"]
    return accept(commands.SET_LIMITS, commands.SetLimits(
        wallet_id=str(wallet["id"]),
        per_transaction=amount_in(currency, body["per_transaction"], "per_transaction"),
        daily_debit=amount_in(currency, body["daily_debit"], "daily_debit"),
        overdraft_limit=amount_in(currency, body["overdraft_limit"], "overdraft_limit", allow_zero=True)),
        body["metadata"])


@bp.get("/wallets/<wallet_id>/balance")
def balance(wallet_id: str):
    args = query_args(BalanceQuerySchema)
    wallet = require_wallet(wallet_id)
    as_of = args.get("as_of")
    if as_of is not None and as_of > datetime.now(timezone.utc):
        raise validation_failed({"as_of": ["must not be in the future"]})
    if as_of is not None and as_of < wallet["created_at"]:
        raise validation_failed({"as_of": [f"must not be before the wallet was created "
                                           f"({timestamp(wallet['created_at'])})"]})
    return jsonify(queries.balance_as_of(wallet, as_of))


@bp.get("/wallets/<wallet_id>/statement")
def statement(wallet_id: str):
    args = query_args(StatementQuerySchema)
    wallet = require_wallet(wallet_id)
    since, until = args.get("from_"), args.get("to")
    if since and until and since > until:
        raise validation_failed({"from": ["must not be after 'to'"]})
    return jsonify(queries.statement(wallet, since, until))
