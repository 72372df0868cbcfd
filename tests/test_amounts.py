"""nuts.amounts: input fees (NUT-02), denomination splits, NUT-08 change blanks, coin selection."""

from __future__ import annotations

import itertools
import random

import pytest

from nuts.amounts import (
    InsufficientFundsError,
    change_blank_count,
    fee_for_ppks,
    input_fee,
    select_proofs,
    split_amount,
)
from nuts.models import Proof

KEYSET_A = "009a1f293253e41e"
KEYSET_B = "00ad268c4d1f5826"
DUMMY_C = "02" + "11" * 32

_serial = itertools.count()


def proof(amount: int, keyset_id: str = KEYSET_A) -> Proof:
    """A candidate input: only amount and keyset id matter to the functions under test."""
    return Proof(id=keyset_id, amount=amount, secret=f"secret-{next(_serial)}", C=DUMMY_C)


def wallet(*amounts: int, keyset_id: str = KEYSET_A) -> list[Proof]:
    return [proof(a, keyset_id) for a in amounts]


def total(proofs: list[Proof]) -> int:
    return sum(p.amount for p in proofs)


def assert_is_subset_without_repeats(selection: list[Proof], candidates: list[Proof]) -> None:
    secrets = [p.secret for p in selection]
    assert len(set(secrets)) == len(secrets)
    assert set(secrets) <= {p.secret for p in candidates}


# --- fees -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_inputs", range(1, 11))
def test_one_to_ten_inputs_at_100_ppk_cost_one_sat(n_inputs):
    assert fee_for_ppks([100] * n_inputs) == 1
    assert input_fee(wallet(*[1] * n_inputs), {KEYSET_A: 100}) == 1


def test_eleven_inputs_at_100_ppk_cost_two_sats():
    assert fee_for_ppks([100] * 11) == 2
    assert input_fee(wallet(*[1] * 11), {KEYSET_A: 100}) == 2


def test_fee_rounds_the_ppk_sum_up_not_each_input():
    # 3 * 400 = 1200 ppk -> 2 sats (per-input rounding would give 3)
    assert fee_for_ppks([400, 400, 400]) == 2


def test_fee_of_exactly_1000_ppk_is_one_sat():
    assert fee_for_ppks([1000]) == 1
    assert fee_for_ppks([999, 1]) == 1
    assert fee_for_ppks([1000, 1]) == 2


def test_fee_sums_ppk_across_keysets_with_different_rates():
    inputs = wallet(1, 2, 4, keyset_id=KEYSET_A) + wallet(8, keyset_id=KEYSET_B)
    # 3 * 100 + 1 * 1000 = 1300 ppk -> 2 sats
    assert input_fee(inputs, {KEYSET_A: 100, KEYSET_B: 1000}) == 2


def test_fee_is_zero_at_zero_ppk():
    assert fee_for_ppks([0] * 50) == 0
    assert input_fee(wallet(*[1] * 50), {KEYSET_A: 0}) == 0


def test_fee_of_no_inputs_is_zero():
    assert fee_for_ppks([]) == 0
    assert input_fee([], {KEYSET_A: 100}) == 0


def test_keyset_missing_from_fee_table_counts_as_zero_ppk():
    assert input_fee(wallet(1, 2, keyset_id=KEYSET_B), {KEYSET_A: 1000}) == 0


# --- split_amount ---------------------------------------------------------------------------------


def test_split_defaults_to_powers_of_two_largest_first():
    assert split_amount(13) == [8, 4, 1]
    assert split_amount(1) == [1]
    assert split_amount(64) == [64]


def test_split_into_powers_of_two_is_the_binary_expansion():
    for amount in range(0, 2049):
        parts = split_amount(amount)
        assert sum(parts) == amount
        assert len(parts) == amount.bit_count()
        assert parts == sorted(set(parts), reverse=True)
        assert all(p & (p - 1) == 0 for p in parts)


def test_split_of_zero_is_empty():
    assert split_amount(0) == []
    assert split_amount(0, [1, 2, 4]) == []


@pytest.mark.parametrize("denominations", [None, [1, 2, 4]])
def test_split_of_negative_amount_raises(denominations):
    with pytest.raises(ValueError, match="negative"):
        split_amount(-1, denominations)


def test_split_uses_the_keyset_denominations():
    assert split_amount(13, [1, 4, 16]) == [4, 4, 4, 1]
    assert split_amount(20, [2, 8]) == [8, 8, 2, 2]


def test_split_ignores_denomination_order_and_repeats():
    assert split_amount(11, [1, 8, 2, 8, 1]) == [8, 2, 1]


