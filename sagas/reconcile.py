"""Reconciliation's one table: each discrepancy between our proofs and the mint's (NUT-07),
its severity and what is done about it. check_proofs (sagas/restore.py) and the melt
pre-flight (sagas/melt.py) both classify with it.

| discrepancy              | severity | done                                                     |
|--------------------------|----------|----------------------------------------------------------|
| DB_UNSPENT_MINT_SPENT    | HIGH     | marked spent: never offered again                         |
| DB_SPENT_MINT_UNSPENT    | MEDIUM   | spendable again, on a definitive UNSPENT and only when no |
|                          |          | open operation holds or spent it                          |
| DB_PENDING_MINT_SPENT    | MEDIUM   | its operation is settled (a claimed send finalized, a     |
|                          |          | paid melt finalized); else reported                       |
| DB_UNSPENT_MINT_PENDING  | LOW      | reported (someone is melting it right now)                |
| PROOF_NOT_IN_DB          | LOW      | reported, with its state at the mint                      |
| DB_RESERVED_MINT_SPENT   | HIGH     | DB_UNSPENT_MINT_SPENT for an input of an operation that   |
|                          |          | sent nothing yet: the melt pre-flight blocks and marks it |
|                          |          | spent; check_proofs reports it and leaves it to its owner |
| DB_RESERVED_MINT_PENDING | LOW      | DB_UNSPENT_MINT_PENDING likewise: the pre-flight blocks   |
|                          |          | (the melt stays prepared); check_proofs reports it        |
| MINT_UNKNOWN             | LOW      | reported (the mint gave no state)                         |

The first five are the discrepancies of the server-side melt write-up; the two reserved
ones are two of them seen on an operation's inputs, and take their severity from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from models import ProofState
from nuts.models import ProofSpentState
from sagas.errors import Severity


class Action(StrEnum):
    MARK_SPENT = "mark_spent"  # stop offering value that is gone
    MAKE_SPENDABLE = "make_spendable"  # back to spendable: only on a definitive UNSPENT
    SETTLE_OPERATION = "settle_operation"  # the operation holding the proof is settled
    BLOCK = "block"  # the melt pre-flight stops; elsewhere the owning operation settles it
    REPORT = "report"


@dataclass(frozen=True)
class Discrepancy:
    severity: Severity
    action: Action
    variant_of: str | None = None  # the write-up's discrepancy this one is a case of


WRITE_UP: Mapping[str, Discrepancy] = MappingProxyType(
    {
        "DB_UNSPENT_MINT_SPENT": Discrepancy(Severity.HIGH, Action.MARK_SPENT),
        "DB_SPENT_MINT_UNSPENT": Discrepancy(Severity.MEDIUM, Action.MAKE_SPENDABLE),
        "DB_PENDING_MINT_SPENT": Discrepancy(Severity.MEDIUM, Action.SETTLE_OPERATION),
        "DB_UNSPENT_MINT_PENDING": Discrepancy(Severity.LOW, Action.REPORT),
        "PROOF_NOT_IN_DB": Discrepancy(Severity.LOW, Action.REPORT),
    }
)


def _held(variant_of: str) -> Discrepancy:
    """One of the write-up's discrepancies, on the inputs an operation holds (reserved)."""
    return Discrepancy(WRITE_UP[variant_of].severity, Action.BLOCK, variant_of)


DISCREPANCIES: Mapping[str, Discrepancy] = MappingProxyType(
    {
        **WRITE_UP,
        "DB_RESERVED_MINT_SPENT": _held("DB_UNSPENT_MINT_SPENT"),
        "DB_RESERVED_MINT_PENDING": _held("DB_UNSPENT_MINT_PENDING"),
        "MINT_UNKNOWN": Discrepancy(Severity.LOW, Action.REPORT),
    }
)


def classify(ours: str, theirs: ProofSpentState | None, *, in_flight: bool = False) -> str | None:
    """The discrepancy between our state of a proof and the mint's; None when they agree.

    `in_flight`: the operation holding a reserved proof is past prepared, so a request of
    its own may be at the mint: spent or pending there is that request, not a discrepancy.
    """
    if theirs is None:
        return "MINT_UNKNOWN"
    if ours == ProofState.SPENT:
        return "DB_SPENT_MINT_UNSPENT" if theirs == ProofSpentState.UNSPENT else None
    if theirs == ProofSpentState.UNSPENT:
        return None  # reserved or pending here and not yet spent there: as it should be
    spent = theirs == ProofSpentState.SPENT
    if ours == ProofState.UNSPENT:
        return "DB_UNSPENT_MINT_SPENT" if spent else "DB_UNSPENT_MINT_PENDING"
    if ours == ProofState.RESERVED:
        if in_flight:
            return None
        return "DB_RESERVED_MINT_SPENT" if spent else "DB_RESERVED_MINT_PENDING"
    return "DB_PENDING_MINT_SPENT" if spent else None  # pending both sides: in flight


def severity_report(counts: Mapping[str, int]) -> dict[str, dict[str, Any]]:
    """{code: {"severity", "count"}} for each code, its severity from the table."""
    return {
        code: {"severity": DISCREPANCIES[code].severity.value, "count": count}
        for code, count in counts.items()
    }
