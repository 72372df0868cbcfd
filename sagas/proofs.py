"""Our proofs in the database: storing, reserving all-or-nothing, releasing, balances.

Reservation (docs/design.md rule 3): candidates are read without locks, a selection
is made, then exactly those rows are locked with FOR UPDATE SKIP LOCKED and
moved unspent -> reserved in one UPDATE whose row count must match. A row taken
by someone else in between makes the attempt start over; two operations can
never hold the same proof.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    CompoundSelect,
    CursorResult,
    Integer,
    Row,
    String,
    Table,
    bindparam,
    func,
    literal,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import Operation, ProofState, StoredProof
from nuts.amounts import select_proofs, split_to_fill
from nuts.errors import InsufficientFundsError
from nuts.models import Proof, ProofDLEQ
from nuts.outputs import proof_y
from sagas.errors import InsufficientBalanceError

RESERVE_ATTEMPTS = 8
RESERVATION_TURN = select(
    func.pg_advisory_xact_lock(func.hashtextextended(bindparam("key", type_=String), 0))
)
PROOFS = cast(Table, StoredProof.__table__)

# Executed on the session's connection, these skip the ORM's bulk machinery.
INSERT_PROOFS = (
    insert(PROOFS).on_conflict_do_nothing(index_elements=["secret"]).returning(PROOFS.c.id)
)
# Locks the rows still unspent among :row_ids (SKIP LOCKED: a row another transaction holds
# is not waited for), moves them to reserved and returns what a wire proof needs.
RESERVE_PROOFS = (
    update(PROOFS)
    .where(
        PROOFS.c.id.in_(
            select(PROOFS.c.id)
            .where(
                PROOFS.c.id.in_(bindparam("row_ids", expanding=True)),
                PROOFS.c.state == ProofState.UNSPENT,
            )
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    )
    .values(state=ProofState.RESERVED, used_by=bindparam("operation_id"))
    .returning(
        PROOFS.c.id,
        PROOFS.c.keyset_id,
        PROOFS.c.amount,
        PROOFS.c.secret,
        PROOFS.c.C,
        PROOFS.c.dleq,
        PROOFS.c.witness,
    )
)
UNRESERVE_PROOFS = (
    update(PROOFS)
    .where(PROOFS.c.id.in_(bindparam("row_ids", expanding=True)))
    .values(state=ProofState.UNSPENT, used_by=None)
)
# The SET columns (state, and spent_by when spent) come from the executed parameters.
SET_PROOF_STATE = update(PROOFS).where(
    PROOFS.c.used_by == bindparam("operation_id"), PROOFS.c.state != ProofState.SPENT
)
SET_PROOF_STATE_OF_YS = SET_PROOF_STATE.where(PROOFS.c.y.in_(bindparam("ys", expanding=True)))


@dataclass(frozen=True)
class Candidate:
    """The little coin selection needs to know about a proof."""

    row_id: int
    amount: int
    id: str  # keyset id, as nuts.amounts expects


def store_proofs(
    session: Session,
    proofs: Iterable[Proof],
    *,
    wallet: str,
    mint_url: str,
    unit: str,
    created_by: uuid.UUID | None,
    used_by: uuid.UUID | None = None,
    state: ProofState = ProofState.UNSPENT,
) -> int:
    """Insert new proofs; a secret we already hold is left as it is (idempotent re-runs)."""
    rows = [
        {
            "wallet": wallet,
            "mint_url": mint_url,
            "unit": unit,
            "keyset_id": p.id,
            "amount": p.amount,
            "secret": p.secret,
            "C": p.C,
            "y": proof_y(p),
            "dleq": p.dleq.model_dump() if p.dleq else None,
            "witness": p.witness,
            "state": state,
            "created_by": created_by,
            "used_by": used_by,
        }
        for p in proofs
    ]
    if not rows:
        return 0
    return len(session.connection().execute(INSERT_PROOFS, rows).all())


def store_operation_proofs(
    session: Session,
    op: Operation,
    proofs: Iterable[Proof],
    *,
    state: ProofState = ProofState.UNSPENT,
    used_by: uuid.UUID | None = None,
) -> int:
    """New proofs an operation brought in, in its wallet, mint and unit."""
    return store_proofs(
        session,
        proofs,
        wallet=op.wallet,
        mint_url=op.mint_url,
        unit=op.unit,
        created_by=op.id,
        used_by=used_by,
        state=state,
    )


def to_wire(row: StoredProof | Row[Any]) -> Proof:
    return Proof(
        id=row.keyset_id,
        amount=row.amount,
        secret=row.secret,
        C=row.C,
        dleq=ProofDLEQ.model_validate(row.dleq) if row.dleq else None,
        witness=row.witness,
    )


KEEP_TARGET = 3  # proofs of each amount a wallet likes to hold, as Nutshell's wallet does
AMOUNT_BITS = 63  # amounts are powers of two below 2**63 (a BIGINT column)
MAX_PER_DENOMINATION = 256


def _spendable_where() -> tuple[ColumnElement[bool], ...]:
    """A wallet's spendable proofs at a mint, in one unit (the statements' parameters)."""
    return (
        StoredProof.wallet == bindparam("wallet"),
        StoredProof.mint_url == bindparam("mint_url"),
        StoredProof.unit == bindparam("unit"),
        StoredProof.state == ProofState.UNSPENT,
    )


_ALL_SPENDABLE = select(StoredProof.id, StoredProof.amount, StoredProof.keyset_id).where(
    *_spendable_where()
)
# The largest amount the wallet holds: one step down ix_proofs_selection.
_LARGEST_SPENDABLE = select(func.max(StoredProof.amount)).where(*_spendable_where())


@lru_cache(maxsize=AMOUNT_BITS)
def _candidates_per_amount(bits: int) -> CompoundSelect:
    """For each power-of-two amount below 2**bits, up to `cap_<bit>` of the wallet's
    unspent proofs of it: one LIMITed probe of ix_proofs_selection per amount, so the cost
    stays flat however many proofs the wallet holds. Each amount is its own branch with a
    constant amount and limit (psycopg2 sends the caps as literals), so the planner sees how
    few rows each wants; a LATERAL join over arrays hides that from it and it scans the
    whole wallet instead. Built once per number of amounts."""
    return union_all(
        *(
            select(StoredProof.id, StoredProof.amount, StoredProof.keyset_id)
            .where(*_spendable_where(), StoredProof.amount == literal(1 << bit, BigInteger))
            .limit(bindparam(f"cap_{bit}", type_=Integer))
            for bit in range(bits)
        )
    )


def spendable_candidates(
    session: Session, wallet: str, mint_url: str, unit: str, *, covering: int | None = None
) -> list[Candidate]:
    """The wallet's spendable proofs at a mint, as coin selection needs them.

    With `covering`, only as many proofs of each power-of-two amount as a
    selection of that size could use are read: one index probe per amount, so
    the cost stays flat however many proofs the wallet holds.
    """
    mine = {"wallet": wallet, "mint_url": mint_url, "unit": unit}
    if covering is None:
        rows = session.execute(_ALL_SPENDABLE, mine)
    else:
        # Of an amount above what is needed a few proofs are enough; below, what adds up
        # to it; above the largest the wallet holds, none.
        largest = session.scalar(_LARGEST_SPENDABLE, mine)
        if largest is None:
            return []
        bits = min(int(largest).bit_length(), AMOUNT_BITS)
        caps = {
            f"cap_{bit}": min(MAX_PER_DENOMINATION, covering // (1 << bit) + KEEP_TARGET)
            for bit in range(bits)
        }
        rows = session.execute(_candidates_per_amount(bits), {**mine, **caps})
    return [Candidate(row_id, amount, keyset_id) for row_id, amount, keyset_id in rows]


def split_for_wallet(
    session: Session, wallet: str, mint_url: str, unit: str, amount: int
) -> list[int]:
    """Output amounts for value the wallet keeps: topping up the small amounts it lacks
    (KEEP_TARGET of each), so later small sends and melts need no swap."""
    held: dict[int, int] = {}
    for row in spendable_candidates(session, wallet, mint_url, unit, covering=0):
        held[row.amount] = held.get(row.amount, 0) + 1
    return split_to_fill(amount, held, KEEP_TARGET)


def reserve_proofs(
    session: Session, row_ids: Sequence[int], operation_id: uuid.UUID
) -> list[Row[Any]] | None:
    """unspent -> reserved for exactly these rows, or for none of them: the rows (id and
    what a wire proof needs), or None. A lost race puts back what it took, in this
    transaction."""
    connection = session.connection()
    rows = list(
        connection.execute(
            RESERVE_PROOFS, {"row_ids": list(row_ids), "operation_id": operation_id}
        ).all()
    )
    if len(rows) == len(row_ids):
        return rows
    if rows:
        connection.execute(UNRESERVE_PROOFS, {"row_ids": [row.id for row in rows]})
    return None


def select_and_reserve(
    session: Session,
    *,
    wallet: str,
    mint_url: str,
    unit: str,
    amount: int,
    fee_ppk: dict[str, int],
    operation_id: uuid.UUID,
    include_fees: bool = True,
    exact_without_fees: bool = False,
    choose: Callable[[list[Candidate]], list[Candidate]] | None = None,
) -> list[Proof]:
    """Choose proofs covering `amount` (plus their input fee) and reserve them for the operation.

    With exact_without_fees, proofs adding up to exactly `amount` are taken when
    the wallet has them (they can be handed over as they are, no swap, no fee).
    `choose` replaces the selection rule altogether (it may raise InsufficientFundsError).
    A lost race (rows taken meanwhile) undoes only that attempt, and the next one chooses again.
    """

    def pick(candidates: list[Candidate]) -> list[Candidate]:
        chosen = choose(candidates) if choose else []
        if exact_without_fees and not chosen:
            chosen = select_proofs(candidates, amount, fee_ppk, include_fees=False)
            if sum(c.amount for c in chosen) != amount:
                chosen = []
        return chosen or select_proofs(candidates, amount, fee_ppk, include_fees=include_fees)

    # One wallet's reservations at one mint in one unit take turns (until this transaction
    # ends): two at once would read the same spendable rows, and the one whose rows were
    # taken would read them again on every attempt while the other's transaction runs.
    session.execute(RESERVATION_TURN, {"key": f"{wallet}\n{mint_url}\n{unit}"})
    for _ in range(RESERVE_ATTEMPTS):
        try:
            # A bounded read first; the whole wallet only when that cannot cover the amount.
            chosen = pick(spendable_candidates(session, wallet, mint_url, unit, covering=amount))
        except InsufficientFundsError:
            try:
                chosen = pick(spendable_candidates(session, wallet, mint_url, unit))
            except InsufficientFundsError as exc:
                raise InsufficientBalanceError(
                    f"wallet {wallet!r} has {exc.available} {unit} spendable at {mint_url}, "
                    f"needs {exc.needed}"
                ) from None
        reserved = reserve_proofs(session, [c.row_id for c in chosen], operation_id)
        if reserved is not None:
            return [to_wire(row) for row in sorted(reserved, key=lambda row: row.amount)]
    raise InsufficientBalanceError(
        f"could not reserve proofs for {amount} {unit} after {RESERVE_ATTEMPTS} attempts "
        "(concurrent operations hold them)"
    )


def release_proofs(session: Session, operation_id: uuid.UUID) -> int:
    """Reserved (or pending) inputs of an operation go back to spendable.

    Only after a definitive answer from the mint (docs/design.md rule 4).
    """
    released = session.execute(
        update(StoredProof)
        .where(
            StoredProof.used_by == operation_id,
            StoredProof.state.in_([ProofState.RESERVED, ProofState.PENDING]),
        )
        .values(state=ProofState.UNSPENT, used_by=None)
    )
    return cast(CursorResult[Any], released).rowcount


def set_proof_state(
    session: Session, operation_id: uuid.UUID, state: ProofState, *, ys: Sequence[str] | None = None
) -> int:
    """Move the operation's inputs (or those with the given Ys) to `state`."""
    values: dict[str, Any] = {"operation_id": operation_id, "state": state}
    if state == ProofState.SPENT:
        values["spent_by"] = operation_id
    if ys is None:
        return session.connection().execute(SET_PROOF_STATE, values).rowcount
    return session.connection().execute(SET_PROOF_STATE_OF_YS, {**values, "ys": list(ys)}).rowcount