def test_split_with_denominations_that_cannot_make_the_amount_raises():
    with pytest.raises(ValueError, match="cannot be made"):
        split_amount(3, [2, 4])
    with pytest.raises(ValueError, match="cannot be made"):
        split_amount(1, [2])
    with pytest.raises(ValueError, match="cannot be made"):
        split_amount(5, [])


def test_split_rejects_non_positive_denominations():
    with pytest.raises(ValueError):
        split_amount(5, [0, 1])


# --- change_blank_count ---------------------------------------------------------------------------


@pytest.mark.parametrize(("max_change", "blanks"), [(0, 0), (1, 1), (2, 2), (3, 2), (1000, 10)])
def test_change_blank_count_known_values(max_change, blanks):
    assert change_blank_count(max_change) == blanks


def test_change_blank_count_of_negative_change_is_zero():
    assert change_blank_count(-5) == 0


def _subset_sums(values: list[int]) -> set[int]:
    sums = {0}
    for value in values:
        sums |= {s + value for s in sums}
    return sums


def test_change_blanks_can_represent_every_change_value_up_to_the_max():
    # The mint fills the blanks with powers of two: n blanks carry any subset of 1, 2, .., 2**(n-1).
    reachable: dict[int, set[int]] = {}
    for max_change in range(0, 4097):
        n = change_blank_count(max_change)
        if n not in reachable:
            reachable[n] = _subset_sums([1 << i for i in range(n)])
        assert set(range(max_change + 1)) <= reachable[n], max_change


def test_change_blank_count_is_not_more_than_needed():
    for max_change in range(1, 4097):
        n = change_blank_count(max_change)
        assert max_change >= 2 ** (n - 1), max_change  # n - 1 blanks would not be enough


# --- select_proofs: examples ----------------------------------------------------------------------


def test_select_prefers_exact_match_without_swap():
    candidates = wallet(16, 8, 4, 2, 1)
    selection = select_proofs(candidates, 13, {})
    assert sorted(p.amount for p in selection) == [1, 4, 8]


def test_select_exact_match_covers_the_fee_of_the_selection():
    candidates = wallet(8, 4, 2, 1)
    # 10 + fee(2 inputs at 1000 ppk = 2) = 12 = 8 + 4
    selection = select_proofs(candidates, 10, {KEYSET_A: 1000})
    assert sorted(p.amount for p in selection) == [4, 8]
    assert total(selection) == 10 + input_fee(selection, {KEYSET_A: 1000})


def test_select_prefers_single_exact_proof_over_larger_proofs():
    candidates = wallet(64, 32, 4)
    # 3 + fee(1 input at 100 ppk) = 4
    selection = select_proofs(candidates, 3, {KEYSET_A: 100})
    assert [p.amount for p in selection] == [4]


def test_select_takes_smallest_overshoot_when_no_exact_match():
    candidates = wallet(64, 16, 8)
    selection = select_proofs(candidates, 5, {})
    assert [p.amount for p in selection] == [8]


def test_select_tops_up_with_the_smallest_proof_that_covers():
    candidates = wallet(32, 16, 16)
    # 32 alone falls 10 short; adding a 16 overshoots by 6, and no selection does better
    selection = select_proofs(candidates, 42, {})
    assert sorted(p.amount for p in selection) == [16, 32]


def test_select_includes_fee_in_what_it_covers():
    candidates = wallet(8, 8)
    # 8 alone does not cover 8 + 1 sat fee; both do: 16 >= 8 + fee(2 inputs) = 9
    selection = select_proofs(candidates, 8, {KEYSET_A: 100})
    assert len(selection) == 2
    assert total(selection) >= 8 + input_fee(selection, {KEYSET_A: 100})


def test_select_without_fees_covers_only_the_amount():
    candidates = wallet(4, 2, 1)
    selection = select_proofs(candidates, 3, {KEYSET_A: 1000}, include_fees=False)
    assert sorted(p.amount for p in selection) == [1, 2]


def test_select_with_fees_on_the_same_wallet_covers_the_fee_too():
    candidates = wallet(4, 2, 1)
    selection = select_proofs(candidates, 3, {KEYSET_A: 1000})
    assert total(selection) == 3 + input_fee(selection, {KEYSET_A: 1000})


@pytest.mark.parametrize("amount", [0, -1, -100])
def test_select_non_positive_amount_raises_value_error(amount):
    with pytest.raises(ValueError, match="positive") as excinfo:
        select_proofs(wallet(1, 2), amount, {})
    assert not isinstance(excinfo.value, InsufficientFundsError)


def test_select_from_no_candidates_is_insufficient():
    with pytest.raises(InsufficientFundsError) as excinfo:
        select_proofs([], 1, {})
    assert (excinfo.value.needed, excinfo.value.available) == (1, 0)


