"""Wallets and double-entry movements: the rules every command obeys.

A movement is a journal entry whose postings sum to zero in its currency.
Money enters and leaves the system through system accounts, so funding a
wallet moves money from `system:funding` and a withdrawal moves it to
`system:withdrawals` rather than creating or destroying it.

A wallet's `balance` is posted money; `held` is what active, unexpired holds
reserve; `available = balance - held`. A debit may take the available balance
down to `-overdraft` (its overdraft limit, 0 unless set) and no further; the
database enforces `balance >= -overdraft_limit` as well.

Amounts are Decimals in the wallet's currency; the rules compute with Money,
so an amount the currency's minor unit cannot hold is refused (InexactAmount)
and a result is never rounded.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal

from app.domain.errors import (
    CurrencyMismatch, InsufficientFunds, LimitBelowDebt, LimitExceeded, ReversalExceedsOriginal, WalletNotActive,
    WalletNotEmpty,
)
from app.domain.money import Money

SYSTEM_FUNDING = "system:funding"
SYSTEM_WITHDRAWALS = "system:withdrawals"

ACTIVE, FROZEN, CLOSED = "active", "frozen", "closed"
ZERO = Decimal(0)


@dataclass(frozen=True)
class Limits:
    """Debit limits of a wallet; None means no limit. `overdraft`: how far below zero debits may take it."""

    per_transaction: Decimal | None = None
    daily_debit: Decimal | None = None
    overdraft: Decimal = ZERO


@dataclass(frozen=True)
class Wallet:
    """A wallet as read at a given version."""

    id: str
    tenant_id: str
    user_id: str
    currency: str
    balance: Decimal
    status: str
    version: int
    held: Decimal = ZERO
    limits: Limits = Limits()
    debit_day: date | None = None  # the UTC day `debited_today` counts
    debited_today: Decimal = ZERO

    @property
    def available(self) -> Decimal:
        return (self.money(self.balance) - self.money(self.held)).amount

    def money(self, amount: Decimal) -> Money:
        """An amount in this wallet's currency; raises InexactAmount if its minor unit cannot hold it."""
        return Money(amount, self.currency)

    def ensure_active(self) -> None:
        if self.status != ACTIVE:
            raise WalletNotActive(f"wallet {self.id} is {self.status}")

    def ensure_not_closed(self) -> None:
        if self.status == CLOSED:
            raise WalletNotActive(f"wallet {self.id} is closed")

    def _next(self, **changes) -> "Wallet":
        return replace(self, version=self.version + 1, **changes)

    def _ensure_covered(self, amount: Money) -> None:
        """A debit of `amount` needs available + overdraft limit >= amount."""
        available, overdraft = self.money(self.available), self.money(self.limits.overdraft)
        if amount > available + overdraft:
            raise InsufficientFunds(f"wallet {self.id} has {available} available"
                                    + (f" and an overdraft limit of {overdraft}" if overdraft.amount else "")
                                    + f", needs {amount}")

    def _check_debit(self, amount: Money, today: date) -> Money:
        """Check a debit against status, available balance, overdraft and limits; returns the day's new total."""
        self.ensure_active()
        self._ensure_covered(amount)
        limits = self.limits
        if limits.per_transaction is not None and amount > self.money(limits.per_transaction):
            raise LimitExceeded(f"{amount} is above the per-transaction limit of {self.money(limits.per_transaction)}")
        spent = self.money(self.debited_today if self.debit_day == today else ZERO) + amount
        if limits.daily_debit is not None and spent > self.money(limits.daily_debit):
            raise LimitExceeded(f"{amount} would take today's debits to {spent}, "
                                f"above the daily limit of {self.money(limits.daily_debit)}")
        return spent

    def credited(self, amount: Decimal) -> "Wallet":
        self.ensure_active()
        return self._next(balance=(self.money(self.balance) + self.money(amount)).amount)

    def debited(self, amount: Decimal, today: date) -> "Wallet":
        """Take money out: needs an active wallet, enough available balance, and room in the limits."""
        amount = self.money(amount)
        spent = self._check_debit(amount, today)
        return self._next(balance=(self.money(self.balance) - amount).amount, debit_day=today,
                          debited_today=spent.amount)

    def corrected_by(self, amount: Decimal) -> "Wallet":
        """A reversal's change: needs an active wallet and, when it takes money, enough available."""
        self.ensure_active()
        change = self.money(amount)
        if change < Money.zero(self.currency):
            self._ensure_covered(-change)
        return self._next(balance=(self.money(self.balance) + change).amount)

    def holding(self, amount: Decimal, today: date) -> "Wallet":
        """Reserve money for a hold: a debit of available balance that leaves the balance alone."""
        amount = self.money(amount)
        spent = self._check_debit(amount, today)
        return self._next(held=(self.money(self.held) + amount).amount, debit_day=today, debited_today=spent.amount)

    def released(self, amount: Decimal) -> "Wallet":
        """A hold no longer reserves `amount` (void, expiry, or the rest after a capture)."""
        return self._next(held=(self.money(self.held) - self.money(amount)).amount)

    def frozen(self) -> "Wallet":
        self.ensure_not_closed()
        return self._next(status=FROZEN)

    def unfrozen(self) -> "Wallet":
        self.ensure_not_closed()
        return self._next(status=ACTIVE)

    def closed(self) -> "Wallet":
        self.ensure_not_closed()
        if self.balance != 0 or self.held != 0:
            raise WalletNotEmpty(f"wallet {self.id} still has {self.money(self.balance)}"
                                 f" and {self.money(self.held)} on hold")
        return self._next(status=CLOSED)

    def with_limits(self, limits: Limits) -> "Wallet":
        """New limits. The overdraft limit may not fall below what the wallet owes: minus its available
        balance (what active holds reserve counts, so every hold stays capturable)."""
        self.ensure_not_closed()
        for limit in (limits.per_transaction, limits.daily_debit, limits.overdraft):
            if limit is not None:
                self.money(limit)  # a limit the currency cannot hold is refused, not rounded
        owed = -self.money(self.available)
        if self.money(limits.overdraft) < owed:
            raise LimitBelowDebt(f"wallet {self.id} owes {owed}: its overdraft limit cannot go below that")
        return self._next(limits=limits)


