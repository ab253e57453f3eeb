"""Commands: what a client asks the wallet system to do. Plain data."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

CREATE_WALLET = "create_wallet"
FUND = "fund"
TRANSFER = "transfer"


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


COMMAND_CLASSES = {CREATE_WALLET: CreateWallet, FUND: Fund, TRANSFER: Transfer}


def to_payload(command) -> dict:
    """The JSON-safe payload stored on the job (amounts as strings)."""
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in command.__dict__.items()}


def from_payload(command_type: str, payload: dict):
    """Rebuild a command from a job's stored payload."""
    cls = COMMAND_CLASSES[command_type]
    values = {k: (Decimal(v) if k == "amount" else v) for k, v in payload.items()}
    return cls(**values)
