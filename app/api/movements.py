"""Money movement routes: fund, withdraw, transfer."""
from __future__ import annotations

from flask import Blueprint

from app.api.commands import accept
from app.api.context import json_body
from app.api.problems import validation_failed
from app.api.resources import amount_in, command_wallets
from app.api.schemas import FundSchema, TransferSchema, WithdrawSchema, load
from app.domain import commands

bp = Blueprint("movements", __name__)


@bp.post("/wallets/<wallet_id>/fund")
def fund(wallet_id: str):
    body = load(FundSchema, json_body())
    wallet, = command_wallets(wallet_id)
    return accept(commands.FUND, commands.Fund(
        wallet_id=str(wallet["id"]), amount=amount_in(wallet["currency"], body["amount"]),
        reference=body["reference"]), body["metadata"])


@bp.post("/wallets/<wallet_id>/withdraw")
def withdraw(wallet_id: str):
    body = load(WithdrawSchema, json_body())
    wallet, = command_wallets(wallet_id)
    return accept(commands.WITHDRAW, commands.Withdraw(
        wallet_id=str(wallet["id"]), amount=amount_in(wallet["currency"], body["amount"]),
        reference=body["reference"]), body["metadata"])


@bp.post("/wallets/<wallet_id>/transfer")
def transfer(wallet_id: str):
    body = load(TransferSchema, json_body())
    to_wallet_id = str(body["to_wallet_id"])
    wallet, _ = command_wallets(wallet_id, to_wallet_id)
    if to_wallet_id == str(wallet["id"]):
        raise validation_failed({"to_wallet_id": ["must be a different wallet than the source"]})
    return accept(commands.TRANSFER, commands.Transfer(
        wallet_id=str(wallet["id"]), to_wallet_id=to_wallet_id, amount=amount_in(wallet["currency"], body["amount"]),
        reference=body["reference"]), body["metadata"])
