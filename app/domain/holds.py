"""Holds: money reserved on a wallet, later captured, voided, or left to expire."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from app.domain import ledger
from app.domain.errors import CaptureExceedsHold, HoldNotActive
from app.domain.ledger import Entry, Wallet

ACTIVE, CAPTURED, VOIDED, EXPIRED = "active", "captured", "voided", "expired"
DEFAULT_EXPIRES_IN_SECONDS = 7 * 24 * 3600
MAX_EXPIRES_IN_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class Hold:
    id: str
    wallet_id: str
    amount: Decimal
    captured_amount: Decimal
    status: str
    expires_at: datetime
    reference: str | None = None

    def status_at(self, now: datetime) -> str:
        """An active hold past its expiry is expired, whether or not the sweeper got to it."""
        return EXPIRED if self.status == ACTIVE and now >= self.expires_at else self.status

    def ensure_active(self, now: datetime) -> None:
        status = self.status_at(now)
        if status != ACTIVE:
            raise HoldNotActive(f"hold {self.id} is {status}")


def place(wallet: Wallet, hold_id: str, amount: Decimal, expires_at: datetime, today,
          reference: str | None = None) -> tuple[Wallet, Hold]:
    """Reserve money: checked like a debit, so holds can never oversubscribe a wallet."""
    wallet_after = wallet.holding(amount, today)
    return wallet_after, Hold(id=hold_id, wallet_id=wallet.id, amount=amount, captured_amount=ledger.ZERO,
                              status=ACTIVE, expires_at=expires_at, reference=reference)


def capture(hold: Hold, wallet: Wallet, destination: Wallet | None, amount: Decimal | None,
            now: datetime) -> tuple[Entry, Hold]:
    """Take all or part of a hold; the rest is released. Final: the hold is captured."""
    hold.ensure_active(now)
    amount = hold.amount if amount is None else amount
    if wallet.money(amount) > wallet.money(hold.amount):
        raise CaptureExceedsHold(f"cannot capture more than the hold's {wallet.money(hold.amount)}")
    entry = ledger.capture(wallet, hold.amount, amount, destination, reference=hold.reference)
    return entry, replace(hold, status=CAPTURED, captured_amount=amount)


def void(hold: Hold, wallet: Wallet, now: datetime) -> tuple[Wallet, Hold]:
    """Release a hold without moving money."""
    hold.ensure_active(now)
    return wallet.released(hold.amount), replace(hold, status=VOIDED)


def expire(hold: Hold, wallet: Wallet, now: datetime) -> tuple[Wallet, Hold]:
    """Mark a hold past its expiry expired. Its money stopped counting at expires_at already."""
    if hold.status_at(now) != EXPIRED or hold.status != ACTIVE:
        raise HoldNotActive(f"hold {hold.id} is {hold.status_at(now)}, not due to expire")
    # `held` as loaded excludes holds past expiry, so the wallet's reservation is unchanged.
    return replace(wallet, version=wallet.version + 1), replace(hold, status=EXPIRED)