def test_insufficient_funds_carries_needed_and_available():
    with pytest.raises(InsufficientFundsError) as excinfo:
        select_proofs(wallet(4, 2), 10, {})
    assert excinfo.value.needed == 10
    assert excinfo.value.available == 6
    assert "10" in str(excinfo.value) and "6" in str(excinfo.value)


def test_insufficient_funds_when_only_the_fee_is_missing():
    candidates = wallet(4, 2, 1)
    # 7 sats cover the amount but not amount + fee(3 inputs at 100 ppk = 1)
    with pytest.raises(InsufficientFundsError) as excinfo:
        select_proofs(candidates, 7, {KEYSET_A: 100})
    assert excinfo.value.needed == 8
    assert excinfo.value.available == 7


def test_insufficient_funds_is_a_cashu_error_with_a_stable_code_and_the_shortfall():
    from nuts.errors import CashuError

    with pytest.raises(InsufficientFundsError) as caught:
        select_proofs(wallet(1, 2), 8, {})
    assert isinstance(caught.value, CashuError) and caught.value.code == "INSUFFICIENT_FUNDS"
    assert (caught.value.needed, caught.value.available) == (8, 3)


def test_select_returns_the_smallest_overshoot_available():
    candidates = wallet(1, 4, 4)
    selection = select_proofs(candidates, 6, {})
    assert sorted(p.amount for p in selection) == [4, 4]


def test_select_finds_an_exact_match_with_fees_when_one_exists():
    candidates = wallet(4, 4, 4, 8)
    # 4 + 4 + 4 = 12 = 9 + fee(3 inputs at 1000 ppk)
    selection = select_proofs(candidates, 9, {KEYSET_A: 1000})
    assert total(selection) == 9 + input_fee(selection, {KEYSET_A: 1000})


# --- select_proofs: properties --------------------------------------------------------------------


def _random_wallet(rng: random.Random) -> tuple[list[Proof], dict[str, int]]:
    fees = {KEYSET_A: rng.choice([0, 100, 1000]), KEYSET_B: rng.choice([0, 100, 1000])}
    candidates = [
        proof(1 << rng.randint(0, 10), rng.choice([KEYSET_A, KEYSET_B]))
        for _ in range(rng.randint(0, 12))
    ]
    return candidates, fees


def test_select_property_covers_amount_plus_fee_or_funds_are_truly_insufficient():
    """With every input_fee_ppk <= 1000 (each input costs at most 1 sat, never more than it is
    worth), some selection covers amount + its fee exactly when all candidates together do.
    So select_proofs raises InsufficientFundsError iff sum(all) < amount + fee(all); otherwise
    it returns distinct candidates with sum >= amount + fee(selection)."""
    rng = random.Random(1234)
    for case in range(3000):
        candidates, fees = _random_wallet(rng)
        amount = rng.randint(1, total(candidates) + 20)
        include_fees = rng.random() < 0.8
        fee_table = fees if include_fees else {}
        all_cover = total(candidates) >= amount + input_fee(candidates, fee_table)
        context = (case, [(p.amount, p.id) for p in candidates], amount, fees, include_fees)
        try:
            selection = select_proofs(candidates, amount, fees, include_fees=include_fees)
        except InsufficientFundsError as exc:
            assert not all_cover, context
            assert exc.available == total(candidates), context
            assert exc.needed > exc.available, context
            continue
        assert all_cover, context
        assert selection, context
        assert_is_subset_without_repeats(selection, candidates)
        assert total(selection) >= amount + input_fee(selection, fee_table), context


def test_select_property_without_fees_finds_an_exact_match_whenever_one_exists():
    rng = random.Random(1234)
    for case in range(1500):
        candidates = wallet(*[1 << rng.randint(0, 6) for _ in range(rng.randint(1, 8))])
        amount = rng.randint(1, total(candidates))
        exact_exists = any(
            sum(c) == amount
            for k in range(1, len(candidates) + 1)
            for c in itertools.combinations([p.amount for p in candidates], k)
        )
        selection = select_proofs(candidates, amount, {})
        if exact_exists:
            assert total(selection) == amount, (case, [p.amount for p in candidates], amount)


def test_split_to_fill_tops_up_the_small_amounts_the_wallet_lacks_first() -> None:
    from nuts.amounts import split_to_fill

    assert split_to_fill(7, {}) == [1, 1, 1, 2, 2]
    assert split_to_fill(7, {1: 3, 2: 3}) == [1, 2, 4]
    assert sum(split_to_fill(100, {})) == 100
    assert split_to_fill(100, {}).count(1) == 3 + 1  # three kept, one from the remainder


def test_split_to_fill_with_nothing_to_top_up_is_the_plain_split() -> None:
    from nuts.amounts import split_to_fill

    assert split_to_fill(100, {}, target=0) == sorted(split_amount(100))