@dataclass(frozen=True)
class Posting:
    """One leg of an entry. `amount` is signed: positive raises the account."""

    account: str
    amount: Decimal
    wallet_after: Wallet | None = None  # set for wallet accounts


@dataclass(frozen=True)
class Entry:
    """A balanced journal entry: the effect of one money command.

    Its amount and postings are exact in its currency, so whatever it records
    (and every balance it changes) needs no rounding to be shown or stored.
    """

    type: str
    currency: str
    amount: Decimal
    wallet_id: str
    counterparty_wallet_id: str | None
    reference: str | None
    postings: tuple[Posting, ...]
    reverses_entry_id: str | None = None

    def __post_init__(self) -> None:
        Money(self.amount, self.currency)
        zero = Money.zero(self.currency)
        if sum((Money(p.amount, self.currency) for p in self.postings), zero) != zero:
            raise AssertionError("journal entry does not balance")

    @property
    def wallets_after(self) -> list[Wallet]:
        """Wallets this entry changes, in id order (the order rows are locked in)."""
        return sorted((p.wallet_after for p in self.postings if p.wallet_after), key=lambda w: w.id)

    def wallet_after(self, wallet_id: str | None) -> Wallet | None:
        for p in self.postings:
            if p.wallet_after is not None and p.wallet_after.id == wallet_id:
                return p.wallet_after
        return None


def _same_currency(source: Wallet, destination: Wallet) -> None:
    if source.id == destination.id:
        raise ValueError("a movement between wallets needs two different wallets")
    if source.currency != destination.currency:
        raise CurrencyMismatch(
            f"cannot move {source.currency} from wallet {source.id} to {destination.currency} wallet {destination.id}")


def fund(wallet: Wallet, amount: Decimal, reference: str | None = None) -> Entry:
    """Money enters a wallet from the funding system account."""
    after = wallet.credited(amount)
    return Entry(
        type="FUND", currency=wallet.currency, amount=amount, wallet_id=wallet.id,
        counterparty_wallet_id=None, reference=reference,
        postings=(Posting(wallet.id, amount, after), Posting(SYSTEM_FUNDING, -amount)),
    )


