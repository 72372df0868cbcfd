"""Wallet restore (NUT-09 with NUT-13 secrets) and proof reconciliation (NUT-07).

restore_wallet walks every keyset of a mint in batches of 100 counters,
asking the mint which of our deterministic outputs it has signed, until three
batches in a row come back empty. What it finds is checked with checkstate:
only UNSPENT proofs become spendable, a proof we already hold (an open
operation's input, a pending send) is left as it is, and counters only rise.
It works on an empty database (the disaster case) and on a live one.

check_proofs compares our stored states with the mint's (the proofs we hold, the
spent ones changed last, and the proofs of a token from outside), classifies each
discrepancy with sagas/reconcile.py's table and corrects what is safe to correct.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select, update

from models import Operation, ProofState, StoredProof
from nuts.client import MintClient, normalize_mint_url
from nuts.errors import CashuError, InvalidTokenError
from nuts.models import Proof, ProofSpentState
from nuts.outputs import MAX_PROOFS_PER_REQUEST, derive_outputs, proof_y
from nuts.tokens import Token, decode_token
from sagas import melt as melt_saga
from sagas import reconcile, registry
from sagas import send as send_saga
from sagas.counters import raise_counter_to
from sagas.engine import SPECS, SagaContext
from sagas.errors import UnknownMintError
from sagas.proofs import store_proofs
from sagas.recovery import Lock
from sagas.registry import load_keysets, require_trusted_mint
from sagas.swap import restore_signed

logger = logging.getLogger(__name__)

RESTORE_BATCH = 100
EMPTY_BATCHES_TO_STOP = 3
CHECKSTATE_BATCH = 100
# check_proofs looks at this many spent proofs, those changed last: the ones a recent bug
# or race may have written off wrongly, for at most ten checkstate calls however many
# spent proofs the wallet has.
SPENT_WINDOW = 10 * CHECKSTATE_BATCH


def restore_wallet(
    ctx: SagaContext,
    wallet: str,
    mint_url: str,
    *,
    batch: int = RESTORE_BATCH,
    empty_batches: int = EMPTY_BATCHES_TO_STOP,
) -> dict[str, Any]:
    """Bring back every proof of `wallet` at `mint_url` from the wallet's seed alone."""
    mint_url = _registered(ctx, mint_url)
    client = ctx.mint_client(mint_url)
    registry.sync_keysets(ctx, mint_url)
    with ctx.uow() as session:
        keysets = load_keysets(session, mint_url)
    seed = ctx.wallet_seed(wallet)
    found: list[Proof] = []
    counters: dict[str, int] = {}
    for keyset in keysets.values():
        counter, empty, next_unused = 0, 0, 0
        while empty < empty_batches:
            outputs = derive_outputs(seed, keyset.id, [1] * batch, counter)
            proofs = restore_signed(client, outputs, keysets)
            if proofs:
                empty = 0
                found.extend(proofs)
                # derived outputs: each has its counter
                by_secret = {o.secret: o.counter for o in outputs if o.counter is not None}
                next_unused = max(by_secret[p.secret] for p in proofs) + 1
            else:
                empty += 1
            counter += batch
        with ctx.uow() as session:
            counters[keyset.id] = raise_counter_to(session, wallet, keyset.id, next_unused)
    states = states_of_ys(client, [proof_y(p) for p in found])
    unspent = [p for p in found if states.get(proof_y(p)) == ProofSpentState.UNSPENT]
    with ctx.uow() as session:
        known = set(
            session.scalars(
                select(StoredProof.secret).where(
                    StoredProof.secret.in_([p.secret for p in unspent])
                )
            )
        )
        new = [p for p in unspent if p.secret not in known]
        for unit in {keysets[p.id].unit for p in new}:
            store_proofs(
                session,
                [p for p in new if keysets[p.id].unit == unit],
                wallet=wallet,
                mint_url=mint_url,
                unit=unit,
                created_by=None,
            )
    return {
        "wallet": wallet,
        "mint_url": mint_url,
        "found": len(found),
        "restored": len(new),
        "restored_amount": sum(p.amount for p in new),
        "already_known": len(unspent) - len(new),
        "spent": sum(1 for s in states.values() if s == ProofSpentState.SPENT),
        "pending": sum(1 for s in states.values() if s == ProofSpentState.PENDING),
        "counters": counters,
    }


def states_of_ys(client: MintClient, ys: list[str]) -> dict[str, ProofSpentState]:
    """The mint's state of each Y, one checkstate call per CHECKSTATE_BATCH."""
    states: dict[str, ProofSpentState] = {}
    for start in range(0, len(ys), CHECKSTATE_BATCH):
        chunk = ys[start : start + CHECKSTATE_BATCH]
        states.update({s.Y: s.state for s in client.checkstate(chunk)})
    return states