def proofs_of_operation(
    session: Session,
    operation_id: uuid.UUID,
    *,
    state: ProofState | None = None,
    unspent: bool = False,
) -> list[StoredProof]:
    """The operation's inputs (the proofs it uses), oldest first: those in `state`, or with
    `unspent` those the mint has not yet spent."""
    rows = session.scalars(
        select(StoredProof).where(StoredProof.used_by == operation_id).order_by(StoredProof.id)
    )
    return [
        p
        for p in rows
        if (state is None or p.state == state) and not (unspent and p.state == ProofState.SPENT)
    ]


def wire_proofs_of(
    session: Session,
    operation_id: uuid.UUID,
    *,
    state: ProofState | None = None,
    unspent: bool = False,
) -> list[Proof]:
    """proofs_of_operation's, as the mint sees them (request inputs, token proofs)."""
    rows = proofs_of_operation(session, operation_id, state=state, unspent=unspent)
    return [to_wire(p) for p in rows]


def balance(
    session: Session, wallet: str, *, mint_url: str | None = None, unit: str = "sat"
) -> dict:
    """Spendable, reserved and pending sums, in total and per mint."""
    stmt = (
        select(
            StoredProof.mint_url, StoredProof.state, func.coalesce(func.sum(StoredProof.amount), 0)
        )
        .where(
            StoredProof.wallet == wallet,
            StoredProof.unit == unit,
            StoredProof.state != ProofState.SPENT,
        )
        .group_by(StoredProof.mint_url, StoredProof.state)
    )
    if mint_url is not None:
        stmt = stmt.where(StoredProof.mint_url == mint_url)
    by_mint: dict[str, dict[str, int]] = {}
    for url, state, total in session.execute(stmt):
        entry = by_mint.setdefault(url, {"spendable": 0, "reserved": 0, "pending": 0, "total": 0})
        key = "spendable" if state == ProofState.UNSPENT else state
        entry[key] += int(total)
        entry["total"] += int(total)
    result: dict[str, Any] = {
        key: sum(m[key] for m in by_mint.values())
        for key in ("spendable", "reserved", "pending", "total")
    }
    result["unit"] = unit
    result["by_mint"] = by_mint
    return result
