"""The fee decisions as pure functions (sagas/melt.py, sagas/send.py): which inputs a melt
reserves, which amount the melt request spends, whether a pre-swap pays for itself, what
the worst case costs, and how much the pre-swap gives back. Fast: no mint, no database
(the end-to-end tests are in tests/test_melt_saga.py and tests/test_tasks_melt.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nuts.amounts import (
    InsufficientFundsError,
    fee_for_ppks,
    input_fee,
    select_proofs,
    split_amount,
)
from sagas.melt import choose_melt_inputs, exact_melt_input, keep_amount, plan_fees
from sagas.proofs import Candidate
from sagas.send import receiver_fee

PPK = 100  # the test mint's input fee
SAT_PER_INPUT = {"k": 1000}  # a keyset whose inputs cost one sat each, for round figures


def melt_inputs(needed: int, *amounts: int) -> list[int]:
    """The amounts of the inputs a melt of `needed` reserves from proofs of `amounts`."""
    candidates = [Candidate(row_id=n, amount=a, id="k") for n, a in enumerate(amounts)]
    exact = exact_melt_input(needed, SAT_PER_INPUT["k"])
    return [c.amount for c in choose_melt_inputs(candidates, needed, exact, SAT_PER_INPUT)]


def test_a_melt_reserves_inputs_that_fit_as_they_are() -> None:
    assert melt_inputs(10, 8, 4) == [8, 4]  # 12 = 10 + their fee of 2


def test_a_melt_reserves_the_inputs_of_the_exact_swap_when_the_overshoot_pays_for_it() -> None:
    # 16 alone overshoots 12 + its fee by 3; swapping 16 + 2 to 16 costs 2 and frees 3
    assert exact_melt_input(12, 1000) == 16
    assert melt_inputs(12, 16, 2) == [16, 2]


def test_a_melt_keeps_the_direct_inputs_when_the_swap_costs_what_it_frees() -> None:
    # 8 overshoots 5 + its fee by 2; the swap of 8 + 2 to 8 would cost 2
    assert melt_inputs(5, 8, 2) == [8]


def test_a_melt_keeps_the_direct_inputs_when_the_wallet_cannot_cover_the_exact_swap() -> None:
    # 8 covers 5 + its fee, not the exact 8 + the swap's fee
    assert melt_inputs(5, 8) == [8]


@given(
    amounts=st.lists(st.sampled_from([2**n for n in range(11)]), min_size=1, max_size=12),
    needed=st.integers(1, 4096),
    ppk=st.integers(0, 2000),
)
def test_a_melt_never_reserves_less_than_it_needs_plus_the_inputs_fee(
    amounts: list[int], needed: int, ppk: int
) -> None:
    candidates = [Candidate(row_id=n, amount=a, id="k") for n, a in enumerate(amounts)]
    fees = {"k": ppk}
    try:
        select_proofs(candidates, needed, fees)
    except InsufficientFundsError:
        return  # the wallet cannot pay at all: prepare refuses
    chosen = choose_melt_inputs(candidates, needed, exact_melt_input(needed, ppk), fees)
    assert sum(c.amount for c in chosen) >= needed + input_fee(chosen, fees)


def test_inputs_that_fit_are_melted_as_they_are() -> None:
    plan = plan_fees(100, 2, input_amount=103, inputs_fee=1, exact=103, keyset_fee_ppk=PPK)
    assert (plan.needs_swap, plan.swap_fee, plan.melt_input, plan.input_fee) == (
        False,
        0,
        103,
        1,
    )
    assert plan.worst_fee == 2 + 1


def test_a_large_overshoot_is_swapped_to_the_exact_melt_input_first() -> None:
    exact = exact_melt_input(100 + 2, PPK)
    plan = plan_fees(100, 2, input_amount=1024, inputs_fee=1, exact=exact, keyset_fee_ppk=PPK)
    assert plan.needs_swap and plan.melt_input == exact
    assert plan.swap_fee == 1
    assert plan.input_fee == fee_for_ppks([PPK] * len(split_amount(exact)))
    assert plan.worst_fee == 2 + plan.swap_fee + plan.input_fee
    assert keep_amount(
        {"needs_swap": True, "input_amount": 1024, "swap_fee": 1, "melt_input": exact}
    ) == (1024 - 1 - exact)


def test_an_overshoot_no_larger_than_the_swap_costs_is_not_swapped() -> None:
    # 104 overshoots 100 + 2 + its fee 1 by 1: a swap costing 1 would free nothing
    plan = plan_fees(100, 2, input_amount=104, inputs_fee=1, exact=103, keyset_fee_ppk=PPK)
    assert not plan.needs_swap and plan.melt_input == 104


def test_without_a_pre_swap_nothing_is_kept() -> None:
    assert keep_amount({"needs_swap": False, "input_amount": 64}) == 0


def test_the_blanks_cover_the_largest_possible_change() -> None:
    plan = plan_fees(100, 8, input_amount=112, inputs_fee=1, exact=112, keyset_fee_ppk=PPK)
    largest_change = plan.melt_input - plan.input_fee - 100
    assert 2**plan.blank_count > largest_change  # any change up to it fits in the blanks


@given(needed=st.integers(1, 10**12), ppk=st.integers(0, 2000))
def test_the_exact_melt_input_covers_the_payment_and_its_own_fee(needed: int, ppk: int) -> None:
    exact = exact_melt_input(needed, ppk)
    assert exact >= needed + fee_for_ppks([ppk] * len(split_amount(exact)))


@given(
    amount=st.integers(1, 10**9),
    reserve=st.integers(0, 10**6),
    overshoot=st.integers(0, 10**9),
    ppk=st.integers(0, 1000),
)
def test_a_plan_never_spends_more_than_it_reserved_nor_less_than_the_payment_needs(
    amount: int, reserve: int, overshoot: int, ppk: int
) -> None:
    exact = exact_melt_input(amount + reserve, ppk)
    input_amount = exact + overshoot
    inputs_fee = fee_for_ppks([ppk] * len(split_amount(input_amount)))
    if input_amount - inputs_fee < amount + reserve:
        return  # not enough to pay at all: prepare refuses before planning
    plan = plan_fees(
        amount,
        reserve,
        input_amount=input_amount,
        inputs_fee=inputs_fee,
        exact=exact,
        keyset_fee_ppk=ppk,
    )
    assert plan.melt_input <= input_amount
    assert plan.melt_input - plan.input_fee >= amount + reserve
    if plan.needs_swap:
        assert plan.swap_fee < input_amount - amount - reserve - inputs_fee  # it paid for itself


@given(amount=st.integers(1, 10**12), ppk=st.integers(0, 2000))
def test_a_token_with_the_receivers_fee_leaves_the_receiver_the_whole_amount(
    amount: int, ppk: int
) -> None:
    fee = receiver_fee(amount, ppk)
    assert fee_for_ppks([ppk] * len(split_amount(amount + fee))) <= fee  # the swap's own fee
