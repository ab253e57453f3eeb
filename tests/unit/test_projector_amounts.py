"""The history projector refuses any amount it cannot store as an InvalidEvent (dead-lettered), never crashes."""
from __future__ import annotations

from decimal import Decimal

import pytest

from history.projector import InvalidEvent, _money


@pytest.mark.parametrize("value", ["1" + "0" * 25, "9" * 34 + ".999"])
def test_large_amounts_within_the_column_are_kept(value):
    assert _money({"amount": value}, "amount") == Decimal(value)


@pytest.mark.parametrize("value", ["1" + "0" * 35, "1.0001", "-1", "NaN", "Infinity", "x", 5])
def test_amounts_the_read_model_cannot_hold_are_invalid_events(value):
    with pytest.raises(InvalidEvent):
        _money({"amount": value}, "amount")
