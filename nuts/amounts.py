"""Amounts: input fees (NUT-02), denomination splits, change blanks (NUT-08), coin selection.

All amounts are integers in the keyset's unit. Nothing here touches a database:
coin selection works on whatever candidates the caller loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from nuts.errors import InsufficientFundsError


class HasAmountAndKeyset(Protocol):
    @property
    def amount(self) -> int: ...

    @property
    def id(self) -> str: ...


P = TypeVar("P", bound=HasAmountAndKeyset)


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
    values = sorted(set(denominations), reverse=True)
    if any(d <= 0 for d in values):
        raise ValueError(f"denominations must be positive, got {values}")
    parts: list[int] = []
    remaining = amount
    for denomination in values:
        count, remaining = divmod(remaining, denomination)
        parts.extend([denomination] * count)
    if remaining:
        raise ValueError(f"{amount} cannot be made of denominations {sorted(values)} greedily")
    return parts


def split_to_fill(
    amount: int,
    held: Mapping[int, int],
    target: int = 3,
    denominations: Iterable[int] | None = None,
) -> list[int]:
    """Split `amount` so the wallet holds `target` proofs of each amount it is short of.

    Nutshell's wallet does the same: amounts it lacks come first, smallest first; what
    is left goes out in powers of two. With a few small proofs at hand, small sends and
    melts find an exact match later: no swap, and no swap fee.
    """
    values = sorted(set(denominations)) if denominations is not None else None
    wanted = sorted(
        a
        for a in (values or [1 << bit for bit in range(max(amount, 1).bit_length())])
        for _ in range(max(0, target - held.get(a, 0)))
    )
    parts: list[int] = []
    remaining = amount
    for a in wanted:
        if a > remaining:
            break
        parts.append(a)
        remaining -= a
    return sorted(parts + split_amount(remaining, values))


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
    search_budget: int = 20_000,
) -> list[P]:
    """Choose inputs worth `amount` plus, if include_fees, the fee of spending them.

    The best selection has the smallest overshoot (0: an exact match, no swap
    needed), then the fewest inputs. Candidates are grouped by (amount, fee);
    a depth-first search over how many of each group to take, largest first,
    finds it, pruned by bounds and a node budget (a wallet of a million proofs
    still has only a few dozen groups). Raises InsufficientFundsError.
    """
    if amount <= 0:
        raise ValueError(f"amount must be positive, got {amount}")
    groups_by_key: dict[tuple[int, int], list[P]] = {}
    for proof in candidates:
        ppk = fee_ppk.get(proof.id, 0) if include_fees else 0
        groups_by_key.setdefault((proof.amount, ppk), []).append(proof)
    # Largest value first; among equal amounts, the cheaper keyset first.
    groups = sorted(groups_by_key.items(), key=lambda item: (-item[0][0], item[0][1]))
    keys = [key for key, _ in groups]
    counts = [len(members) for _, members in groups]
    # What the groups from i on can still add, at most.
    reach = [0] * (len(groups) + 1)
    for i in range(len(groups) - 1, -1, -1):
        reach[i] = reach[i + 1] + keys[i][0] * counts[i]
    total = reach[0]
    if total < amount:
        raise InsufficientFundsError(amount, total)

    best: tuple[int, int, list[int]] | None = None  # (overshoot, inputs, take per group)
    take = [0] * len(groups)
    budget = search_budget

    def search(i: int, value: int, ppk_sum: int, inputs: int) -> None:
        nonlocal best, budget
        budget -= 1
        need = amount + fee_for_ppks([ppk_sum])
        if value >= need:
            candidate = (value - need, inputs)
            if best is None or candidate < best[:2]:
                best = (*candidate, take.copy())
            return  # more inputs only add overshoot (each proof is worth its fee)
        if i == len(groups) or value + reach[i] < need or budget <= 0:
            return
        if best is not None and best[0] == 0 and inputs >= best[1]:
            return
        unit, ppk = keys[i]
        # Enough of this group to cover what is missing (and the fee those add), no more.
        most = min(counts[i], (need - value) // unit + 1 + (counts[i] * ppk) // 1000 // unit + 1)
        for n in range(most, -1, -1):
            take[i] = n
            search(i + 1, value + n * unit, ppk_sum + n * ppk, inputs + n)
            if best is not None and best[0] == 0 and budget <= 0:
                break
        take[i] = 0

    search(0, 0, 0, 0)
    if best is None:
        needed = amount + fee_for_ppks([k[1] * c for k, c in zip(keys, counts, strict=True)])
        raise InsufficientFundsError(needed, total)
    return [proof for (_, members), n in zip(groups, best[2], strict=True) for proof in members[:n]]
