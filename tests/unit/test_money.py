from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.errors import CurrencyMismatch, InexactAmount, InvalidAmount
from app.domain.money import CURRENCY_EXPONENTS, Money, format_amount, parse_amount, quantize


@pytest.mark.parametrize("text, currency, expected", [
    ("100.00", "USD", Decimal("100.00")),
    ("100", "USD", Decimal("100")),
    ("0.01", "USD", Decimal("0.01")),
    ("5", "JPY", Decimal("5")),
    ("1.234", "KWD", Decimal("1.234")),
    ("999999999999999.99", "USD", Decimal("999999999999999.99")),
])
def test_parses_plain_decimal_strings(text, currency, expected):
    assert parse_amount(text, currency) == expected


@pytest.mark.parametrize("value", [
    "-1", "0", "0.00", "1e3", "1E3", " 1", "1 ", "+1", "1.", ".5", "NaN", "Infinity", "1,00", "", "abc",
    "1000000000000000", 1, 1.5, None, True, [], {},
])
def test_rejects_anything_but_a_positive_plain_decimal_string(value):
    with pytest.raises(InvalidAmount):
        parse_amount(value, "USD")


def test_a_json_number_is_refused_with_a_message_saying_to_send_a_string():
    with pytest.raises(InvalidAmount, match="string"):
        parse_amount(10, "USD")


@pytest.mark.parametrize("text, currency", [("1.001", "USD"), ("1.5", "JPY"), ("1.0001", "KWD")])
def test_rejects_more_decimals_than_the_currency_has(text, currency):
    with pytest.raises(InvalidAmount, match=currency):
        parse_amount(text, currency)


def test_formats_with_exactly_the_currency_minor_units():
    assert format_amount(Decimal("100"), "USD") == "100.00"
    assert format_amount(Decimal("100.000"), "JPY") == "100"
    assert format_amount(Decimal("1.5"), "KWD") == "1.500"


@given(st.sampled_from(sorted(CURRENCY_EXPONENTS)), st.integers(min_value=1, max_value=10**15 - 1))
def test_any_formatted_amount_parses_back_to_itself(currency, minor_units):
    value = Decimal(minor_units).scaleb(-CURRENCY_EXPONENTS[currency])
    text = format_amount(value, currency)
    assert parse_amount(text, currency) == value
    assert format_amount(parse_amount(text, currency), currency) == text


@given(st.text(max_size=20))
def test_arbitrary_text_either_parses_to_a_positive_amount_or_is_refused(text):
    try:
        value = parse_amount(text, "USD")
    except InvalidAmount:
        return
    assert value > 0 and value == value.quantize(Decimal("0.01"))


@pytest.mark.parametrize("value, currency", [("1.005", "USD"), ("1.5", "JPY"), ("0.0001", "KWD"), ("1.001", "EUR")])
def test_money_refuses_an_amount_its_minor_unit_cannot_hold(value, currency):
    with pytest.raises(InexactAmount, match=currency):
        Money(value, currency)
    with pytest.raises(InexactAmount):
        Money(Decimal(value), currency)


def test_money_holds_exact_amounts_with_the_currency_digits():
    assert Money("1.250", "KWD").amount == Decimal("1.250") and Money("1.250", "KWD").format() == "1.250"
    assert Money("1.5", "USD").format() == "1.50"
    assert Money(Decimal("10.500"), "USD").format() == "10.50"  # NUMERIC(38, 3) as read: exact, trailing zero
    assert Money(Decimal("100.000"), "JPY").format() == "100"
    assert Money(7, "JPY").format() == "7"


@pytest.mark.parametrize("value", [1.5, True, None, Decimal("NaN"), Decimal("Infinity")])
def test_money_refuses_what_is_not_a_finite_decimal(value):
    with pytest.raises((TypeError, InexactAmount)):
        Money(value, "USD")


def test_money_adds_subtracts_negates_and_compares_within_a_currency():
    a, b = Money("10.25", "USD"), Money("0.75", "USD")
    assert a + b == Money("11", "USD")
    assert a - b == Money("9.50", "USD")
    assert -b == Money("-0.75", "USD") and (-b).format() == "-0.75"
    assert b - a < Money.zero("USD") < b < a and a >= a and b <= a and a > b
    assert (b - b).format() == "0.00"


def test_money_of_two_currencies_does_not_mix():
    usd, eur = Money("1.00", "USD"), Money("1.00", "EUR")
    with pytest.raises(CurrencyMismatch):
        usd + eur
    with pytest.raises(CurrencyMismatch):
        usd - eur
    with pytest.raises(CurrencyMismatch):
        assert usd < eur
    assert usd != eur


def test_money_is_immutable_and_formats_with_its_currency():
    m = Money("3.5", "EUR")
    with pytest.raises(AttributeError):
        m.amount = Decimal(4)
    assert str(m) == "3.50 EUR" and str(Money("2", "KWD")) == "2.000 KWD"


def test_arithmetic_beyond_the_default_precision_does_not_round():
    big = Money(Decimal("123456789012345678901234567890.12"), "USD")  # 32 digits: the default context keeps 28
    assert (big + Money("0.01", "USD")).format() == "123456789012345678901234567890.13"


@pytest.mark.parametrize("value, currency", [(Decimal("1.005"), "USD"), (Decimal("0.5"), "JPY"), (Decimal("2.0001"), "KWD")])
def test_formatting_refuses_rather_than_rounds(value, currency):
    with pytest.raises(InexactAmount):
        format_amount(value, currency)
    with pytest.raises(InexactAmount):
        quantize(value, currency)
