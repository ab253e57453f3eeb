"""Planning a chunk of batch commands in memory: order, independence, all-or-nothing."""
from datetime import date
from decimal import Decimal

import pytest

from app.domain import batches, commands
from app.domain.errors import InsufficientFunds, WalletNotFound
from app.domain.ledger import Limits, Wallet

TODAY = date(2026, 11, 27)


def wallets(**balances) -> dict[str, Wallet]:
    return {wid: Wallet(id=wid, tenant_id="t", user_id="u", currency="USD", balance=Decimal(b), status="active",
                        version=1) for wid, b in balances.items()}


def test_commands_on_one_wallet_apply_in_order_each_taking_the_next_version():
    state = wallets(a="10")
    planned = batches.plan(state, [commands.Withdraw("a", Decimal("4")), commands.Fund("a", Decimal("1")),
                                   commands.Withdraw("a", Decimal("7"))], TODAY)
    assert [p.error is None for p in planned] == [True, True, True]
    assert [p.entry.wallet_after("a").version for p in planned] == [2, 3, 4]
    assert [p.entry.wallet_after("a").balance for p in planned] == [Decimal("6"), Decimal("7"), Decimal("0")]
    assert state["a"].balance == 0 and state["a"].version == 4


def test_a_rejected_command_changes_nothing_and_the_next_one_still_runs():
    state = wallets(a="5", b="0")
    planned = batches.plan(state, [commands.Transfer("a", "b", Decimal("6")), commands.Transfer("a", "b", Decimal("5")),
                                   commands.Fund("missing", Decimal("1"))], TODAY)
    assert isinstance(planned[0].error, InsufficientFunds) and planned[0].entry is None
    assert planned[1].entry.wallet_after("b").version == 2  # the rejected one took no version
    assert isinstance(planned[2].error, WalletNotFound)
    assert state["a"].balance == 0 and state["b"].balance == 5


def test_daily_limits_count_earlier_commands_of_the_same_chunk():
    state = wallets(a="100")
    state["a"] = Wallet(**{**state["a"].__dict__, "limits": Limits(daily_debit=Decimal("10"))})
    planned = batches.plan(state, [commands.Withdraw("a", Decimal("6")), commands.Withdraw("a", Decimal("6"))], TODAY)
    assert planned[0].error is None and planned[1].error.code == "LIMIT_EXCEEDED"


def test_an_atomic_batch_is_all_or_nothing_and_names_the_index_that_broke_a_rule():
    state = wallets(a="10", b="0")
    with pytest.raises(batches.ItemRejected) as rejected:
        batches.plan_atomic(state, [commands.Transfer("a", "b", Decimal("6")), commands.Withdraw("a", Decimal("5"))],
                            TODAY)
    assert rejected.value.index == 1 and rejected.value.code == "INSUFFICIENT_FUNDS"
    assert state["a"].balance == 10 and state["a"].version == 1  # untouched

    entries = batches.plan_atomic(state, [commands.Transfer("a", "b", Decimal("6")),
                                          commands.Transfer("b", "a", Decimal("1"))], TODAY)
    assert [e.wallet_after("b").balance for e in entries] == [Decimal("6"), Decimal("5")]
    assert state["a"].balance == 5 and state["a"].version == 3


def test_only_money_movements_can_be_batched():
    with pytest.raises(TypeError):
        batches.movement(wallets(a="1"), commands.Close("a"), TODAY)
