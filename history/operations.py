"""The History API's operations as documented in /openapi.json."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.api import metadata_query
from app.api.docs_schemas import HealthOut, ReadyOut
from app.api.docs_schemas import money as money_field
from app.api.docs_schemas import signed_money
from app.api.openapi import Operation
from app.api.schemas import cursor_field
from app.services import cursors
from history.projector import KNOWN_TYPES

TITLE = "Wallet History API"
DESCRIPTION = "The event-sourced history of wallets and users, read from the projection of the Kafka events."


_ONE_TYPE = "(" + "|".join(sorted(KNOWN_TYPES)) + ")"
TYPES_PATTERN = f"^{_ONE_TYPE}(,{_ONE_TYPE})*$"  # exactly what the API accepts: no spaces, no empty item


class HistoryQuery(Schema):
    limit = fields.Integer(validate=validate.Range(1, 500), metadata={"default": 50})
    type = fields.String(metadata={"description": "only events of these types, comma-separated",
                                   "pattern": TYPES_PATTERN})
    from_ = fields.AwareDateTime(data_key="from", format="iso")
    to = fields.AwareDateTime(format="iso")
    reference = fields.String(validate=validate.Length(1, 255), metadata={
        "pattern": "^[^\\x00]*$", "description": "only events whose transaction or hold has this reference"})
    metadata = metadata_query.MetadataPairs()


class WalletHistoryQuery(HistoryQuery):
    cursor = cursor_field(cursors.WALLET_HISTORY)


class UserActivityQuery(HistoryQuery):
    cursor = cursor_field(cursors.USER_ACTIVITY)


class HistoryEvent(Schema):
    event_id = fields.UUID(required=True)
    event_type = fields.String(required=True, metadata={"enum": sorted(KNOWN_TYPES)})
    wallet_id = fields.UUID(required=True)
    user_id = fields.String(required=True)
    amount = money_field(required=True, allow_none=True)
    balance_after = signed_money(required=True, allow_none=True)
    wallet_version = fields.Integer(required=True)
    transaction_id = fields.UUID(required=True, allow_none=True)
    counterparty_wallet_id = fields.UUID(required=True, allow_none=True)
    request_id = fields.String(required=True, allow_none=True)
    batch_id = fields.UUID(required=True, allow_none=True,
                           metadata={"description": "the bulk submission (`POST /batches`) the command came in"})
    metadata = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                           metadata={"description": "the command's metadata (`{}` when none)"})
    reference = fields.String(required=True, allow_none=True,
                              metadata={"description": "the transaction's or hold's reference"})
    occurred_at = fields.DateTime(required=True)


class HistoryPage(Schema):
    items = fields.List(fields.Nested(HistoryEvent), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


OPERATIONS: dict[str, Operation] = {
    "history.health": Operation("Liveness", response=HealthOut, public=True, tags=("operations",)),
    "history.ready": Operation("Readiness: PostgreSQL answers and events flow to the read model (relay and "
                               "history worker not stalled, a history worker alive)", response=ReadyOut, public=True,
                               tags=("operations",),
                               other_json_responses=((503, "Not ready: `down` names what stops the read model"),)),
    "history.wallet_history": Operation("A wallet's events, newest first by wallet version", response=HistoryPage,
                                        query=WalletHistoryQuery),
    "history.user_activity": Operation("A user's events across their wallets, newest first", response=HistoryPage,
                                       query=UserActivityQuery),
    "metrics.metrics_endpoint": Operation("Prometheus metrics (admin key)", tags=("operations",), text="text/plain"),
}