def withdraw(wallet: Wallet, amount: Decimal, today: date, reference: str | None = None) -> Entry:
    """Money leaves the system from a wallet to the withdrawals account."""
    after = wallet.debited(amount, today)
    return Entry(
        type="WITHDRAWAL", currency=wallet.currency, amount=amount, wallet_id=wallet.id,
        counterparty_wallet_id=None, reference=reference,
        postings=(Posting(wallet.id, -amount, after), Posting(SYSTEM_WITHDRAWALS, amount)),
    )


def transfer(source: Wallet, destination: Wallet, amount: Decimal, today: date,
             reference: str | None = None) -> Entry:
    """Money moves between two wallets of the same currency."""
    _same_currency(source, destination)
    destination.ensure_active()
    source_after = source.debited(amount, today)
    destination_after = destination.credited(amount)
    return Entry(
        type="TRANSFER", currency=source.currency, amount=amount, wallet_id=source.id,
        counterparty_wallet_id=destination.id, reference=reference,
        postings=(Posting(source.id, -amount, source_after), Posting(destination.id, amount, destination_after)),
    )


def capture(source: Wallet, hold_amount: Decimal, amount: Decimal, destination: Wallet | None,
            reference: str | None = None) -> Entry:
    """Settle a hold: release all of it and take `amount` to a wallet or out of the system.

    The money was reserved when the hold was placed, so limits and the
    available balance were checked then; the wallet must still be active.
    """
    source.ensure_active()
    if destination is not None:
        _same_currency(source, destination)
        destination.ensure_active()
    taken, balance = source.money(amount), source.money(source.balance)
    if taken > balance + source.money(source.limits.overdraft):  # cannot happen: the hold reserved it
        raise InsufficientFunds(f"wallet {source.id} has {balance} and an overdraft limit of "
                                f"{source.money(source.limits.overdraft)}, needs {taken}")
    source_after = replace(source.released(hold_amount), balance=(balance - taken).amount)
    if destination is None:
        legs = (Posting(source.id, -amount, source_after), Posting(SYSTEM_WITHDRAWALS, amount))
    else:
        legs = (Posting(source.id, -amount, source_after), Posting(destination.id, amount, destination.credited(amount)))
    return Entry(
        type="CAPTURE", currency=source.currency, amount=amount, wallet_id=source.id,
        counterparty_wallet_id=destination.id if destination else None, reference=reference, postings=legs,
    )


def reverse(original: "OriginalEntry", wallets: dict[str, Wallet], amount: Decimal,
            reason: str | None = None) -> Entry:
    """Put back `amount` of an earlier entry: every posting of it, negated and scaled."""
    remaining = Money(original.remaining, original.currency)
    if remaining <= Money.zero(original.currency):
        raise ReversalExceedsOriginal(f"transaction {original.id} is already fully reversed")
    if Money(amount, original.currency) > remaining:
        raise ReversalExceedsOriginal(f"only {remaining} of transaction {original.id} remains to reverse")
    legs = []
    for account, original_amount in original.postings:
        change = -amount if original_amount > 0 else amount
        wallet = wallets.get(account)
        legs.append(Posting(account, change, wallet.corrected_by(change) if wallet else None))
    return Entry(
        type="REVERSAL", currency=original.currency, amount=amount, wallet_id=original.wallet_id,
        counterparty_wallet_id=original.counterparty_wallet_id, reference=reason, postings=tuple(legs),
        reverses_entry_id=original.id,
    )


TRANSACTION_TYPES = frozenset({"FUND", "TRANSFER", "WITHDRAWAL", "CAPTURE", "REVERSAL"})  # every Entry.type
REVERSIBLE_TYPES = frozenset({"FUND", "TRANSFER", "WITHDRAWAL", "CAPTURE"})


@dataclass(frozen=True)
class OriginalEntry:
    """An entry as read for a reversal: its postings and how much was already reversed."""

    id: str
    type: str
    currency: str
    amount: Decimal
    reversed_amount: Decimal
    wallet_id: str
    counterparty_wallet_id: str | None
    postings: tuple[tuple[str, Decimal], ...]  # (account, signed amount)

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.reversed_amount
