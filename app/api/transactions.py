"""Transaction routes: search, read one, reverse one."""
from __future__ import annotations

from flask import Blueprint, jsonify

from app.api.commands import accept
from app.api.context import current_tenant, json_body
from app.api.problems import validation_failed
from app.api.resources import amount_in, query_args, require_transaction
from app.api.schemas import ReverseSchema, TransactionSearchQuerySchema, load
from app.domain import commands
from app.domain.ledger import REVERSIBLE_TYPES
from app.services import transaction_search
from app.services.views import transaction_view

bp = Blueprint("transactions", __name__)


@bp.get("/transactions")
def search_transactions():
    args = query_args(TransactionSearchQuerySchema)
    return jsonify(transaction_search.search(current_tenant(), args["filters"], args["limit"], args["cursor"]))


@bp.get("/transactions/<transaction_id>")
def get_transaction(transaction_id: str):
    return jsonify(transaction_view(require_transaction(transaction_id)))


@bp.post("/transactions/<transaction_id>/reverse")
def reverse(transaction_id: str):
    body = load(ReverseSchema, json_body())
    original = require_transaction(transaction_id)
    if original["type"] not in REVERSIBLE_TYPES:
        raise validation_failed({"transaction_id": [f"a {original['type']} cannot be reversed; only "
                                                    f"{', '.join(sorted(REVERSIBLE_TYPES))}"]})
    amount = amount_in(original["currency"], body["amount"])
    if amount is not None and amount > original["amount"]:
        raise validation_failed({"amount": ["must not be more than the transaction's amount"]})
    return accept(commands.REVERSE, commands.Reverse(transaction_id=str(original["id"]), amount=amount,
                                                     reason=body["reason"]), body["metadata"])
