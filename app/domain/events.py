"""Events: what happened, as published on Kafka. Amounts are strings."""
from __future__ import annotations

import uuid
from datetime import datetime

from app.domain.ledger import Entry, Wallet
from app.domain.money import format_amount

WALLET_CREATED = "WALLET_CREATED"
WALLET_FUNDED = "WALLET_FUNDED"
TRANSFER_COMPLETED = "TRANSFER_COMPLETED"

_ENTRY_EVENT_TYPES = {"FUND": WALLET_FUNDED, "TRANSFER": TRANSFER_COMPLETED}


# Event ids derive from the job, so the same change always has the same id:
# consumers dedupe on it, and a rebuild of the read model reproduces it.
_EVENT_NAMESPACE = uuid.UUID("6f1c2a4e-2b7d-4c5e-9a51-0d3f8e2b7a10")


def event_id(job_id: str, event_type: str, wallet_id: str) -> str:
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{job_id}/{event_type}/{wallet_id}"))


def _envelope(event_type: str, wallet: Wallet, occurred_at: datetime, request_id: str | None, job_id: str) -> dict:
    return {
        "event_id": event_id(job_id, event_type, wallet.id),
        "event_type": event_type,
        "occurred_at": occurred_at.isoformat().replace("+00:00", "Z"),
        "tenant_id": wallet.tenant_id,
        "wallet_id": wallet.id,
        "user_id": wallet.user_id,
        "currency": wallet.currency,
        "wallet_version": wallet.version,
        "job_id": job_id,
        "request_id": request_id,
    }


def wallet_created(wallet: Wallet, occurred_at: datetime, request_id: str | None, job_id: str) -> dict:
    event = _envelope(WALLET_CREATED, wallet, occurred_at, request_id, job_id)
    event["balance_after"] = format_amount(wallet.balance, wallet.currency)
    return event


def entry_recorded(entry: Entry, transaction_id: str, occurred_at: datetime, request_id: str | None, job_id: str) -> dict:
    """The event for a journal entry, keyed by (and in the sequence of) its wallet."""
    wallet = entry.wallet_after(entry.wallet_id)
    event = _envelope(_ENTRY_EVENT_TYPES[entry.type], wallet, occurred_at, request_id, job_id)
    event.update(
        transaction_id=transaction_id,
        transaction_type=entry.type,
        amount=format_amount(entry.amount, entry.currency),
        balance_after=format_amount(wallet.balance, wallet.currency),
        reference=entry.reference,
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
