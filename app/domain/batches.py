"""Bulk submissions: many money commands applied in order against wallets held in memory.

A chunk of commands is planned in one pass: each command sees the wallets as
the commands before it left them (a wallet named many times is applied in
command order, each change taking the next version), and a rejected command
changes nothing. Independent commands are each accepted or rejected on their
own; an atomic batch is all of them or none, and its rejection names the index
of the command that broke a rule. Pure logic: the caller reads the wallets and
writes the planned entries.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from app.domain import commands, ledger
from app.domain.errors import BusinessRuleViolation, WalletNotFound
from app.domain.ledger import Entry, Wallet

# What a batch may carry: the money movements (other commands stay single requests).
BATCH = "batch"  # the job type of an atomic batch
BATCHABLE = (commands.FUND, commands.WITHDRAW, commands.TRANSFER)
MAX_COMMANDS = 1000
CHUNK_SIZE = 100  # job ids per wallet.execute_batch task


class ItemRejected(BusinessRuleViolation):
    """A command of an atomic batch broke a rule of money: the batch applies nothing."""

    def __init__(self, index: int, error: BusinessRuleViolation):
        super().__init__(f"command {index}: {error.message}")
        self.index, self.error = index, error
        self.code = error.code


@dataclass(frozen=True)
class Planned:
    """One command's planned outcome: an entry to record, or the rule it broke."""

    entry: Entry | None = None
    error: BusinessRuleViolation | None = None


def wallet_ids(command) -> tuple[str, ...]:
    """The wallets a money command touches, source first."""
    if isinstance(command, commands.Transfer):
        return command.wallet_id, command.to_wallet_id
    return (command.wallet_id,)


def movement(wallets: dict[str, Wallet], command, today: date) -> Entry:
    """The entry of one fund, withdraw or transfer against the given wallets (raises a BusinessRuleViolation)."""
    for wallet_id in wallet_ids(command):
        if wallet_id not in wallets:
            raise WalletNotFound(f"wallet {wallet_id} does not exist")
    if isinstance(command, commands.Fund):
        return ledger.fund(wallets[command.wallet_id], command.amount, command.reference)
    if isinstance(command, commands.Withdraw):
        return ledger.withdraw(wallets[command.wallet_id], command.amount, today, command.reference)
    if isinstance(command, commands.Transfer):
        return ledger.transfer(wallets[command.wallet_id], wallets[command.to_wallet_id], command.amount, today,
                               command.reference)
    raise TypeError(f"{type(command).__name__} cannot be part of a batch")


def plan(wallets: dict[str, Wallet], batch: list, today: date) -> list[Planned]:
    """Each command in order, independently: a rejected one leaves the wallets as they were.

    `wallets` is updated in place to the state after every accepted command.
    """
    planned = []
    for command in batch:
        try:
            entry = movement(wallets, command, today)
        except BusinessRuleViolation as error:
            planned.append(Planned(error=error))
            continue
        for wallet in entry.wallets_after:
            wallets[wallet.id] = wallet
        planned.append(Planned(entry=entry))
    return planned


def plan_atomic(wallets: dict[str, Wallet], batch: list, today: date) -> list[Entry]:
    """Every command in order, or none: raises ItemRejected for the first that breaks a rule.

    `wallets` is only updated when every command is accepted.
    """
    trial = dict(wallets)
    entries = []
    for index, command in enumerate(batch):
        try:
            entry = movement(trial, command, today)
        except BusinessRuleViolation as error:
            raise ItemRejected(index, error) from None
        for wallet in entry.wallets_after:
            trial[wallet.id] = wallet
        entries.append(entry)
    wallets.update(trial)
    return entries
