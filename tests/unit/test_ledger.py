from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from app.domain import holds, ledger
from app.domain.errors import (
    CurrencyMismatch, InexactAmount, InsufficientFunds, LimitBelowDebt, LimitExceeded, ReversalExceedsOriginal,
    WalletNotActive, WalletNotEmpty,
)
from app.domain.ledger import Wallet

TODAY = date(2026, 11, 25)


def wallet(balance="0", currency="USD", status="active", wid="a", version=1) -> Wallet:
    return Wallet(id=wid, tenant_id="t", user_id="u", currency=currency, balance=Decimal(balance),
                  status=status, version=version)


def test_funding_moves_money_from_the_funding_account_and_bumps_the_version():
    entry = ledger.fund(wallet("10"), Decimal("5"))
    assert entry.wallet_after("a").balance == Decimal("15")
    assert entry.wallet_after("a").version == 2
    assert {p.account: p.amount for p in entry.postings} == {"a": Decimal("5"), ledger.SYSTEM_FUNDING: Decimal("-5")}


def test_transfer_debits_source_credits_destination_and_balances():
    entry = ledger.transfer(wallet("10", wid="a"), wallet("1", wid="b"), Decimal("4"), TODAY)
    assert entry.wallet_after("a").balance == Decimal("6")
    assert entry.wallet_after("b").balance == Decimal("5")
    assert sum(p.amount for p in entry.postings) == 0


def test_wallets_are_written_in_id_order_whatever_the_direction():
    entry = ledger.transfer(wallet("10", wid="z"), wallet("0", wid="b"), Decimal("1"), TODAY)
    assert [w.id for w in entry.wallets_after] == ["b", "z"]


def test_transfer_cannot_overdraw():
    with pytest.raises(InsufficientFunds):
        ledger.transfer(wallet("3", wid="a"), wallet(wid="b"), Decimal("3.01"), TODAY)


def test_transfer_of_the_whole_balance_leaves_zero():
    entry = ledger.transfer(wallet("3", wid="a"), wallet(wid="b"), Decimal("3"), TODAY)
    assert entry.wallet_after("a").balance == 0


def test_transfer_across_currencies_is_refused():
    with pytest.raises(CurrencyMismatch):
        ledger.transfer(wallet("10", wid="a"), wallet(wid="b", currency="EUR"), Decimal("1"), TODAY)


@pytest.mark.parametrize("status", ["frozen", "closed"])
def test_inactive_wallets_take_part_in_no_movement(status):
    with pytest.raises(WalletNotActive):
        ledger.fund(wallet(status=status), Decimal("1"))
    with pytest.raises(WalletNotActive):
        ledger.transfer(wallet("10", wid="a"), wallet(wid="b", status=status), Decimal("1"), TODAY)
    with pytest.raises(WalletNotActive):
        ledger.transfer(wallet("10", wid="a", status=status), wallet(wid="b"), Decimal("1"), TODAY)


def test_an_unbalanced_entry_cannot_exist():
    with pytest.raises(AssertionError):
        ledger.Entry(type="FUND", currency="USD", amount=Decimal(1), wallet_id="a", counterparty_wallet_id=None,
                     reference=None, postings=(ledger.Posting("a", Decimal(1)),))


def _withdrawal(reversed_amount: str) -> ledger.OriginalEntry:
    return ledger.OriginalEntry(id="e1", type="WITHDRAWAL", currency="USD", amount=Decimal("4"),
                                reversed_amount=Decimal(reversed_amount), wallet_id="a", counterparty_wallet_id=None,
                                postings=(("a", Decimal("-4")), (ledger.SYSTEM_WITHDRAWALS, Decimal("4"))))


def test_a_reversal_puts_back_part_of_an_entry_and_refuses_more_than_remains():
    entry = ledger.reverse(_withdrawal("1"), {"a": wallet("6")}, Decimal("3"))
    assert {p.account: p.amount for p in entry.postings} == {"a": Decimal("3"), ledger.SYSTEM_WITHDRAWALS: Decimal("-3")}
    with pytest.raises(ReversalExceedsOriginal):
        ledger.reverse(_withdrawal("1"), {"a": wallet("6")}, Decimal("3.01"))


def test_a_fully_reversed_entry_cannot_be_reversed_again_not_even_by_nothing():
    """The remaining amount is zero: reversing "all that remains" must not build a zero-amount posting."""
    with pytest.raises(ReversalExceedsOriginal, match="already fully reversed"):
        ledger.reverse(_withdrawal("4"), {"a": wallet("10")}, Decimal("0"))


