"""Domain errors. Each carries a stable code that clients can rely on."""
from __future__ import annotations


class WalletError(Exception):
    """Base of every rule the domain can refuse; `code` is stable UPPER_SNAKE."""

    code = "WALLET_ERROR"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidAmount(WalletError):
    code = "VALIDATION_FAILED"


class InexactAmount(ValueError):
    """An amount its currency's minor unit cannot hold, e.g. 1.005 USD: refused, never rounded.

    Not a client error: parse_amount checks what clients send, so this is a
    bug or bad data, and it fails the request or job (INTERNAL_ERROR) rather
    than reading as a validation failure.
    """


class BusinessRuleViolation(WalletError):
    """A rejection that depends on state; ends a job `failed`, never retried."""


class InsufficientFunds(BusinessRuleViolation):
    code = "INSUFFICIENT_FUNDS"


class CurrencyMismatch(BusinessRuleViolation):
    code = "CURRENCY_MISMATCH"


class WalletNotActive(BusinessRuleViolation):
    code = "WALLET_NOT_ACTIVE"


class WalletNotFound(BusinessRuleViolation):
    code = "WALLET_NOT_FOUND"


class AttemptsExhausted(BusinessRuleViolation):
    code = "ATTEMPTS_EXHAUSTED"


class ConcurrencyConflict(Exception):
    """Another transaction changed a row since it was read (optimistic lock)."""


class JobNotCancelable(WalletError):
    """Only a queued job can be canceled: a running or final one has gone past that point."""
    code = "JOB_NOT_CANCELABLE"


class IdempotencyKeyReused(WalletError):
    """The same Idempotency-Key came back with a different request."""

    code = "IDEMPOTENCY_KEY_REUSED"


class WalletNotEmpty(BusinessRuleViolation):
    code = "WALLET_NOT_EMPTY"


class LimitExceeded(BusinessRuleViolation):
    code = "LIMIT_EXCEEDED"


class HoldNotActive(BusinessRuleViolation):
    code = "HOLD_NOT_ACTIVE"


class HoldNotFound(BusinessRuleViolation):
    code = "HOLD_NOT_FOUND"


class TransactionNotFound(BusinessRuleViolation):
    code = "TRANSACTION_NOT_FOUND"


class ReversalExceedsOriginal(BusinessRuleViolation):
    code = "REVERSAL_EXCEEDS_ORIGINAL"


class VersionMismatch(BusinessRuleViolation):
    """The command was sent with If-Match and its wallet changed between submit and execution."""

    code = "VERSION_MISMATCH"


class PreconditionFailed(WalletError):
    """If-Match names versions the wallet is not at (when the command is submitted): nothing is recorded."""

    code = "PRECONDITION_FAILED"


class LimitBelowDebt(BusinessRuleViolation):
    """An overdraft limit lower than what the wallet already owes (its available balance below zero)."""

    code = "LIMIT_BELOW_DEBT"


class CaptureExceedsHold(BusinessRuleViolation):
    code = "CAPTURE_EXCEEDS_HOLD"
