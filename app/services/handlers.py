"""One handler per command: read, apply the domain rules, write, emit events.

Each runs inside the executor's transaction and returns the job's result.
Raising ConcurrencyConflict rolls the whole attempt back to be retried;
raising a BusinessRuleViolation ends the job failed.

Time is the database's (store.now()): a hold's expiry, the day a daily limit
counts and every timestamp written agree with the SQL that compares them with
now(), whatever the worker's own clock says.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from app.adapters.store import ClaimedJob, WalletStore
from app.domain import commands, events, holds, ledger
from app.domain.errors import HoldNotFound, TransactionNotFound, WalletNotFound
from app.domain.holds import Hold
from app.domain.ledger import Entry, Wallet
from app.services.views import domain_wallet_view, hold_view, transaction_view, wallet_view


def _wallets(store: WalletStore, *ids: str) -> list[Wallet]:
    found = store.load_wallets(list(ids))
    missing = [i for i in ids if i not in found]
    if missing:
        raise WalletNotFound(f"wallet {missing[0]} does not exist")
    return [found[i] for i in ids]


def _hold(store: WalletStore, hold_id: str) -> tuple[Hold, Wallet]:
    hold = store.load_hold(hold_id)
    if hold is None:
        raise HoldNotFound(f"hold {hold_id} does not exist")
    (wallet,) = _wallets(store, hold.wallet_id)
    return hold, wallet


def _apply_entry(store: WalletStore, job: ClaimedJob, entry: Entry, now: datetime | None = None,
                 hold_id: str | None = None) -> dict:
    """Persist an entry: wallets in id order (no deadlocks), journal, outbox."""
    now = now or store.now()
    for wallet in entry.wallets_after:
        store.save_wallet(wallet, now)
    transaction_id = store.record_entry(entry, job=job, now=now, hold_id=hold_id)
    extra = {"hold_id": hold_id} if hold_id else {}
    store.add_events([events.entry_recorded(entry, transaction_id, now, job.request_id, job.id, batch_id=job.batch_id,
                                            metadata=job.metadata,
                                            **extra)])
    return entry_result(entry, transaction_id, now, job.metadata)


def entry_result(entry: Entry, transaction_id: str, now: datetime, metadata: dict) -> dict:
    """The transaction a money command recorded, as its job's result."""
    wallet_after = entry.wallet_after(entry.wallet_id)
    counterparty_after = entry.wallet_after(entry.counterparty_wallet_id)
    return transaction_view({
        "id": transaction_id, "type": entry.type, "amount": entry.amount, "currency": entry.currency,
        "wallet_id": entry.wallet_id, "counterparty_wallet_id": entry.counterparty_wallet_id,
        "balance_after": wallet_after.balance if wallet_after else None,
        "counterparty_balance_after": counterparty_after.balance if counterparty_after else None,
        "reference": entry.reference, "reverses_entry_id": entry.reverses_entry_id, "metadata": metadata,
        "created_at": now,
    })


def _change_wallet(store: WalletStore, job: ClaimedJob, wallet_after: Wallet, event_type: str, **fields) -> dict:
    """Persist a wallet's new state (no money moves) and emit its event."""
    now = store.now()
    store.save_wallet(wallet_after, now)
    store.add_events([events.wallet_event(event_type, wallet_after, now, job.request_id, job.id,
                                          metadata=job.metadata, **fields)])
    return wallet_view(store.wallet_row(wallet_after.id))


def _hold_result(hold: Hold, currency: str, created_at: datetime, now: datetime, metadata: dict) -> dict:
    return hold_view({**hold.__dict__, "currency": currency, "created_at": created_at, "metadata": metadata}, now)


# wallets ------------------------------------------------------------------

def create_wallet(store: WalletStore, job: ClaimedJob, cmd: commands.CreateWallet) -> dict:
    now = store.now()
    wallet = Wallet(id=cmd.wallet_id, tenant_id=job.tenant_id, user_id=cmd.user_id, currency=cmd.currency,
                    balance=ledger.ZERO, status=ledger.ACTIVE, version=1)
    if store.insert_wallet(wallet, now, job.metadata):
        store.add_events([events.wallet_created(wallet, now, job.request_id, job.id, job.metadata)])
    return domain_wallet_view(wallet, now, now, job.metadata)


def freeze(store: WalletStore, job: ClaimedJob, cmd: commands.Freeze) -> dict:
    (wallet,) = _wallets(store, cmd.wallet_id)
    return _change_wallet(store, job, wallet.frozen(), events.WALLET_FROZEN, reason=cmd.reason)


def unfreeze(store: WalletStore, job: ClaimedJob, cmd: commands.Unfreeze) -> dict:
    (wallet,) = _wallets(store, cmd.wallet_id)
    return _change_wallet(store, job, wallet.unfrozen(), events.WALLET_UNFROZEN)


def close(store: WalletStore, job: ClaimedJob, cmd: commands.Close) -> dict:
    (wallet,) = _wallets(store, cmd.wallet_id)
    return _change_wallet(store, job, wallet.closed(), events.WALLET_CLOSED)


