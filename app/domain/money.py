"""Money: ISO 4217 currencies, parsing and formatting of decimal amounts, and the Money value.

An amount is exact in its currency's minor unit or it is refused: nothing here
rounds. A stored balance is NUMERIC(38, 3) and only ever changed by exact
amounts, so what the database returns is exact in its currency too.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow

from app.domain.errors import CurrencyMismatch, InexactAmount, InvalidAmount

# ISO 4217 minor-unit digits of the currencies the service supports.
CURRENCY_EXPONENTS: dict[str, int] = {
    "USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CAD": 2, "AUD": 2, "NZD": 2,
    "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2, "CZK": 2, "SGD": 2, "HKD": 2,
    "CNY": 2, "INR": 2, "BRL": 2, "MXN": 2, "ZAR": 2, "AED": 2,
    "JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0,
    "KWD": 3, "BHD": 3, "OMR": 3, "JOD": 3, "TND": 3,
}
SUPPORTED_CURRENCIES = frozenset(CURRENCY_EXPONENTS)
MAX_INTEGER_DIGITS = 15

_AMOUNT_RE = re.compile(r"\A([0-9]+)(?:\.([0-9]+))?\Z")
_UNITS = {currency: Decimal(1).scaleb(-digits) for currency, digits in CURRENCY_EXPONENTS.items()}

# Precision for any NUMERIC(38, 3) value and then some; an operation that would
# still have to drop a digit raises Inexact instead of rounding (the default
# context rounds half-even to 28 digits without a word).
_EXACT = Context(prec=80, traps=[Inexact, InvalidOperation, Overflow, DivisionByZero])


def exponent(currency: str) -> int:
    """Minor-unit digits of a supported currency."""
    return CURRENCY_EXPONENTS[currency]


def parse_amount(text: object, currency: str | None = None, allow_zero: bool = False) -> Decimal:
    """Parse a positive amount (or zero, if allowed) sent as a plain decimal string.

    With a currency, the amount may not have more fraction digits than the
    currency's minor unit. Raises InvalidAmount with a message for the client.
    """
    if not isinstance(text, str):
        raise InvalidAmount("must be a string in plain decimal notation, e.g. \"10.50\", not a JSON number")
    match = _AMOUNT_RE.match(text)
    if match is None:
        raise InvalidAmount("must be a plain decimal string of digits with an optional fraction, e.g. \"10.50\"")
    integer_part, fraction = match.group(1), match.group(2) or ""
    if len(integer_part.lstrip("0")) > MAX_INTEGER_DIGITS:
        raise InvalidAmount(f"must have at most {MAX_INTEGER_DIGITS} integer digits")
    if currency is not None and len(fraction) > exponent(currency):
        raise InvalidAmount(f"has more than {exponent(currency)} decimal places allowed for {currency}")
    value = Decimal(text)
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidAmount("must be zero or more" if allow_zero else "must be greater than zero")
    return value


def quantize(value: Decimal | int, currency: str) -> Decimal:
    """The value with exactly the currency's minor-unit digits, e.g. 1.5 USD as 1.50.

    Raises InexactAmount when that would change the value (1.005 USD, 1.5 JPY):
    an amount is refused, never rounded.
    """
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        raise TypeError(f"an amount is a Decimal, not {type(value).__name__}")
    value = Decimal(value)
    unit = _UNITS[currency]
    if not value.is_finite():
        raise InexactAmount(f"{value} is not an amount of {currency}")
    try:
        exact = _EXACT.quantize(value, unit)
    except Inexact:
        raise InexactAmount(f"{value} is not a whole number of {currency} minor units ({unit})") from None
    return exact if exact else abs(exact)  # no "-0.00"


def format_amount(value: Decimal | int, currency: str) -> str:
    """Render an amount or balance as the API's string, e.g. '100.00'; raises InexactAmount rather than round."""
    return format(quantize(value, currency), "f")


@dataclass(frozen=True, slots=True)
class Money:
    """An amount of one currency, exact in its minor unit: Money("1.005", "USD") raises InexactAmount.

    Signed (a posting or a correction may be negative). Adding, subtracting
    and ordering only work between amounts of the same currency; mixing two
    raises CurrencyMismatch. Results are exact or raise: nothing rounds.
    """

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        amount = Decimal(self.amount) if isinstance(self.amount, str) else self.amount
        object.__setattr__(self, "amount", quantize(amount, self.currency))

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(Decimal(0), currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return Money(_EXACT.add(self.amount, other.amount), self.currency)

    def __sub__(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return Money(_EXACT.subtract(self.amount, other.amount), self.currency)

    def __neg__(self) -> Money:
        return Money(_EXACT.minus(self.amount), self.currency)

    def _compare(self, other: object) -> int | None:
        if not isinstance(other, Money):
            return None
        self._same_currency(other)
        return (self.amount > other.amount) - (self.amount < other.amount)

    def __lt__(self, other: object) -> bool:
        c = self._compare(other)
        return NotImplemented if c is None else c < 0

    def __le__(self, other: object) -> bool:
        c = self._compare(other)
        return NotImplemented if c is None else c <= 0

    def __gt__(self, other: object) -> bool:
        c = self._compare(other)
        return NotImplemented if c is None else c > 0

    def __ge__(self, other: object) -> bool:
        c = self._compare(other)
        return NotImplemented if c is None else c >= 0

    def format(self) -> str:
        """The API's string: exactly the currency's minor-unit digits, e.g. '10.50', '7' (JPY), '1.250' (KWD)."""
        return format(self.amount, "f")

    def __str__(self) -> str:
        return f"{self.format()} {self.currency}"
