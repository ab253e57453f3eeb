"""Marshmallow schemas of the wallet API's requests and query strings."""
from __future__ import annotations

import re
from decimal import Decimal

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from app.api.metadata_query import MetadataPairs
from app.domain import metadata as md
from app.domain.errors import InvalidAmount
from app.domain.holds import DEFAULT_EXPIRES_IN_SECONDS, MAX_EXPIRES_IN_SECONDS
from app.domain.ledger import TRANSACTION_TYPES
from app.domain.webhooks import MAX_URL_LENGTH, URL_PATTERN
from app.domain.money import CURRENCY_EXPONENTS, SUPPORTED_CURRENCIES, parse_amount
from app.services import cursors
from app.services.transaction_search import TransactionFilters
from app.services.webhooks import NOTIFICATION_TYPES

PRINTABLE = re.compile(r"[\x20-\x7e]+")
PRINTABLE_PATTERN = "^[\\x20-\\x7e]+$"  # the same rule, for the OpenAPI document


def printable(value: str) -> None:
    if not PRINTABLE.fullmatch(value):
        raise ValidationError("must contain printable ASCII characters only")


MAX_DECIMALS = max(CURRENCY_EXPONENTS.values())
# Exactly what `Amount` accepts: > 0, at most 15 integer digits besides leading zeros, at most MAX_DECIMALS
# decimals (the wallet's currency may allow fewer: that is checked once the wallet is known).
_BELOW_ONE = "|".join(f"0{{{k}}}[1-9][0-9]{{0,{MAX_DECIMALS - 1 - k}}}" for k in range(MAX_DECIMALS))
AMOUNT_PATTERN = f"^(0*[1-9][0-9]{{0,14}}(\\.[0-9]{{1,{MAX_DECIMALS}}})?|0+\\.({_BELOW_ONE}))$"
# ... or zero (an overdraft limit).
AMOUNT_OR_ZERO_PATTERN = AMOUNT_PATTERN[:-2] + f"|0+(\\.0{{1,{MAX_DECIMALS}}})?)$"