def check_proofs(
    ctx: SagaContext,
    wallet: str,
    mint_url: str,
    *,
    token: str | None = None,
    spent_window: int = SPENT_WINDOW,
    lock: Lock | None = None,
) -> dict[str, Any]:
    """NUT-07 reconciliation of our proofs at one mint: each discrepancy classified and
    acted on as sagas/reconcile.py's table says.

    Checked: every proof we hold (unspent, reserved, pending); the `spent_window` spent
    ones changed last (`spent_window_full`: older ones may be left unchecked); and, with
    `token` (a cashuA/cashuB token from a backup or from someone), its proofs: those we
    have rows for in any state, and those we do not (PROOF_NOT_IN_DB, with their state at
    the mint). An operation settled here runs under `lock(its id)` when one is given.
    """
    outside = _outside_proofs(token) if token is not None else None
    with ctx.uow() as session:
        mint_url = require_trusted_mint(session, mint_url)
        if outside is not None and normalize_mint_url(outside.mint) != mint_url:
            raise InvalidTokenError(f"the token is of mint {outside.mint}, not of {mint_url}")
        outside_ys = {proof_y(p): p for p in outside.proofs} if outside is not None else {}
        mine = (StoredProof.wallet == wallet, StoredProof.mint_url == mint_url)
        rows = session.execute(
            select(*_CHECKED).where(*mine, StoredProof.state != ProofState.SPENT)
        )
        by_id = {row.id: row for row in rows}
        spent = session.execute(
            select(*_CHECKED)
            .where(*mine, StoredProof.state == ProofState.SPENT)
            .order_by(StoredProof.updated_at.desc(), StoredProof.id.desc())
            .limit(spent_window)
        ).all()
        by_id.update((row.id, row) for row in spent)
        if outside_ys:
            named = select(*_CHECKED).where(*mine, StoredProof.y.in_(list(outside_ys)))
            by_id.update((row.id, row) for row in session.execute(named))
        owners = {o for row in by_id.values() for o in (row.used_by, row.spent_by) if o}
        ops = {
            op.id: op
            for op in session.execute(
                select(Operation.id, Operation.kind, Operation.state).where(
                    Operation.id.in_(owners)
                )
            )
        }
    checked = list(by_id.values())
    held_ys = {row.y for row in checked}
    not_held = [y for y in outside_ys if y not in held_ys]
    states = states_of_ys(ctx.mint_client(mint_url), list(dict.fromkeys([*held_ys, *not_held])))
    found: dict[str, list[Any]] = {}
    for row in checked:
        owner = ops.get(row.used_by)
        in_flight = owner is not None and _is_open(owner) and owner.state != "prepared"
        kind = reconcile.classify(row.state, states.get(row.y), in_flight=in_flight)
        if kind is not None:
            found.setdefault(kind, []).append(row)
    discrepancies: dict[str, dict[str, Any]] = {}
    for kind, kind_rows in found.items():
        discrepancies[kind] = _entry(kind, len(kind_rows), sum(r.amount for r in kind_rows))
    missing: list[dict[str, Any]] = [
        {"Y": y, "amount": outside_ys[y].amount, "state": _state_name(states.get(y))}
        for y in not_held
    ]
    if missing:
        discrepancies["PROOF_NOT_IN_DB"] = _entry(
            "PROOF_NOT_IN_DB", len(missing), sum(p["amount"] for p in missing)
        )
    corrections, settled = _correct(ctx, found, ops, states, lock or _no_lock)
    return {
        "wallet": wallet,
        "mint_url": mint_url,
        "checked": len(checked),
        "spent_checked": len(spent),
        "spent_window_full": len(spent) >= spent_window,
        "outside_checked": len(outside_ys),
        "discrepancies": discrepancies,
        "corrected": sum(corrections.values()),
        "corrections": corrections,
        "settled": settled,
        "not_in_db": missing,
    }


# What check_proofs reads of a proof (never its secret: only whether it is a NUT-10 one).
_CHECKED = (
    StoredProof.id,
    StoredProof.y,
    StoredProof.state,
    StoredProof.used_by,
    StoredProof.spent_by,
    StoredProof.amount,
    StoredProof.secret.startswith("[").label("conditioned"),
)


def _entry(kind: str, count: int, amount: int) -> dict[str, Any]:
    return {
        "severity": reconcile.DISCREPANCIES[kind].severity.value,
        "count": count,
        "amount": amount,
    }


def _state_name(state: ProofSpentState | None) -> str:
    return state.value if state is not None else "UNKNOWN"


