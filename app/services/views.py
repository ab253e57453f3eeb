"""How wallets, transactions and jobs look to clients (JSON-ready dicts)."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

from app.domain.money import Money, format_amount


def timestamp(value: datetime | None) -> str | None:
    """RFC 3339 UTC, e.g. 2026-11-25T19:00:00.123456Z."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _money(value, currency: str) -> str | None:
    return None if value is None else format_amount(value, currency)


def wallet_view(w: Mapping) -> dict:
    """A wallet row (with `held`, the active holds' total) as the API shows it."""
    currency = w["currency"]
    return {
        "id": str(w["id"]),
        "user_id": w["user_id"],
        "currency": currency,
        "balance": format_amount(w["balance"], currency),
        "available_balance": (Money(w["balance"], currency) - Money(w["held"], currency)).format(),
        "status": w["status"],
        "version": w["version"],
        "limits": {"per_transaction": _money(w["per_transaction_limit"], currency),
                   "daily_debit": _money(w["daily_debit_limit"], currency),
                   "overdraft_limit": format_amount(w["overdraft_limit"], currency)},
        "metadata": w["metadata"],
        "created_at": timestamp(w["created_at"]),
        "updated_at": timestamp(w["updated_at"]),
    }


def domain_wallet_view(wallet, created_at: datetime, updated_at: datetime, metadata: dict) -> dict:
    """A domain Wallet just written, as the API shows it."""
    return wallet_view({
        "id": wallet.id, "user_id": wallet.user_id, "currency": wallet.currency, "balance": wallet.balance,
        "held": wallet.held, "status": wallet.status, "version": wallet.version,
        "per_transaction_limit": wallet.limits.per_transaction, "daily_debit_limit": wallet.limits.daily_debit,
        "overdraft_limit": wallet.limits.overdraft, "metadata": metadata, "created_at": created_at, "updated_at": updated_at,
    })


def hold_view(h: Mapping, now: datetime) -> dict:
    """A hold row; an active hold past expiry reads expired even before the sweeper marks it.

    `now` is the database's clock at the read (the one expires_at was set by), never the caller's.
    """
    currency = h["currency"]
    status = "expired" if h["status"] == "active" and now >= h["expires_at"] else h["status"]
    return {
        "id": str(h["id"]),
        "wallet_id": str(h["wallet_id"]),
        "amount": format_amount(h["amount"], currency),
        "captured_amount": format_amount(h["captured_amount"], currency),
        "currency": currency,
        "status": status,
        "expires_at": timestamp(h["expires_at"]),
        "reference": h["reference"],
        "metadata": h["metadata"],
        "created_at": timestamp(h["created_at"]),
    }


def transaction_view(e: Mapping) -> dict:
    """A journal entry row as the API's transaction."""
    currency = e["currency"]

    def money(value):
        return _money(value, currency)

    reverses = e.get("reverses_entry_id")
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
        "reverses_transaction_id": None if reverses is None else str(reverses),
        "metadata": e["metadata"],
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
        "metadata": j["metadata"],
        "created_at": timestamp(j["created_at"]),
        "updated_at": timestamp(j["updated_at"]),
        "completed_at": timestamp(j["completed_at"]),
    }
