"""Commands: what a client asks the wallet system to do. Plain data."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

CREATE_WALLET = "create_wallet"
FUND = "fund"
TRANSFER = "transfer"
WITHDRAW = "withdraw"
PLACE_HOLD = "place_hold"
CAPTURE_HOLD = "capture_hold"
VOID_HOLD = "void_hold"
REVERSE = "reverse"
FREEZE = "freeze"
UNFREEZE = "unfreeze"
CLOSE = "close"
SET_LIMITS = "set_limits"

# A job in one of these never changes again.
FINAL_STATUSES = ("succeeded", "failed", "canceled")


@dataclass(frozen=True)
class CreateWallet:
    wallet_id: str
    user_id: str
    currency: str


@dataclass(frozen=True)
class Fund:
    wallet_id: str
    amount: Decimal
    reference: str | None = None


@dataclass(frozen=True)
class Transfer:
    wallet_id: str
    to_wallet_id: str
    amount: Decimal
    reference: str | None = None


@dataclass(frozen=True)
class Withdraw:
    wallet_id: str
    amount: Decimal
    reference: str | None = None


@dataclass(frozen=True)
class PlaceHold:
    hold_id: str
    wallet_id: str
    amount: Decimal
    expires_in_seconds: int
    reference: str | None = None


@dataclass(frozen=True)
class CaptureHold:
    hold_id: str
    amount: Decimal | None = None  # None: the whole hold
    to_wallet_id: str | None = None  # None: out of the system


@dataclass(frozen=True)
class VoidHold:
    hold_id: str


@dataclass(frozen=True)
class Reverse:
    transaction_id: str
    amount: Decimal | None = None  # None: all that remains unreversed
    reason: str | None = None


@dataclass(frozen=True)
class Freeze:
    wallet_id: str
    reason: str


@dataclass(frozen=True)
class Unfreeze:
    wallet_id: str


@dataclass(frozen=True)
class Close:
    wallet_id: str


@dataclass(frozen=True)
class SetLimits:
    wallet_id: str
    per_transaction: Decimal | None = None
    daily_debit: Decimal | None = None
    overdraft_limit: Decimal = Decimal(0)


COMMAND_CLASSES = {
    CREATE_WALLET: CreateWallet, FUND: Fund, TRANSFER: Transfer, WITHDRAW: Withdraw, PLACE_HOLD: PlaceHold,
    CAPTURE_HOLD: CaptureHold, VOID_HOLD: VoidHold, REVERSE: Reverse, FREEZE: Freeze, UNFREEZE: Unfreeze,
    CLOSE: Close, SET_LIMITS: SetLimits,
}


def to_payload(command) -> dict:
    """The JSON-safe payload stored on the job (amounts as strings)."""
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in command.__dict__.items()}


_MONEY_FIELDS = frozenset({"amount", "per_transaction", "daily_debit", "overdraft_limit"})


def from_payload(command_type: str, payload: dict):
    """Rebuild a command from a job's stored payload."""
    cls = COMMAND_CLASSES[command_type]
    values = {k: (Decimal(v) if k in _MONEY_FIELDS and v is not None else v) for k, v in payload.items()}
    return cls(**values)
