"""Events: what happened, as published on Kafka. Amounts are strings.

Every event belongs to one wallet's sequence (its Kafka key) and carries the
wallet's version after the change, so consumers can order and dedupe.
"""
from __future__ import annotations

import uuid
from datetime import datetime

from app.domain.holds import Hold
from app.domain.ledger import Entry, Wallet
from app.domain.money import format_amount

WALLET_CREATED = "WALLET_CREATED"
WALLET_FUNDED = "WALLET_FUNDED"
TRANSFER_COMPLETED = "TRANSFER_COMPLETED"
WALLET_WITHDRAWN = "WALLET_WITHDRAWN"
HOLD_PLACED = "HOLD_PLACED"
HOLD_CAPTURED = "HOLD_CAPTURED"
HOLD_VOIDED = "HOLD_VOIDED"
HOLD_EXPIRED = "HOLD_EXPIRED"
TRANSACTION_REVERSED = "TRANSACTION_REVERSED"
WALLET_FROZEN = "WALLET_FROZEN"
WALLET_UNFROZEN = "WALLET_UNFROZEN"
WALLET_CLOSED = "WALLET_CLOSED"
LIMITS_CHANGED = "LIMITS_CHANGED"

_ENTRY_EVENT_TYPES = {
    "FUND": WALLET_FUNDED, "TRANSFER": TRANSFER_COMPLETED, "WITHDRAWAL": WALLET_WITHDRAWN,
    "CAPTURE": HOLD_CAPTURED, "REVERSAL": TRANSACTION_REVERSED,
}

# Event ids derive from the job, so the same change always has the same id:
# consumers dedupe on it, and a rebuild of the read model reproduces it.
_EVENT_NAMESPACE = uuid.UUID("6f1c2a4e-2b7d-4c5e-9a51-0d3f8e2b7a10")


def event_id(job_id: str, event_type: str, wallet_id: str, item: int | None = None) -> str:
    """The event's id; `item` is the command's index inside an atomic batch job (one job, many commands)."""
    name = f"{job_id}/{event_type}/{wallet_id}" if item is None else f"{job_id}/{item}/{event_type}/{wallet_id}"
    return str(uuid.uuid5(_EVENT_NAMESPACE, name))


def _money(value, currency: str) -> str | None:
    return None if value is None else format_amount(value, currency)


def wallet_event(event_type: str, wallet: Wallet, occurred_at: datetime, request_id: str | None,
                 job_id: str | None, *, batch_id: str | None = None, item: int | None = None,
                 metadata: dict | None = None, **fields) -> dict:
    """An event in `wallet`'s sequence; `wallet` is the wallet after the change.

    Changes made without a job (a hold's expiry) derive their id from the wallet version.
    `batch_id` names the bulk submission the command came in; `item` is the
    command's index when one job (an atomic batch) applies many; `metadata` is
    the command's (a hold's expiry: the hold's).
    """
    event = {
        "event_id": event_id(job_id or f"version:{wallet.version}", event_type, wallet.id, item),
        "event_type": event_type,
        "occurred_at": occurred_at.isoformat().replace("+00:00", "Z"),
        "tenant_id": wallet.tenant_id,
        "wallet_id": wallet.id,
        "user_id": wallet.user_id,
        "currency": wallet.currency,
        "wallet_version": wallet.version,
        "balance_after": _money(wallet.balance, wallet.currency),
        "available_balance_after": _money(wallet.available, wallet.currency),
        "status": wallet.status,
        "job_id": job_id,
        "request_id": request_id,
        "batch_id": batch_id,
        "metadata": metadata or {},
    }
    event.update(fields)
    return event


def wallet_created(wallet: Wallet, occurred_at: datetime, request_id: str | None, job_id: str,
                   metadata: dict | None = None) -> dict:
    return wallet_event(WALLET_CREATED, wallet, occurred_at, request_id, job_id, metadata=metadata)


def entry_recorded(entry: Entry, transaction_id: str, occurred_at: datetime, request_id: str | None, job_id: str,
                   *, batch_id: str | None = None, item: int | None = None, metadata: dict | None = None,
                   **fields) -> dict:
    """The event for a journal entry, keyed by (and in the sequence of) its wallet."""
    wallet = entry.wallet_after(entry.wallet_id)
    event = wallet_event(
        _ENTRY_EVENT_TYPES[entry.type], wallet, occurred_at, request_id, job_id, batch_id=batch_id, item=item,
        metadata=metadata,
        transaction_id=transaction_id, transaction_type=entry.type,
        amount=format_amount(entry.amount, entry.currency), reference=entry.reference,
        reverses_transaction_id=entry.reverses_entry_id, **fields,
    )
    counterparty = entry.wallet_after(entry.counterparty_wallet_id)
    if counterparty is not None:
        event.update(
            counterparty_wallet_id=counterparty.id,
            counterparty_user_id=counterparty.user_id,
            counterparty_wallet_version=counterparty.version,
            counterparty_balance_after=format_amount(counterparty.balance, counterparty.currency),
        )
    return event


def hold_changed(event_type: str, hold: Hold, wallet: Wallet, occurred_at: datetime, request_id: str | None,
                 job_id: str | None, metadata: dict | None = None) -> dict:
    return wallet_event(event_type, wallet, occurred_at, request_id, job_id, metadata=metadata, hold_id=hold.id,
                        amount=format_amount(hold.amount, wallet.currency), hold_status=hold.status,
                        expires_at=hold.expires_at.isoformat().replace("+00:00", "Z"), reference=hold.reference)
