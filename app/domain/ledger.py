"""Wallets and double-entry movements: the rules every command obeys.

A movement is a journal entry whose postings sum to zero in its currency.
Money enters and leaves the system through system accounts, so funding a
wallet moves money from `system:funding` rather than creating it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from app.domain.errors import CurrencyMismatch, InsufficientFunds, WalletNotActive
from app.domain.money import format_amount

SYSTEM_FUNDING = "system:funding"

ACTIVE = "active"
ZERO = Decimal(0)


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

    def ensure_active(self) -> None:
        if self.status != ACTIVE:
            raise WalletNotActive(f"wallet {self.id} is {self.status}")

    def credited(self, amount: Decimal) -> "Wallet":
        self.ensure_active()
        return replace(self, balance=self.balance + amount, version=self.version + 1)

    def debited(self, amount: Decimal) -> "Wallet":
        self.ensure_active()
        if amount > self.balance:
            raise InsufficientFunds(
                f"wallet {self.id} has {format_amount(self.balance, self.currency)} {self.currency} available,"
                f" needs {format_amount(amount, self.currency)}")
        return replace(self, balance=self.balance - amount, version=self.version + 1)


@dataclass(frozen=True)
class Posting:
    """One leg of an entry. `amount` is signed: positive raises the account."""

    account: str
    amount: Decimal
    wallet_after: Wallet | None = None  # set for wallet accounts


@dataclass(frozen=True)
class Entry:
    """A balanced journal entry: the effect of one money command."""

    type: str
    currency: str
    amount: Decimal
    wallet_id: str
    counterparty_wallet_id: str | None
    reference: str | None
    postings: tuple[Posting, ...]

    def __post_init__(self) -> None:
        if sum(p.amount for p in self.postings) != 0:
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


def fund(wallet: Wallet, amount: Decimal, reference: str | None = None) -> Entry:
    """Money enters a wallet from the funding system account."""
    after = wallet.credited(amount)
    return Entry(
        type="FUND", currency=wallet.currency, amount=amount, wallet_id=wallet.id,
        counterparty_wallet_id=None, reference=reference,
        postings=(Posting(wallet.id, amount, after), Posting(SYSTEM_FUNDING, -amount)),
    )


def transfer(source: Wallet, destination: Wallet, amount: Decimal, reference: str | None = None) -> Entry:
    """Money moves between two wallets of the same currency."""
    if source.id == destination.id:
        raise ValueError("a transfer needs two different wallets")
    if source.currency != destination.currency:
        raise CurrencyMismatch(
            f"cannot transfer {source.currency} from wallet {source.id} to {destination.currency} wallet {destination.id}"
        )
    destination.ensure_active()
    source_after = source.debited(amount)
    destination_after = destination.credited(amount)
    return Entry(
        type="TRANSFER", currency=source.currency, amount=amount, wallet_id=source.id,
        counterparty_wallet_id=destination.id, reference=reference,
        postings=(Posting(source.id, -amount, source_after), Posting(destination.id, amount, destination_after)),
    )