class Amount(fields.Field):
    """A positive amount (or zero, with allow_zero) sent as a plain decimal string (never a JSON number)."""

    def __init__(self, allow_zero: bool = False, **kwargs):
        self.allow_zero = allow_zero
        self.pattern = AMOUNT_OR_ZERO_PATTERN if allow_zero else AMOUNT_PATTERN
        metadata = {"type": "string", "pattern": self.pattern, "example": "10.00",
                    "description": ("a decimal string, zero or more," if allow_zero else "a positive decimal string")
                    + " with at most the currency's minor-unit digits", **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            parse_amount(value, allow_zero=self.allow_zero)  # the currency's precision: once the wallet is known
        except InvalidAmount as e:
            raise ValidationError(e.message) from e
        if not re.fullmatch(self.pattern, value):
            raise ValidationError(f"must have at most {MAX_DECIMALS} decimal places")
        return value

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else str(value)


class Metadata(fields.Field):
    """The client's labels on a command (app.domain.metadata): at most 20 keys of 1–40 characters of
    `[A-Za-z0-9_.-]`, string values of at most 500 characters."""

    def __init__(self, **kwargs):
        super().__init__(load_default=dict, metadata={
            "type": "object", "maxProperties": md.MAX_KEYS, "example": {"order_id": "A-1042"},
            "additionalProperties": {"type": "string", "maxLength": md.MAX_VALUE, "pattern": TEXT_PATTERN},
            "description": "your labels, returned with the job and what the command produced and carried in events "
                           "and webhooks: at most 20 keys of 1–40 characters of A–Z a–z 0–9 _ . - (a key outside "
                           "that rule is refused with 422: OpenAPI 3.0 cannot state it), string values of at most "
                           "500 characters"}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return md.validated(value)
        except md.InvalidMetadata as e:
            raise ValidationError(str(e)) from e


# Free text is any Unicode but NUL, which PostgreSQL cannot store (lone surrogates are not Unicode either).
TEXT_PATTERN = "^[^\\x00]*$"


def storable_text(value: str) -> None:
    if "\x00" in value or any("\ud800" <= c <= "\udfff" for c in value):
        raise ValidationError("must not contain NUL characters or unpaired surrogates")


class Reference(fields.String):
    def __init__(self, **kwargs):
        super().__init__(load_default=None, allow_none=True, validate=[validate.Length(max=255), storable_text],
                         metadata={"pattern": TEXT_PATTERN}, **kwargs)


class CreateWalletSchema(Schema):
    metadata = Metadata()
    user_id = fields.String(required=True, validate=[validate.Length(1, 100), printable],
                            metadata={"pattern": PRINTABLE_PATTERN})
    currency = fields.String(load_default="USD", validate=validate.OneOf(sorted(SUPPORTED_CURRENCIES),
                                                                         error="must be a supported ISO 4217 code"))


class FundSchema(Schema):
    metadata = Metadata()
    amount = Amount(required=True)
    reference = Reference()


class TransferSchema(Schema):
    metadata = Metadata()
    to_wallet_id = fields.UUID(required=True)
    amount = Amount(required=True)
    reference = Reference()


def cursor_field(*cursor_formats: cursors.CursorFormat) -> fields.String:
    """An optional `cursor` of one list (of any of its orders): the pattern is the whole rule (app/services/cursors.py)."""
    pattern = cursors.any_of(*cursor_formats)
    return fields.String(validate=validate.Regexp(pattern, error=cursors.MALFORMED),
                         metadata={"description": "next_cursor of the previous page (opaque)", "pattern": pattern})


class PageQuerySchema(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 500), strict=False)


class UserWalletsQuerySchema(PageQuerySchema):
    cursor = cursor_field(cursors.USER_WALLETS)


_ONE_TYPE = "(" + "|".join(sorted(TRANSACTION_TYPES)) + ")"
TYPES_PATTERN = f"^{_ONE_TYPE}(,{_ONE_TYPE})*$"  # exactly what `Types` accepts: no spaces, no empty item


class Types(fields.String):
    """One or more transaction types, comma-separated (`FUND,TRANSFER`), loaded as a sorted tuple."""

    def __init__(self, **kwargs):
        super().__init__(metadata={"pattern": TYPES_PATTERN, "description": "only transactions of these types, "
                                   "comma-separated, e.g. FUND,TRANSFER"}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if not re.fullmatch(TYPES_PATTERN, text):
            raise ValidationError(f"must be one or more of {', '.join(sorted(TRANSACTION_TYPES))}, comma-separated")
        return tuple(sorted(set(text.split(","))))


class TransactionFiltersSchema(PageQuerySchema):
    """The filters of a transaction search (api-contract.md, "Metadata, search and preconditions")."""

    type = Types()
    reference = fields.String(validate=[validate.Length(max=255), storable_text],
                              metadata={"pattern": TEXT_PATTERN, "description": "exact match"})
    min_amount = Amount(metadata={"description": "at least this amount (inclusive), as a decimal string"})
    max_amount = Amount(metadata={"description": "at most this amount (inclusive), as a decimal string"})
    from_ = fields.AwareDateTime(format="iso", data_key="from",
                                 metadata={"description": "created at or after this instant (RFC 3339)"})
    to = fields.AwareDateTime(format="iso", metadata={"description": "created before this instant (RFC 3339)"})
    metadata = MetadataPairs()

    @validates_schema
    def _bounds_in_order(self, data, **kwargs):
        errors = {}
        if "from_" in data and "to" in data and data["from_"] > data["to"]:
            errors["from"] = ["must not be after 'to'"]
        if "min_amount" in data and "max_amount" in data and Decimal(data["min_amount"]) > Decimal(data["max_amount"]):
            errors["min_amount"] = ["must not be more than 'max_amount'"]
        if errors:
            raise ValidationError(errors)

    @post_load
    def _as_filters(self, data, **kwargs) -> dict:
        """{"limit", "cursor", "filters": TransactionFilters}."""
        def amount(name):
            return Decimal(data[name]) if name in data else None

        wallet_id = data.get("wallet_id")
        filters = TransactionFilters(
            wallet_id=None if wallet_id is None else str(wallet_id), types=data.get("type", ()),
            reference=data.get("reference"), min_amount=amount("min_amount"), max_amount=amount("max_amount"),
            since=data.get("from_"), until=data.get("to"), metadata=data.get("metadata", ()))
        return {"limit": data["limit"], "cursor": data.get("cursor"), "filters": filters}


_FILTERS = ("type", "reference", "min_amount", "max_amount", "from_", "to", "metadata")
_OTHER_ORDER = "is a cursor of the list {}; it cannot continue this one: ask for the first page again"


class TransactionsQuerySchema(TransactionFiltersSchema):
    """GET /wallets/{id}/transactions: by the wallet's version without filters, a search narrowed to it with."""

    cursor = cursor_field(cursors.TRANSACTIONS, cursors.TRANSACTION_SEARCH)

    @validates_schema
    def _cursor_of_this_order(self, data, **kwargs):
        if "cursor" not in data:
            return
        filtered = any(name in data for name in _FILTERS)
        if filtered and cursors.TRANSACTIONS.matches(data["cursor"]):
            raise ValidationError({"cursor": [_OTHER_ORDER.format("without filters")]})
        if not filtered and cursors.TRANSACTION_SEARCH.matches(data["cursor"]):
            raise ValidationError({"cursor": [_OTHER_ORDER.format("with filters")]})


class TransactionSearchQuerySchema(TransactionFiltersSchema):
    """GET /transactions: the tenant's transactions, newest first by creation."""

    wallet_id = fields.UUID(metadata={"description": "only transactions this wallet takes part in (as the wallet "
                                                     "or the counterparty)"})
    cursor = cursor_field(cursors.TRANSACTION_SEARCH)


_INSTANCES: dict[type[Schema], Schema] = {}


def load(schema_class: type[Schema], data) -> dict:
    """Validate data (raises ValidationError → 422).

    One instance per schema class, shared by requests and threads: building a
    Schema deep-copies its fields (~0.4 ms, a tenth of a command request), and
    load() keeps no state on the instance.
    """
    if not isinstance(data, dict):
        raise ValidationError({"_schema": ["the body must be a JSON object"]})
    schema = _INSTANCES.get(schema_class)
    if schema is None:
        schema = _INSTANCES[schema_class] = schema_class()
    return schema.load(data)


class WithdrawSchema(FundSchema):
    pass


_BATCH_TYPES = ("fund", "withdraw", "transfer")


class BatchFundSchema(FundSchema):
    """An item of a batch: a single command's body plus its `type` and `wallet_id`."""

    type = fields.String(required=True, validate=validate.OneOf(_BATCH_TYPES))
    wallet_id = fields.UUID(required=True)


class BatchWithdrawSchema(BatchFundSchema):
    pass


class BatchTransferSchema(TransferSchema):
    type = fields.String(required=True, validate=validate.OneOf(_BATCH_TYPES))
    wallet_id = fields.UUID(required=True)


BATCH_ITEM_SCHEMAS = {"fund": BatchFundSchema, "withdraw": BatchWithdrawSchema, "transfer": BatchTransferSchema}


def _batch_item_doc(command_type: str, **fields_of_type: dict) -> dict:
    """The OpenAPI shape of one kind of batch item: its command's body plus `type` and `wallet_id`."""
    properties = {"type": {"type": "string", "enum": [command_type]}, "wallet_id": {"type": "string", "format": "uuid"},
                  **fields_of_type,
                  "amount": {"type": "string", "pattern": AMOUNT_PATTERN, "example": "10.00"},
                  "reference": {"type": "string", "maxLength": 255, "pattern": TEXT_PATTERN, "nullable": True},
                  "metadata": Metadata().metadata}
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "required": ["type", "wallet_id", *fields_of_type, "amount"]}


BATCH_ITEM_DOCS = [_batch_item_doc("fund"), _batch_item_doc("withdraw"),
                   _batch_item_doc("transfer", to_wallet_id={"type": "string", "format": "uuid"})]


class BatchSchema(Schema):
    atomic = fields.Boolean(load_default=False, truthy={True}, falsy={False},
                            metadata={"description": "true: every command or none, in one ledger transaction"})
    commands = fields.List(fields.Raw(), required=True, validate=validate.Length(1, 1000))


class BatchBodySchema(BatchSchema):
    """The OpenAPI shape of POST /batches (the route validates each item by its type)."""

    commands = fields.List(fields.Raw(metadata={"oneOf": BATCH_ITEM_DOCS}), required=True,
                           validate=validate.Length(1, 1000),
                           metadata={"description": "1–1000 fund / withdraw / transfer commands"})


class BatchJobsQuerySchema(PageQuerySchema):
    cursor = cursor_field(cursors.BATCH_JOBS)
    status = fields.String(validate=validate.OneOf(
        ["queued", "running", "succeeded", "failed", "canceled"]))


class PlaceHoldSchema(Schema):
    metadata = Metadata()
    amount = Amount(required=True)
    expires_in_seconds = fields.Integer(load_default=DEFAULT_EXPIRES_IN_SECONDS, strict=True,
                                        validate=validate.Range(1, MAX_EXPIRES_IN_SECONDS))
    reference = Reference()


class CaptureHoldSchema(Schema):
    metadata = Metadata()
    amount = Amount(load_default=None)
    to_wallet_id = fields.UUID(load_default=None)


class ReverseSchema(Schema):
    metadata = Metadata()
    amount = Amount(load_default=None)
    reason = Reference()


class FreezeSchema(Schema):
    metadata = Metadata()
    reason = fields.String(required=True, validate=[validate.Length(1, 255), storable_text],
                           metadata={"pattern": TEXT_PATTERN})


class EmptySchema(Schema):
    """Commands with no fields: an empty body or {} (anything else is refused)."""
    metadata = Metadata()


class LimitsSchema(Schema):
    metadata = Metadata()
    per_transaction = Amount(load_default=None, allow_none=True)
    daily_debit = Amount(load_default=None, allow_none=True)
    overdraft_limit = Amount(allow_zero=True, load_default="0", metadata={
        "description": "how far below zero debits may take the balance (default \"0\": not at all)"})


class BalanceQuerySchema(Schema):
    as_of = fields.AwareDateTime(format="iso")


class StatementQuerySchema(Schema):
    from_ = fields.AwareDateTime(format="iso", data_key="from")
    to = fields.AwareDateTime(format="iso")


class WebhookEndpointSchema(Schema):
    # Checked by the route (422 WEBHOOK_URL_NOT_ALLOWED), so that every refused URL gets that code.
    url = fields.String(required=True, metadata={
        "description": "http(s) URL the notifications are POSTed to; its host must not resolve to a loopback, "
                       "private, link-local or metadata address", "pattern": URL_PATTERN, "maxLength": MAX_URL_LENGTH})
    events = fields.List(fields.String(validate=validate.Length(1, 64),
                                       metadata={"enum": ["*", *sorted(NOTIFICATION_TYPES)]}), required=True,
                         validate=validate.Length(1, 64),
                         metadata={"description": "notification types (job.succeeded, wallet.transfer_in, ...) "
                                                  "or [\"*\"] for all"})
    description = fields.String(load_default=None, allow_none=True, validate=[validate.Length(max=255),
                                                                              storable_text],
                                metadata={"pattern": TEXT_PATTERN})


class DeliveriesQuerySchema(PageQuerySchema):
    cursor = cursor_field(cursors.WEBHOOK_DELIVERIES)
    status = fields.String(validate=validate.OneOf(["pending", "succeeded", "failed"]))
