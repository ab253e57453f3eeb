from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.errors import InvalidAmount
from app.domain.money import CURRENCY_EXPONENTS, format_amount, parse_amount


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
