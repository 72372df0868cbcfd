"""Wallet restore (NUT-09 with NUT-13 secrets) and proof reconciliation (NUT-07).

restore_wallet walks every keyset of a mint in batches of 100 counters,
asking the mint which of our deterministic outputs it has signed, until three
batches in a row come back empty. What it finds is checked with checkstate:
only UNSPENT proofs become spendable, a proof we already hold (an open
operation's input, a pending send) is left as it is, and counters only rise.
It works on an empty database (the disaster case) and on a live one.

check_proofs compares our stored states with the mint's, classifies each
discrepancy by severity and corrects what is safe to correct.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from models import Proof, ProofState
from nuts.client import MintClient
from nuts.models import Proof as WireProof
from nuts.models import ProofSpentState
from nuts.outputs import derive_outputs, proof_y
from sagas import mints as registry
from sagas.counters import raise_counter_to
from sagas.engine import SagaContext
from sagas.errors import UnknownMintError
from sagas.mints import load_keysets, require_trusted_mint
from sagas.proofs import store_proofs
from sagas.swap import restore_signed

RESTORE_BATCH = 100
EMPTY_BATCHES_TO_STOP = 3
CHECKSTATE_BATCH = 100


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
    with ctx.uow() as session:
        registry.sync_keysets(session, client, mint_url)
        keysets = load_keysets(session, mint_url)
    seed = ctx.wallet_seed(wallet)
    found: list[WireProof] = []
    counters: dict[str, int] = {}
    for keyset in keysets.values():
        counter, empty, next_unused = 0, 0, 0
        while empty < empty_batches:
            outputs = derive_outputs(seed, keyset.id, [1] * batch, counter)
            proofs = restore_signed(client, outputs, keysets)
            if proofs:
                empty = 0
                found.extend(proofs)
                by_secret = {o.secret: o.counter for o in outputs}
                next_unused = max(by_secret[p.secret] for p in proofs) + 1  # type: ignore[operator]
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
                select(Proof.secret).where(Proof.secret.in_([p.secret for p in unspent]))
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


def check_proofs(ctx: SagaContext, wallet: str, mint_url: str) -> dict[str, Any]:
    """NUT-07 reconciliation of our proofs at one mint; safe corrections applied."""
    with ctx.uow() as session:
        mint_url = require_trusted_mint(session, mint_url)
        rows = session.execute(
            select(Proof.id, Proof.y, Proof.state, Proof.used_by, Proof.amount).where(
                Proof.wallet == wallet,
                Proof.mint_url == mint_url,
                Proof.state != ProofState.SPENT,
            )
        ).all()
    states = states_of_ys(ctx.mint_client(mint_url), [row.y for row in rows])
    discrepancies: dict[str, dict[str, Any]] = {}
    corrected_ids: list[int] = []
    for row in rows:
        kind = _classify(row.state, states.get(row.y))
        if kind is None:
            continue
        severity, correct = DISCREPANCIES[kind]
        entry = discrepancies.setdefault(kind, {"severity": severity, "count": 0, "amount": 0})
        entry["count"] += 1
        entry["amount"] += row.amount
        if correct:
            corrected_ids.append(row.id)
    with ctx.uow() as session:
        if corrected_ids:
            # Spendable here but spent at the mint: it is gone, stop offering it.
            session.execute(
                update(Proof)
                .where(Proof.id.in_(corrected_ids), Proof.state == ProofState.UNSPENT)
                .values(state=ProofState.SPENT)
            )
    return {
        "wallet": wallet,
        "mint_url": mint_url,
        "checked": len(rows),
        "discrepancies": discrepancies,
        "corrected": len(corrected_ids),
    }


# discrepancy -> (severity, corrected here)
DISCREPANCIES: dict[str, tuple[str, bool]] = {
    "DB_UNSPENT_MINT_SPENT": ("HIGH", True),  # we would offer money that is gone
    "DB_UNSPENT_MINT_PENDING": ("LOW", False),  # another wallet is melting it right now
    "DB_RESERVED_MINT_SPENT": ("MEDIUM", False),  # its operation's recovery settles it
    "DB_PENDING_MINT_SPENT": ("MEDIUM", False),  # a claimed send: the watcher finalizes it
    "MINT_UNKNOWN": ("LOW", False),  # no answer for this Y
}


def _classify(ours: str, theirs: ProofSpentState | None) -> str | None:
    if theirs is None:
        return "MINT_UNKNOWN"
    if theirs == ProofSpentState.UNSPENT:
        return None
    if ours == ProofState.UNSPENT:
        return (
            "DB_UNSPENT_MINT_SPENT"
            if theirs == ProofSpentState.SPENT
            else "DB_UNSPENT_MINT_PENDING"
        )
    if theirs == ProofSpentState.SPENT:
        return "DB_RESERVED_MINT_SPENT" if ours == ProofState.RESERVED else "DB_PENDING_MINT_SPENT"
    return None  # ours reserved/pending and theirs pending: an operation in flight


def _registered(ctx: SagaContext, url: str) -> str:
    """The mint to restore from: known and trusted, or added now (the disaster case)."""
    try:
        with ctx.uow() as session:
            return require_trusted_mint(session, url)
    except UnknownMintError:
        with ctx.uow() as session:
            return registry.add_mint(session, ctx.mint_client(url), url, trusted=True)["url"]
