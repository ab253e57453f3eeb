"""Schemas of what the Wallet API answers, for the OpenAPI document (responses are built in views)."""
from __future__ import annotations

from marshmallow import Schema, fields

from app.domain.ledger import TRANSACTION_TYPES

MONEY = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "example": "100.00"}
# A balance: below zero when the wallet uses its overdraft limit.
BALANCE = {**MONEY, "pattern": r"^-?[0-9]+(\.[0-9]+)?$"}


def money(**kwargs):
    return fields.String(metadata=MONEY, **kwargs)


def nullable_money():
    return fields.String(allow_none=True, metadata=MONEY)


def metadata_out():
    return fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                       metadata={"description": "the client's metadata of the command (`{}` when none)"})


def signed_money(**kwargs):
    return fields.String(metadata=BALANCE, **kwargs)


class LimitsOut(Schema):
    per_transaction = nullable_money()
    daily_debit = nullable_money()
    overdraft_limit = fields.String(required=True, metadata={**MONEY, "description": "debits may take the balance "
                                                                                     "down to minus this"})


class WalletOut(Schema):
    id = fields.UUID(required=True)
    user_id = fields.String(required=True)
    currency = fields.String(required=True, metadata={"example": "USD"})
    balance = signed_money(required=True)
    available_balance = signed_money(required=True)
    status = fields.String(required=True, metadata={"enum": ["active", "frozen", "closed"]})
    version = fields.Integer(required=True)
    limits = fields.Nested(LimitsOut, required=True)
    metadata = metadata_out()
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


class TransactionOut(Schema):
    id = fields.UUID(required=True)
    type = fields.String(required=True, metadata={"enum": sorted(TRANSACTION_TYPES)})
    amount = money(required=True)
    currency = fields.String(required=True)
    wallet_id = fields.UUID(required=True)
    counterparty_wallet_id = fields.UUID(required=True, allow_none=True)
    balance_after = signed_money(allow_none=True)
    counterparty_balance_after = signed_money(allow_none=True)
    reference = fields.String(required=True, allow_none=True)
    reverses_transaction_id = fields.UUID(required=True, allow_none=True)
    metadata = metadata_out()
    created_at = fields.DateTime(required=True)


class StatementLine(TransactionOut):
    direction = fields.String(required=True, metadata={"enum": ["credit", "debit"]})
    running_balance = signed_money(required=True)


class HoldOut(Schema):
    id = fields.UUID(required=True)
    wallet_id = fields.UUID(required=True)
    amount = money(required=True)
    captured_amount = money(required=True)
    currency = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["active", "captured", "voided", "expired"]})
    expires_at = fields.DateTime(required=True)
    reference = fields.String(required=True, allow_none=True)
    metadata = metadata_out()
    created_at = fields.DateTime(required=True)


class JobError(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)


class JobOut(Schema):
    id = fields.UUID(required=True)
    type = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["queued", "running", "succeeded", "failed", "canceled"]})
    attempts = fields.Integer(required=True)
    result = fields.Dict(required=True, allow_none=True,
                         metadata={"description": "the wallet, transaction or hold the command produced"})
    error = fields.Nested(JobError, required=True, allow_none=True)
    request_id = fields.String(required=True)
    metadata = metadata_out()
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    completed_at = fields.DateTime(required=True, allow_none=True)


class BatchCounts(Schema):
    queued = fields.Integer(required=True)
    running = fields.Integer(required=True)
    succeeded = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    canceled = fields.Integer(required=True)


class BatchOut(Schema):
    id = fields.UUID(required=True)
    atomic = fields.Boolean(required=True)
    status = fields.String(required=True, metadata={"enum": ["queued", "running", "completed"],
                                                    "description": "completed once every job is final"})
    size = fields.Integer(required=True, metadata={"description": "the number of commands"})
    counts = fields.Nested(BatchCounts, required=True, metadata={"description": "the batch's jobs by status"})
    job_ids = fields.List(fields.UUID(), required=True, metadata={
        "description": "in command order; an atomic batch has one job, of type `batch`"})
    created_at = fields.DateTime(required=True)
    completed_at = fields.DateTime(required=True, allow_none=True)