@pytest.mark.parametrize("amount, currency", [("1.005", "USD"), ("0.5", "JPY"), ("0.0005", "KWD")])
def test_no_rule_rounds_an_amount_the_currency_cannot_hold(amount, currency):
    rich = wallet("1000", currency=currency)
    with pytest.raises(InexactAmount):
        ledger.fund(rich, Decimal(amount))
    with pytest.raises(InexactAmount):
        ledger.withdraw(rich, Decimal(amount), TODAY)
    with pytest.raises(InexactAmount):
        ledger.transfer(rich, wallet(wid="b", currency=currency), Decimal(amount), TODAY)
    with pytest.raises(InexactAmount):
        holds.place(rich, "h", Decimal(amount), None, TODAY)
    with pytest.raises(InexactAmount):
        rich.with_limits(ledger.Limits(per_transaction=Decimal(amount)))


def test_an_entry_in_amounts_its_currency_cannot_hold_cannot_exist():
    with pytest.raises(InexactAmount):
        ledger.Entry(type="FUND", currency="JPY", amount=Decimal("0.5"), wallet_id="a", counterparty_wallet_id=None,
                     reference=None, postings=(ledger.Posting("a", Decimal("0.5")),
                                               ledger.Posting(ledger.SYSTEM_FUNDING, Decimal("-0.5"))))


def test_kwd_keeps_its_three_digits_through_the_rules():
    entry = ledger.transfer(wallet("1.250", currency="KWD"), wallet("0.001", wid="b", currency="KWD"),
                            Decimal("0.125"), TODAY)
    assert entry.wallet_after("a").balance == Decimal("1.125") and entry.wallet_after("b").balance == Decimal("0.126")


def test_limit_messages_show_the_currency_digits():
    limited = wallet("100").with_limits(ledger.Limits(per_transaction=Decimal("5")))
    with pytest.raises(LimitExceeded, match=r"^5\.01 USD is above the per-transaction limit of 5\.00 USD$"):
        ledger.withdraw(limited, Decimal("5.01"), TODAY)


def overdrawn(balance: str, overdraft: str, held: str = "0") -> Wallet:
    return replace(wallet(balance), held=Decimal(held), limits=ledger.Limits(overdraft=Decimal(overdraft)))


def test_a_debit_may_use_the_overdraft_and_no_more():
    w = overdrawn("10", "20")
    assert ledger.withdraw(w, Decimal("30"), TODAY).wallet_after("a").balance == Decimal("-20")
    with pytest.raises(InsufficientFunds, match="overdraft limit of 20.00 USD"):
        ledger.withdraw(w, Decimal("30.01"), TODAY)
    with pytest.raises(InsufficientFunds):
        holds.place(overdrawn("10", "20", held="5"), "h", Decimal("25.01"), None, TODAY)
    assert holds.place(overdrawn("10", "20", held="5"), "h", Decimal("25"), None, TODAY)


def test_a_reversal_that_takes_money_back_may_use_the_overdraft():
    deposit = ledger.OriginalEntry(id="e1", type="FUND", currency="USD", amount=Decimal("4"),
                                   reversed_amount=Decimal(0), wallet_id="a", counterparty_wallet_id=None,
                                   postings=(("a", Decimal("4")), (ledger.SYSTEM_FUNDING, Decimal("-4"))))
    assert ledger.reverse(deposit, {"a": overdrawn("1", "3")}, Decimal("4")).wallet_after("a").balance == Decimal("-3")
    with pytest.raises(InsufficientFunds):
        ledger.reverse(deposit, {"a": overdrawn("1", "2.99")}, Decimal("4"))


@pytest.mark.parametrize("balance, held, lowest", [("-10", "0", "10"), ("-10", "5", "15"), ("3", "5", "2"),
                                                    ("10", "5", "0")])
def test_the_overdraft_limit_cannot_go_below_what_the_wallet_owes_holds_included(balance, held, lowest):
    w = overdrawn(balance, "50", held)
    assert w.with_limits(ledger.Limits(overdraft=Decimal(lowest))).limits.overdraft == Decimal(lowest)
    if Decimal(lowest) > 0:
        with pytest.raises(LimitBelowDebt):
            w.with_limits(ledger.Limits(overdraft=Decimal(lowest) - Decimal("0.01")))


def test_a_hold_placed_on_the_overdraft_can_be_captured_in_full():
    w = overdrawn("10", "20")
    wallet_after, hold = holds.place(w, "h", Decimal("30"), None, TODAY)
    entry = ledger.capture(wallet_after, hold.amount, Decimal("30"), None)
    assert entry.wallet_after("a").balance == Decimal("-20") and entry.wallet_after("a").held == 0


def test_a_wallet_below_zero_cannot_close():
    with pytest.raises(WalletNotEmpty):
        overdrawn("-0.01", "1").closed()
