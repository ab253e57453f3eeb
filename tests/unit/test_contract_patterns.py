"""The OpenAPI patterns are exactly what the server accepts: amounts and cursors, and the state rules' list."""
from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from app.api.schemas import AMOUNT_OR_ZERO_PATTERN, AMOUNT_PATTERN, FundSchema, LimitsSchema, load
from app.services import cursors
from tests.schemathesis_hooks import is_state_rule

FORMATS = [cursors.USER_WALLETS, cursors.TRANSACTIONS, cursors.TRANSACTION_SEARCH, cursors.BATCH_JOBS,
           cursors.WALLET_HISTORY, cursors.USER_ACTIVITY]


def _loads(schema, body: dict) -> bool:
    try:
        load(schema, body)
        return True
    except ValidationError:
        return False


def _accepted(amount: str) -> bool:
    return _loads(FundSchema, {"amount": amount})


@settings(max_examples=500, deadline=None)
@given(st.from_regex(AMOUNT_PATTERN, fullmatch=True))
def test_every_amount_the_pattern_allows_is_accepted(amount):
    assert _accepted(amount)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="0123456789.", max_size=22))
def test_an_amount_is_accepted_exactly_when_the_pattern_matches(text):
    assert _accepted(text) == bool(re.fullmatch(AMOUNT_PATTERN, text))


def _overdraft_accepted(amount: str) -> bool:
    return _loads(LimitsSchema, {"overdraft_limit": amount})


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="0123456789.", max_size=22))
def test_an_overdraft_limit_is_accepted_exactly_when_its_pattern_matches(text):
    """The same as an amount, and zero."""
    assert _overdraft_accepted(text) == bool(re.fullmatch(AMOUNT_OR_ZERO_PATTERN, text))
    assert _overdraft_accepted(text) == (_accepted(text) or bool(re.fullmatch(r"0+(\.0{1,3})?", text)))


@pytest.mark.parametrize("amount,ok", [("0", False), ("0.000", False), ("0.001", True), ("007", True),
                                       ("1.0001", False), ("123456789012345", True), ("1234567890123456", False),
                                       ("0001234567890123456.5", False), (".5", False), ("5.", False)])
def test_amount_edges(amount, ok):
    assert _accepted(amount) is ok
    assert bool(re.fullmatch(AMOUNT_PATTERN, amount)) is ok


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: ".".join(f.kinds))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_every_cursor_the_pattern_allows_decodes_and_round_trips(fmt, data):
    text = data.draw(st.from_regex(fmt.pattern, fullmatch=True))
    values = fmt.decode(text)
    assert fmt.decode(fmt.encode(*values)) == values


def test_a_cursor_round_trips_the_values_of_a_page():
    at, a, b = datetime(2026, 11, 28, 1, 2, 3, 456789, tzinfo=UTC), uuid.uuid4(), uuid.uuid4()
    assert cursors.USER_ACTIVITY.decode(cursors.USER_ACTIVITY.encode(at, a, b)) == (at, str(a), str(b))
    assert cursors.TRANSACTIONS.decode(cursors.TRANSACTIONS.encode(42)) == (42,)
    for bad in ("", "x", "1.2", "-1", "1" * 19, "eyJ2IjoxfQ", f"1.{a}"):
        with pytest.raises(cursors.InvalidCursor):
            cursors.WALLET_HISTORY.decode(bad) if bad.startswith("1.") else cursors.TRANSACTIONS.decode(bad)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_cursor_of_a_list_with_two_orders_is_one_of_them(data):
    both = (cursors.TRANSACTIONS, cursors.TRANSACTION_SEARCH)
    text = data.draw(st.from_regex(cursors.any_of(*both), fullmatch=True))
    assert [f.matches(text) for f in both].count(True) == 1
    for fmt in both:
        assert not re.fullmatch(cursors.any_of(*both), data.draw(st.from_regex(fmt.pattern, fullmatch=True)) + "x")


def test_only_rules_that_depend_on_state_pass_the_state_rule_check():
    def problem(errors, code="VALIDATION_FAILED"):
        return {"code": code, "errors": errors}

    assert is_state_rule(problem({"amount": ["has more than 2 decimal places allowed for USD"]}))
    assert is_state_rule(problem({"commands.3.to_wallet_id": ["must be a different wallet than the source"]}))
    assert is_state_rule({"code": "IDEMPOTENCY_KEY_REUSED"})
    assert not is_state_rule(problem({"amount": ["must be greater than zero"]}))
    assert not is_state_rule(problem({"cursor": ["malformed cursor"]}))
    assert not is_state_rule(problem({"amount": ["has more than 2 decimal places allowed for USD"],
                                      "reason": ["Missing data for required field."]}))
    assert not is_state_rule(problem({}))