class JobList(Schema):
    items = fields.List(fields.Nested(JobOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class Problem(Schema):
    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    code = fields.String(required=True, metadata={"example": "VALIDATION_FAILED"})
    errors = fields.Dict(keys=fields.String(), values=fields.Raw())


class WalletList(Schema):
    items = fields.List(fields.Nested(WalletOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class TransactionList(Schema):
    items = fields.List(fields.Nested(TransactionOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class BalanceOut(Schema):
    balance = signed_money(required=True)
    available_balance = signed_money(required=True)
    as_of = fields.DateTime(required=True)


class StatementOut(Schema):
    wallet_id = fields.UUID(required=True)
    currency = fields.String(required=True)
    from_ = fields.DateTime(required=True, data_key="from")
    to = fields.DateTime(required=True)
    opening_balance = signed_money(required=True)
    closing_balance = signed_money(required=True)
    items = fields.List(fields.Nested(StatementLine), required=True)


class HealthOut(Schema):
    status = fields.String(required=True)


class RelayStatus(Schema):
    status = fields.String(required=True, metadata={"enum": ["ok", "stalled"]})
    oldest_unpublished_age_s = fields.Float(required=True, allow_none=True,
                                            metadata={"description": "seconds the oldest outbox event has waited"})
    stalled_s = fields.Float(required=True, metadata={"description": "seconds the active relay has published "
                                                                      "nothing while events waited"})
    processes = fields.Integer(required=True, metadata={"description": "live relays (one active, others standby)"})


class HistoryWorkerStatus(Schema):
    status = fields.String(required=True, metadata={"enum": ["ok", "stalled", "absent"]})
    stalled_s = fields.Float(required=True, metadata={"description": "longest time a history worker has applied "
                                                                      "nothing while events waited"})
    processes = fields.Integer(required=True, metadata={"description": "live history workers"})


class PipelineStatus(Schema):
    relay = fields.Nested(RelayStatus, required=True)
    history = fields.Nested(HistoryWorkerStatus, required=True)
    webhooks = fields.Nested(HistoryWorkerStatus, required=True,
                             metadata={"description": "the webhook dispatchers (events → deliveries), like history"})


class ReadyOut(Schema):
    status = fields.String(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    down = fields.List(fields.String())
    pipeline = fields.Nested(PipelineStatus, required=True,
                             metadata={"description": "whether events flow from the outbox to the history"})


class WebhookEndpointOut(Schema):
    id = fields.UUID(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(), required=True)
    description = fields.String(required=True, allow_none=True)
    status = fields.String(required=True, metadata={"enum": ["enabled", "disabled"]})
    created_at = fields.DateTime(required=True)
    secret = fields.String(metadata={"description": "whsec_…: only in the answer to a registration or a rotation",
                                     "pattern": "^whsec_[A-Za-z0-9+/]+={0,2}$"})


class WebhookEndpointList(Schema):
    items = fields.List(fields.Nested(WebhookEndpointOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class WebhookDeliveryOut(Schema):
    id = fields.UUID(required=True)
    endpoint_id = fields.UUID(required=True)
    webhook_id = fields.String(required=True, metadata={"description": "the webhook-id header, the same on every "
                                                                       "attempt"})
    event_type = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": ["pending", "succeeded", "failed"]})
    attempts = fields.Integer(required=True)
    last_status_code = fields.Integer(required=True, allow_none=True)
    last_error = fields.String(required=True, allow_none=True)
    next_attempt_at = fields.DateTime(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)


class WebhookDeliveryList(Schema):
    items = fields.List(fields.Nested(WebhookDeliveryOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class WebhookAttemptOut(Schema):
    attempt = fields.Integer(required=True)
    started_at = fields.DateTime(required=True)
    duration_ms = fields.Integer(required=True)
    status_code = fields.Integer(required=True, allow_none=True, metadata={"description": "the receiver's answer"})
    error = fields.String(required=True, allow_none=True,
                          metadata={"description": "why it failed: no answer (refused, timeout, TLS) or a non-2xx"})


class WebhookAttemptList(Schema):
    items = fields.List(fields.Nested(WebhookAttemptOut), required=True)
    next_cursor = fields.String(required=True, allow_none=True)