def _is_open(op: Any) -> bool:
    """Not in a terminal state (an operation of a kind not loaded here counts as open)."""
    spec = SPECS.get(op.kind)
    return spec is None or op.state not in spec.terminal


def _outside_proofs(token: str) -> Token:
    """A token's proofs, checked as a receive checks them before it asks the mint."""
    parsed = decode_token(token)
    if len(parsed.proofs) > MAX_PROOFS_PER_REQUEST:
        raise InvalidTokenError(f"token holds more than {MAX_PROOFS_PER_REQUEST} proofs")
    return parsed


def _correct(
    ctx: SagaContext,
    found: dict[str, list[Any]],
    ops: dict[uuid.UUID, Any],
    states: dict[str, ProofSpentState],
    lock: Lock,
) -> tuple[dict[str, int], list[str]]:
    """The corrections the table allows: rows corrected per discrepancy, operations settled."""
    corrections: dict[str, int] = {}
    gone = [row.id for row in found.get("DB_UNSPENT_MINT_SPENT", [])]
    # Spent here and UNSPENT there (definitive), and no open operation holds or spent it:
    # it is ours to spend. A NUT-10 proof is left as it is: who can spend it is its lock's.
    back = [
        row.id
        for row in found.get("DB_SPENT_MINT_UNSPENT", [])
        if not row.conditioned
        and not any(o in ops and _is_open(ops[o]) for o in (row.used_by, row.spent_by))
    ]
    with ctx.uow() as session:
        if gone:
            # Spendable here but spent at the mint: it is gone, stop offering it.
            corrections["DB_UNSPENT_MINT_SPENT"] = (
                session.connection()
                .execute(
                    update(StoredProof)
                    .where(StoredProof.id.in_(gone), StoredProof.state == ProofState.UNSPENT)
                    .values(state=ProofState.SPENT)
                )
                .rowcount
            )
        if back:
            # Operations only ever end: one seen terminal above cannot hold it now.
            corrections["DB_SPENT_MINT_UNSPENT"] = (
                session.connection()
                .execute(
                    update(StoredProof)
                    .where(StoredProof.id.in_(back), StoredProof.state == ProofState.SPENT)
                    .values(state=ProofState.UNSPENT, used_by=None, spent_by=None)
                )
                .rowcount
            )
    pending = found.get("DB_PENDING_MINT_SPENT", [])
    settled = _settle_owners(ctx, {row.used_by for row in pending}, ops, states, lock)
    if settled:
        with ctx.uow() as session:
            corrections["DB_PENDING_MINT_SPENT"] = (
                session.scalar(
                    select(func.count()).where(
                        StoredProof.id.in_([row.id for row in pending]),
                        StoredProof.state == ProofState.SPENT,
                    )
                )
                or 0
            )
    return {kind: n for kind, n in corrections.items() if n}, [str(o) for o in settled]


def _settle_owners(
    ctx: SagaContext,
    owners: set[uuid.UUID | None],
    ops: dict[uuid.UUID, Any],
    states: dict[str, ProofSpentState],
    lock: Lock,
) -> list[uuid.UUID]:
    """Settle each operation whose pending proofs the mint has spent, where its saga can: a
    pending send whose token was claimed (finalized from these states), a pending or
    rolling-back melt (its quote asked). The operations that moved; the rest are reported."""
    moved: list[uuid.UUID] = []
    for op_id in sorted(o for o in owners if o in ops):
        op = ops[op_id]
        settle = _SETTLE.get((op.kind, op.state))
        if settle is None:
            continue
        try:
            with lock(op_id):
                view = settle(ctx, op_id, states)
        except CashuError as exc:  # a worker is on it, the mint did not answer...: reported
            logger.info("check_proofs could not settle %s %s: %s", op.kind, op_id, exc.code)
            continue
        if view["state"] != op.state:
            moved.append(op_id)
    return moved


_SETTLE: dict[tuple[str, str], Callable[..., dict[str, Any]]] = {
    (send_saga.KIND, "pending"): send_saga.finalize_if_claimed,
    (melt_saga.KIND, "pending"): lambda ctx, op_id, _states: melt_saga.refresh(ctx, op_id),
    (melt_saga.KIND, "rolling_back"): lambda ctx, op_id, _states: melt_saga.refresh(ctx, op_id),
}


def _no_lock(op_id: uuid.UUID) -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()


def _registered(ctx: SagaContext, url: str) -> str:
    """The mint to restore from: known and trusted, or added now (the disaster case)."""
    try:
        with ctx.uow() as session:
            return require_trusted_mint(session, url)
    except UnknownMintError:
        return registry.add_mint(ctx, url, trusted=True)["url"]
