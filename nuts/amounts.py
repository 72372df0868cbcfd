"""Amounts: input fees (NUT-02), denomination splits, change blanks (NUT-08), coin selection.

All amounts are integers in the keyset's unit. Nothing here touches a database:
coin selection works on whatever candidates the caller loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TypeVar


class HasAmountAndKeyset(Protocol):
    @property
    def amount(self) -> int: ...

    @property
    def id(self) -> str: ...


P = TypeVar("P", bound=HasAmountAndKeyset)


class InsufficientFundsError(ValueError):
    """The candidates cannot cover the amount plus the fee of spending them."""

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(f"need {needed}, have {available}")
        self.needed = needed
        self.available = available


def fee_for_ppks(ppks: Iterable[int]) -> int:
    """ceil(sum(input_fee_ppk) / 1000), in integers (NUT-02)."""
    return (sum(ppks) + 999) // 1000


def input_fee(proofs: Iterable[HasAmountAndKeyset], fee_ppk: Mapping[str, int]) -> int:
    """The fee the mint charges for spending these proofs as inputs."""
    return fee_for_ppks(fee_ppk.get(p.id, 0) for p in proofs)


def split_amount(amount: int, denominations: Iterable[int] | None = None) -> list[int]:
    """The fewest outputs, largest denomination first, that add up to `amount`.

    Default denominations are powers of two; a keyset passes its own amounts.
    """
    if amount < 0:
        raise ValueError(f"cannot split a negative amount ({amount})")
    if denominations is None:
        return [1 << bit for bit in range(amount.bit_length() - 1, -1, -1) if amount >> bit & 1]
    parts: list[int] = []
    remaining = amount
    for denomination in sorted(set(denominations), reverse=True):
        while denomination <= remaining:
            parts.append(denomination)
            remaining -= denomination
    if remaining:
        raise ValueError(f"{amount} cannot be made of denominations {sorted(denominations)}")
    return parts


def change_blank_count(max_change: int) -> int:
    """NUT-08: blank outputs enough for any change up to `max_change`.

    NUT-08 states it for the fee reserve; when the inputs overshoot amount + fee
    reserve + input fee, the overshoot comes back as change too, so pass
    sum(inputs) - input fee - amount. NUT-08's max(ceil(log2(x)), 1) falls one
    short when x is a power of two (x = 2 needs 2 blanks); bit_length never does.
    """
    return max(max_change, 0).bit_length()


def select_proofs(
    candidates: Sequence[P],
    amount: int,
    fee_ppk: Mapping[str, int],
    *,
    include_fees: bool = True,
) -> list[P]:
    """Choose inputs worth `amount` plus, if include_fees, the fee of spending them.

    An exact match is preferred (no swap needed); otherwise the selection with
    the smallest overshoot, then the fewest inputs. Raises InsufficientFundsError.
    """
    if amount <= 0:
        raise ValueError(f"amount must be positive, got {amount}")

    def ppk(proof: P) -> int:
        return fee_ppk.get(proof.id, 0) if include_fees else 0

    def need(ppk_sum: int) -> int:
        return amount + fee_for_ppks([ppk_sum])

    ordered = sorted(candidates, key=lambda p: p.amount, reverse=True)
    total = sum(p.amount for p in ordered)
    if total < amount:
        raise InsufficientFundsError(amount, total)

    # Greedy from the largest: take a proof when it still fits under what is needed.
    greedy: list[P] = []
    greedy_sum = greedy_ppk = 0
    skipped: list[P] = []
    for proof in ordered:
        if greedy_sum + proof.amount <= need(greedy_ppk + ppk(proof)):
            greedy.append(proof)
            greedy_sum += proof.amount
            greedy_ppk += ppk(proof)
            if greedy_sum == need(greedy_ppk):
                return greedy
        else:
            skipped.append(proof)

    options: list[tuple[int, list[P]]] = []  # (overshoot, selection)
    # Top the greedy pick up with the smallest skipped proof that covers the rest.
    for proof in reversed(skipped):
        overshoot = greedy_sum + proof.amount - need(greedy_ppk + ppk(proof))
        if overshoot >= 0:
            options.append((overshoot, [*greedy, proof]))
            break
    # Or one proof alone, the smallest that covers everything.
    for proof in reversed(ordered):
        overshoot = proof.amount - need(ppk(proof))
        if overshoot >= 0:
            options.append((overshoot, [proof]))
            break
    if not options:
        raise InsufficientFundsError(need(greedy_ppk), greedy_sum)
    return min(options, key=lambda option: (option[0], len(option[1])))[1]
