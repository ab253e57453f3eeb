"""How wallets, transactions and jobs look to clients (JSON-ready dicts)."""
from __future__ import annotations

from datetime import datetime, timezone

from app.domain.money import format_amount


def timestamp(value: datetime | None) -> str | None:
    """RFC 3339 UTC, e.g. 2026-11-25T19:00:00.123456Z."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def wallet_view(w) -> dict:
    """A wallet row (mapping) or domain Wallet plus timestamps, as the API shows it."""
    get = w.get if isinstance(w, dict) else w.__getitem__
    return {
        "id": str(get("id")),
        "user_id": get("user_id"),
        "currency": get("currency"),
        "balance": format_amount(get("balance"), get("currency")),
        "available_balance": format_amount(get("balance"), get("currency")),
        "status": get("status"),
        "version": get("version"),
        "created_at": timestamp(get("created_at")),
        "updated_at": timestamp(get("updated_at")),
    }


def transaction_view(e) -> dict:
    """A journal entry row as the API's transaction."""
    currency = e["currency"]

    def money(value):
        return None if value is None else format_amount(value, currency)

    return {
        "id": str(e["id"]),
        "type": e["type"],
        "amount": money(e["amount"]),
        "currency": currency,
        "wallet_id": str(e["wallet_id"]),
        "counterparty_wallet_id": None if e["counterparty_wallet_id"] is None else str(e["counterparty_wallet_id"]),
        "balance_after": money(e["balance_after"]),
        "counterparty_balance_after": money(e["counterparty_balance_after"]),
        "reference": e["reference"],
        "created_at": timestamp(e["created_at"]),
    }


def job_view(j) -> dict:
    return {
        "id": str(j["id"]),
        "type": j["type"],
        "status": j["status"],
        "attempts": j["attempts"],
        "result": j["result"],
        "error": j["error"],
        "request_id": j["request_id"],
        "created_at": timestamp(j["created_at"]),
        "updated_at": timestamp(j["updated_at"]),
        "completed_at": timestamp(j["completed_at"]),
    }
