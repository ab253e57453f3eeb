"""Pure projection: one Kafka event (a dict) → the history rows it stands for.

Table-driven: RULES says which history type goes on the event's own wallet and
which on its counterparty. An event type without a rule gets the default: its
own type on `wallet_id`, and the same type on `counterparty_wallet_id` when the
event names one (from the `counterparty_*` fields). New event types therefore
need a rule only when their history types differ from the event type.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation, localcontext


class InvalidEvent(ValueError):
    """An event that can never be projected (it goes to the dead letters)."""


@dataclass(frozen=True)
class Rule:
    own: str | None  # history type of the row on wallet_id (None: no row)
    counterparty: str | None  # history type of the row on counterparty_wallet_id (None: no row)


RULES: dict[str, Rule] = {
    "WALLET_CREATED": Rule("WALLET_CREATED", None),
    "WALLET_FUNDED": Rule("WALLET_FUNDED", None),
    "TRANSFER_COMPLETED": Rule("TRANSFER_OUT", "TRANSFER_IN"),
}

# History types the API knows for its `type` filter (the default rule adds an event's own type).
KNOWN_TYPES = frozenset(
    {t for r in RULES.values() for t in (r.own, r.counterparty) if t}
    | {"WALLET_WITHDRAWN", "HOLD_PLACED", "HOLD_CAPTURED", "HOLD_VOIDED", "HOLD_EXPIRED", "TRANSACTION_REVERSED",
       "WALLET_FROZEN", "WALLET_UNFROZEN", "WALLET_CLOSED", "LIMITS_CHANGED"})


def rule_for(event_type: str) -> Rule:
    return RULES.get(event_type) or Rule(event_type, event_type)


# Events on the topic that change no wallet: a job's outcome (for webhooks), not history.
NOT_HISTORY = frozenset({"JOB_SUCCEEDED", "JOB_FAILED"})


def project(event: object) -> list[dict]:
    """The history rows of an event (none for a job's outcome); raises InvalidEvent when it is malformed."""
    if not isinstance(event, dict):
        raise InvalidEvent("event is not a JSON object")
    event_type = _text(event, "event_type")
    if event_type in NOT_HISTORY:
        return []
    rule = rule_for(event_type)
    common = {
        "event_id": _uuid(event, "event_id"),
        "tenant_id": _text(event, "tenant_id"),
        "currency": _text(event, "currency"),
        "amount": _money(event, "amount"),
        "transaction_id": _uuid(event, "transaction_id", required=False),
        "request_id": _text(event, "request_id", required=False),
        "batch_id": _uuid(event, "batch_id", required=False),
        "metadata": _metadata(event),
        "reference": _text(event, "reference", required=False),
        "occurred_at": _timestamp(event, "occurred_at"),
    }
    wallet_id = _uuid(event, "wallet_id")
    counterparty_id = _uuid(event, "counterparty_wallet_id", required=False)
    rows = []
    if rule.own:
        rows.append({
            **common, "event_type": rule.own, "wallet_id": wallet_id, "user_id": _text(event, "user_id"),
            "wallet_version": _version(event, "wallet_version"),
            "balance_after": _money(event, "balance_after", signed=True),
            "counterparty_wallet_id": counterparty_id,
        })
    if rule.counterparty and counterparty_id is not None:
        rows.append({
            **common, "event_type": rule.counterparty, "wallet_id": counterparty_id,
            "user_id": _text(event, "counterparty_user_id"),
            "wallet_version": _version(event, "counterparty_wallet_version"),
            "balance_after": _money(event, "counterparty_balance_after", signed=True),
            "counterparty_wallet_id": wallet_id,
        })
    return rows


def _get(event: dict, field: str, required: bool):
    value = event.get(field)
    if value is None and required:
        raise InvalidEvent(f"{field} is missing")
    return value


def _text(event: dict, field: str, required: bool = True) -> str | None:
    value = _get(event, field, required)
    if value is not None and (not isinstance(value, str) or not value or "\x00" in value):
        raise InvalidEvent(f"{field} must be a non-empty string")
    return value


def _uuid(event: dict, field: str, required: bool = True) -> str | None:
    value = _get(event, field, required)
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except (TypeError, ValueError, AttributeError) as e:
        raise InvalidEvent(f"{field} must be a UUID") from e


def _version(event: dict, field: str) -> int:
    value = _get(event, field, True)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value < 2 ** 63:
        raise InvalidEvent(f"{field} must be a positive integer")
    return value


def _money(event: dict, field: str, signed: bool = False) -> Decimal | None:
    """Amounts travel as strings; a JSON number is refused like the API refuses it. A balance (`signed`) is
    below zero while its wallet uses its overdraft limit."""
    value = _get(event, field, False)
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise InvalidOperation
        amount = Decimal(value)
    except InvalidOperation as e:
        raise InvalidEvent(f"{field} must be a decimal string") from e
    if not amount.is_finite() or (amount < 0 and not signed) or abs(amount) >= 10 ** 35:
        raise InvalidEvent(f"{field} is out of range")
    with localcontext(prec=40):  # 35 integer digits and 3 decimals (NUMERIC(38,3)) quantize without an error
        if amount != amount.quantize(Decimal("0.001")):
            raise InvalidEvent(f"{field} has more than 3 decimals")
    return amount


def _metadata(event: dict) -> dict:
    """String keys to string values; events published before metadata existed have none."""
    value = event.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidEvent("metadata must be an object of strings")
    return value


def _timestamp(event: dict, field: str) -> datetime:
    value = _get(event, field, True)
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError) as e:
        raise InvalidEvent(f"{field} must be an RFC 3339 timestamp") from e
    if parsed.tzinfo is None:
        raise InvalidEvent(f"{field} must carry a UTC offset")
    return parsed
