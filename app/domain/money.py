"""Money: ISO 4217 currencies, parsing and formatting of decimal amounts."""
from __future__ import annotations

import re
from decimal import Decimal

from app.domain.errors import InvalidAmount

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


def exponent(currency: str) -> int:
    """Minor-unit digits of a supported currency."""
    return CURRENCY_EXPONENTS[currency]


def parse_amount(text: object, currency: str | None = None) -> Decimal:
    """Parse a positive amount sent as a plain decimal string.

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
    if value <= 0:
        raise InvalidAmount("must be greater than zero")
    return value


def quantize(value: Decimal, currency: str) -> Decimal:
    """The value with exactly the currency's minor-unit digits."""
    return value.quantize(Decimal(1).scaleb(-exponent(currency)))


def format_amount(value: Decimal, currency: str) -> str:
    """Render an amount or balance as the API's string, e.g. '100.00'."""
    return format(quantize(value, currency), "f")
