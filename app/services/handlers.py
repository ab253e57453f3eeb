"""One handler per command: read, apply the domain rules, write, emit events.

Each runs inside the executor's transaction and returns the job's result.
Raising ConcurrencyConflict rolls the whole attempt back to be retried;
raising a BusinessRuleViolation ends the job failed.
"""
from __future__ import annotations

from datetime import datetime, timezone

from app.adapters.store import ClaimedJob, WalletStore
from app.domain import commands, events, ledger
from app.domain.errors import WalletNotFound
from app.domain.ledger import Entry, Wallet
from app.services.views import transaction_view, wallet_view


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _wallets(store: WalletStore, *ids: str) -> list[Wallet]:
    found = store.load_wallets(list(ids))
    missing = [i for i in ids if i not in found]
    if missing:
        raise WalletNotFound(f"wallet {missing[0]} does not exist")
    return [found[i] for i in ids]


def _apply_entry(store: WalletStore, job: ClaimedJob, entry: Entry) -> dict:
    """Persist an entry: wallets in id order (no deadlocks), journal, outbox."""
    now = _now()
    for wallet in entry.wallets_after:
        store.save_wallet(wallet, now)
    transaction_id = store.record_entry(entry, job=job, now=now)
    store.add_events([events.entry_recorded(entry, transaction_id, now, job.request_id, job.id)])
    wallet_after = entry.wallet_after(entry.wallet_id)
    counterparty_after = entry.wallet_after(entry.counterparty_wallet_id)
    return transaction_view({
        "id": transaction_id, "type": entry.type, "amount": entry.amount, "currency": entry.currency,
        "wallet_id": entry.wallet_id, "counterparty_wallet_id": entry.counterparty_wallet_id,
        "balance_after": wallet_after.balance,
        "counterparty_balance_after": counterparty_after.balance if counterparty_after else None,
        "reference": entry.reference, "created_at": now,
    })


def create_wallet(store: WalletStore, job: ClaimedJob, cmd: commands.CreateWallet) -> dict:
    now = _now()
    wallet = Wallet(id=cmd.wallet_id, tenant_id=job.tenant_id, user_id=cmd.user_id, currency=cmd.currency,
                    balance=ledger.ZERO, status=ledger.ACTIVE, version=1)
    if store.insert_wallet(wallet, now):
        store.add_events([events.wallet_created(wallet, now, job.request_id, job.id)])
    return wallet_view({**wallet.__dict__, "created_at": now, "updated_at": now})


def fund(store: WalletStore, job: ClaimedJob, cmd: commands.Fund) -> dict:
    (wallet,) = _wallets(store, cmd.wallet_id)
    return _apply_entry(store, job, ledger.fund(wallet, cmd.amount, cmd.reference))


def transfer(store: WalletStore, job: ClaimedJob, cmd: commands.Transfer) -> dict:
    source, destination = _wallets(store, cmd.wallet_id, cmd.to_wallet_id)
    return _apply_entry(store, job, ledger.transfer(source, destination, cmd.amount, cmd.reference))


HANDLERS = {
    commands.CREATE_WALLET: create_wallet,
    commands.FUND: fund,
    commands.TRANSFER: transfer,
}