def set_limits(store: WalletStore, job: ClaimedJob, cmd: commands.SetLimits) -> dict:
    (wallet,) = _wallets(store, cmd.wallet_id)
    limits = ledger.Limits(per_transaction=cmd.per_transaction, daily_debit=cmd.daily_debit,
                           overdraft=cmd.overdraft_limit)
    after = wallet.with_limits(limits)
    return _change_wallet(store, job, after, events.LIMITS_CHANGED, limits={
        "per_transaction": None if cmd.per_transaction is None else str(cmd.per_transaction),
        "daily_debit": None if cmd.daily_debit is None else str(cmd.daily_debit),
        "overdraft_limit": str(cmd.overdraft_limit)})


# money movements ----------------------------------------------------------

def fund(store: WalletStore, job: ClaimedJob, cmd: commands.Fund) -> dict:
    (wallet,) = _wallets(store, cmd.wallet_id)
    return _apply_entry(store, job, ledger.fund(wallet, cmd.amount, cmd.reference))


def withdraw(store: WalletStore, job: ClaimedJob, cmd: commands.Withdraw) -> dict:
    (wallet,) = _wallets(store, cmd.wallet_id)
    now = store.now()
    return _apply_entry(store, job, ledger.withdraw(wallet, cmd.amount, now.date(), cmd.reference), now)


def transfer(store: WalletStore, job: ClaimedJob, cmd: commands.Transfer) -> dict:
    source, destination = _wallets(store, cmd.wallet_id, cmd.to_wallet_id)
    now = store.now()
    return _apply_entry(store, job, ledger.transfer(source, destination, cmd.amount, now.date(), cmd.reference), now)


def reverse(store: WalletStore, job: ClaimedJob, cmd: commands.Reverse) -> dict:
    original = store.load_entry(cmd.transaction_id)
    if original is None:
        raise TransactionNotFound(f"transaction {cmd.transaction_id} does not exist")
    wallet_ids = [a for a, _ in original.postings if not a.startswith("system:")]
    wallets = {w.id: w for w in _wallets(store, *wallet_ids)}
    amount = original.remaining if cmd.amount is None else cmd.amount
    entry = ledger.reverse(original, wallets, amount, cmd.reason)
    store.add_reversed(original.id, amount, original.reversed_amount)
    return _apply_entry(store, job, entry)


# holds ----------------------------------------------------------------------

def place_hold(store: WalletStore, job: ClaimedJob, cmd: commands.PlaceHold) -> dict:
    (wallet,) = _wallets(store, cmd.wallet_id)
    now = store.now()
    expires_at = now + timedelta(seconds=cmd.expires_in_seconds)
    wallet_after, hold = holds.place(wallet, cmd.hold_id, cmd.amount, expires_at, now.date(), cmd.reference)
    store.save_wallet(wallet_after, now)
    store.insert_hold(hold, job=job, currency=wallet.currency, now=now)
    store.add_events([events.hold_changed(events.HOLD_PLACED, hold, wallet_after, now, job.request_id, job.id,
                                          job.metadata)])
    return _hold_result(hold, wallet.currency, now, now, job.metadata)


def capture_hold(store: WalletStore, job: ClaimedJob, cmd: commands.CaptureHold) -> dict:
    hold, wallet = _hold(store, cmd.hold_id)
    destination = _wallets(store, cmd.to_wallet_id)[0] if cmd.to_wallet_id else None
    now = store.now()
    entry, hold_after = holds.capture(hold, wallet, destination, cmd.amount, now)
    store.save_hold(hold_after, now)
    return _apply_entry(store, job, entry, now, hold_id=hold.id)


def void_hold(store: WalletStore, job: ClaimedJob, cmd: commands.VoidHold) -> dict:
    hold, wallet = _hold(store, cmd.hold_id)
    now = store.now()
    wallet_after, hold_after = holds.void(hold, wallet, now)
    store.save_wallet(wallet_after, now)
    store.save_hold(hold_after, now)
    store.add_events([events.hold_changed(events.HOLD_VOIDED, hold_after, wallet_after, now, job.request_id, job.id,
                                          job.metadata)])
    return hold_view(store.hold_row(hold.id), now)


# Commands whose handler only reads and then writes through the store's deferred
# statement: they run as that one statement in autocommit (WalletStore one_statement).
ONE_STATEMENT = frozenset({commands.FUND, commands.WITHDRAW, commands.TRANSFER})


HANDLERS = {
    commands.CREATE_WALLET: create_wallet,
    commands.FUND: fund,
    commands.TRANSFER: transfer,
    commands.WITHDRAW: withdraw,
    commands.PLACE_HOLD: place_hold,
    commands.CAPTURE_HOLD: capture_hold,
    commands.VOID_HOLD: void_hold,
    commands.REVERSE: reverse,
    commands.FREEZE: freeze,
    commands.UNFREEZE: unfreeze,
    commands.CLOSE: close,
    commands.SET_LIMITS: set_limits,
}


def expire_hold(store: WalletStore, hold_id: str) -> bool:
    """Mark one hold past its expiry expired and emit HOLD_EXPIRED (run by the sweeper, not a job)."""
    hold, wallet = _hold(store, hold_id)
    now = store.now()
    if hold.status != holds.ACTIVE or hold.status_at(now) != holds.EXPIRED:
        return False
    wallet_after, hold_after = holds.expire(hold, wallet, now)
    store.save_wallet(wallet_after, now)
    store.save_hold(hold_after, now)
    metadata = store.hold_row(hold_id)["metadata"]  # no command expires it: its events carry the hold's own
    store.add_events([events.hold_changed(events.HOLD_EXPIRED, hold_after, wallet_after, now, None, None, metadata)])
    store.flush()  # no job to finish: send the outbox row now
    return True
