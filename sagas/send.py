"""Send saga: proofs out as a Cashu token, followed until someone claims it.

    prepared -> executing -> pending (token out) -> finalized (claimed)
    prepared -> rolling_back -> rolled_back                 (cancel: release the inputs)
    pending -> rolling_back -> rolled_back                  (reclaim: swap the token back)
    rolling_back -> finalized                               (claimed while we reclaimed)
    rolling_back -> pending                                 (the mint refused the reclaim)
    executing -> rolled_back                                (the mint refused the swap)

prepare reserves inputs and reports the fee before anything moves: proofs that
add up to the amount exactly go out as they are (no swap, no fee); otherwise a
swap splits the inputs into send and keep outputs, written ahead.

Recovery, per state:
    prepared      older than the configured age -> cancelled
    executing     replay the swap with the stored outputs (rule 5); refused -> rolled back
    pending       checkstate of the sent proofs: all spent -> finalized
    rolling_back  resume the reclaim from its stored outputs
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from coincurve import PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Operation, ProofState, StoredProof
from nuts.amounts import fee_for_ppks, input_fee, split_amount
from nuts.errors import MintAmbiguousError, MintRejectedError
from nuts.keysets import Keyset
from nuts.models import Proof, ProofSpentState
from nuts.p2pk import sign_p2pk_inputs
from nuts.secrets import wallet_p2pk_key
from nuts.tokens import Token, encode_token_v3, encode_token_v4
from sagas.engine import (
    SagaContext,
    SagaSpec,
    claim_operations,
    get_operation,
    new_operation,
    operation_view,
    present,
    record_event,
    register,
    release_claims,
    transition,
    update_operation,
    validate_amount,
)
from sagas.errors import (
    InvalidAmountError,
    InvalidRequestError,
    InvalidStateError,
    TokenLockedError,
)
from sagas.proofs import (
    proofs_of_operation,
    release_proofs,
    select_and_reserve,
    set_proof_state,
    store_operation_proofs,
    wire_proofs_of,
)
from sagas.recovery import register_rule
from sagas.registry import (
    active_keyset,
    fee_ppk,
    require_trusted_mint,
    trusted_keysets,
)
from sagas.swap import (
    OutputsData,
    SwapRequest,
    SwapResult,
    outputs_data,
    plan_outputs,
    raise_if_never_sent,
    settle_swap,
    stored_outputs,
)

KIND = "send"


class SendState(StrEnum):
    """The states of a send operation (the transitions below)."""

    PREPARED = "prepared"
    EXECUTING = "executing"
    PENDING = "pending"
    ROLLING_BACK = "rolling_back"
    FINALIZED = "finalized"
    ROLLED_BACK = "rolled_back"


class SendData(OutputsData, total=False):
    """What a send operation keeps in Operation.data, key by key as stored; its outputs
    written ahead (send, keep, reclaim) are OutputsData's."""

    # prepare
    fee: int  # the swap's input fee (0 when the inputs go out as they are)
    input_amount: int
    needs_swap: bool
    send_amount: int  # the token's worth: the amount plus receiver_fee
    keep_amount: int
    receiver_fee: int  # the receiver's swap fee, when the sender pays it
    memo: str | None
    p2pk_pubkey: str | None  # the key the token is locked to
    # pending
    token: str
    # reclaimed
    reclaim_fee: int
    reclaimed_amount: int


def send_data(op: Operation) -> SendData:
    """op.data as its record: this module writes it only as SendData."""
    return cast(SendData, op.data)


SPEC = register(
    SagaSpec(
        kind=KIND,
        transitions={
            SendState.PREPARED: frozenset({SendState.EXECUTING, SendState.ROLLING_BACK}),
            SendState.EXECUTING: frozenset({SendState.PENDING, SendState.ROLLED_BACK}),
            SendState.PENDING: frozenset({SendState.FINALIZED, SendState.ROLLING_BACK}),
            SendState.ROLLING_BACK: frozenset(
                {SendState.ROLLED_BACK, SendState.FINALIZED, SendState.PENDING}
            ),
            SendState.FINALIZED: frozenset(),
            SendState.ROLLED_BACK: frozenset(),
        },
        terminal=frozenset({SendState.FINALIZED, SendState.ROLLED_BACK}),
        event_prefix="send",
        evented=frozenset(
            {SendState.PREPARED, SendState.PENDING, SendState.FINALIZED, SendState.ROLLED_BACK}
        ),
        public_columns=(),
        public_data=(
            "fee",
            "input_amount",
            "needs_swap",
            "send_amount",
            "keep_amount",
            "receiver_fee",
            "memo",
            "p2pk_pubkey",
            "token",
            "reclaimed_amount",
            "reclaim_fee",
        ),
    )
)


# --- public steps ------------------------------------------------------------------------------


def prepare(
    ctx: SagaContext,
    wallet: str,
    mint_url: str,
    amount: int,
    unit: str = "sat",
    memo: str | None = None,
    p2pk_pubkey: str | None = None,
    include_receiver_fee: bool = False,
    notify_task: str | None = None,
) -> dict[str, Any]:
    """Reserve inputs for a send and report its fee; nothing leaves the wallet yet."""
    request = _SendRequest.checked(amount, unit, memo, p2pk_pubkey, include_receiver_fee)
    with ctx.uow() as session:
        op, _ = _reserve(session, wallet, mint_url, request, notify_task)
        return operation_view(op)


def execute(ctx: SagaContext, operation_id: str | uuid.UUID, token_version: int = 4) -> dict:
    """Make the token: hand over the inputs, or swap them into send and keep outputs."""
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        if op.state not in (SendState.PREPARED, SendState.EXECUTING):
            return operation_view(op)
        _, keysets = trusted_keysets(session, op.mint_url)
        started = _start(ctx, session, op, keysets, token_version)
    return started if isinstance(started, dict) else _swap(ctx, started, token_version)


def token(
    ctx: SagaContext,
    wallet: str,
    mint_url: str,
    amount: int,
    unit: str = "sat",
    memo: str | None = None,
    p2pk_pubkey: str | None = None,
    include_receiver_fee: bool = False,
    notify_task: str | None = None,
    token_version: int = 4,
    *,
    operation_id: uuid.UUID | None = None,
) -> dict:
    """prepare + execute in one call: reserved and written ahead in one transaction.

    `operation_id`: the id to give the new operation (its caller holds its lock).
    """
    request = _SendRequest.checked(amount, unit, memo, p2pk_pubkey, include_receiver_fee)
    with ctx.uow() as session:
        op, keysets = _reserve(session, wallet, mint_url, request, notify_task, operation_id)
        started = _start(ctx, session, op, keysets, token_version)
    return started if isinstance(started, dict) else _swap(ctx, started, token_version)


def refresh(ctx: SagaContext, operation_id: str | uuid.UUID) -> dict[str, Any]:
    """Finalize once the mint reports every sent proof spent (NUT-07)."""
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        if op.state != SendState.PENDING:
            return operation_view(op)
        mint_url = require_trusted_mint(session, op.mint_url)
        ys = [p.y for p in proofs_of_operation(session, op.id, state=ProofState.PENDING)]
        op_id = op.id
    try:
        states = ctx.mint_client(mint_url).checkstate(ys)
    except (MintAmbiguousError, MintRejectedError):
        with ctx.uow() as session:
            return operation_view(get_operation(session, op_id, KIND))
    return finalize_if_claimed(ctx, op_id, {s.Y: s.state for s in states})


def finalize_if_claimed(
    ctx: SagaContext, operation_id: uuid.UUID, states: dict[str, ProofSpentState]
) -> dict[str, Any]:
    """Given the mint's states of the sent proofs: all spent -> finalized."""
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        sent = proofs_of_operation(session, op.id, state=ProofState.PENDING)
        if (
            op.state == SendState.PENDING
            and sent
            and all(states.get(p.y) == ProofSpentState.SPENT for p in sent)
        ):
            set_proof_state(session, op.id, ProofState.SPENT)
            transition(session, op, SendState.FINALIZED)
        return operation_view(op)


def rollback(ctx: SagaContext, operation_id: str | uuid.UUID) -> dict[str, Any]:
    """Cancel a prepared send, or reclaim a pending one with a swap into fresh outputs.

    The rule every saga's cancel and rollback keep: rolling back what is rolled back
    returns it as it is; a finalized operation cannot be rolled back (InvalidStateError).
    """
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        if op.state == SendState.ROLLED_BACK:
            return operation_view(op)
        if op.state == SendState.FINALIZED:
            raise InvalidStateError("the send is finalized: its token was claimed")
        if op.state == SendState.PREPARED:
            _release_and_roll_back(session, op)
            return operation_view(op)
        if op.state == SendState.EXECUTING:
            raise InvalidStateError("the send is executing; it settles before it can roll back")
        mint_url, keysets = trusted_keysets(session, op.mint_url)
        first_attempt = op.state == SendState.PENDING
        if first_attempt:
            _plan_reclaim(ctx, session, op, keysets)
        op_id = op.id
        reclaim = stored_outputs(send_data(op), "reclaim")
        sent = _signed_for_reclaim(
            ctx, op, wire_proofs_of(session, op.id, state=ProofState.PENDING)
        )
    outcome = settle_swap(ctx.mint_client(mint_url), sent, reclaim, keysets, first_attempt)
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state != SendState.ROLLING_BACK:
            return operation_view(op)
        if outcome.result == SwapResult.DONE:
            set_proof_state(session, op.id, ProofState.SPENT)
            store_operation_proofs(session, op, outcome.proofs)
            transition(session, op, SendState.ROLLED_BACK)
        elif outcome.result == SwapResult.INPUTS_SPENT_ELSEWHERE:
            set_proof_state(session, op.id, ProofState.SPENT)  # the receiver claimed it first
            transition(
                session, op, SendState.FINALIZED, data=SendData(reclaim_fee=0, reclaimed_amount=0)
            )
        elif outcome.result == SwapResult.REJECTED:
            transition(session, op, SendState.PENDING, error=outcome.error)
        else:
            update_operation(session, op, error=outcome.error)
        view = operation_view(op)
    raise_if_never_sent(outcome)
    return view


def cancel(ctx: SagaContext, operation_id: str | uuid.UUID) -> dict[str, Any]:
    """Release the inputs of a prepared send. Only a prepared one: later, a token is out."""
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        if op.state != SendState.PREPARED:
            raise InvalidStateError(
                f"only a prepared send can be cancelled, this one is {op.state}"
            )
        _release_and_roll_back(session, op)
        return operation_view(op)


def _release_and_roll_back(session: Session, op: Operation) -> None:
    release_proofs(session, op.id)
    transition(session, op, SendState.ROLLING_BACK)
    transition(session, op, SendState.ROLLED_BACK)


def watch_pending_sends(ctx: SagaContext, *, limit: int = 1000, batch: int = 100) -> dict:
    """The proof-state watcher: finalize claimed sends with one checkstate per mint per
    `batch` proofs, instead of one call per operation."""
    with ctx.uow() as session:
        op_ids = [c.id for c in claim_operations(session, KIND, SendState.PENDING, limit=limit)]
        rows = session.execute(
            select(StoredProof.used_by, StoredProof.mint_url, StoredProof.y).where(
                StoredProof.used_by.in_(op_ids), StoredProof.state == ProofState.PENDING
            )
        ).all()
    ys_by_mint: dict[str, list[str]] = {}
    ys_by_op: dict[uuid.UUID, list[str]] = {}
    for op_id, mint_url, y in rows:  # op_id: the pending send the proof is in (used_by)
        ys_by_mint.setdefault(mint_url, []).append(y)
        ys_by_op.setdefault(present(op_id, "operation"), []).append(y)
    states: dict[str, ProofSpentState] = {}
    calls = 0
    for mint_url, ys in ys_by_mint.items():
        client = ctx.mint_client(mint_url)
        for start in range(0, len(ys), batch):
            try:
                states.update({s.Y: s.state for s in client.checkstate(ys[start : start + batch])})
            except (MintAmbiguousError, MintRejectedError):
                break  # this mint is unreachable now; its sends wait for the next tick
            calls += 1
    finalized: set[uuid.UUID] = set()
    for op_id, ys in ys_by_op.items():
        # finalize_if_claimed checks again in its transaction; its transition ends the claim.
        spent = all(states.get(y) == ProofSpentState.SPENT for y in ys)
        if spent and finalize_if_claimed(ctx, op_id, states)["state"] == SendState.FINALIZED:
            finalized.add(op_id)
    with ctx.uow() as session:  # the rest are looked at again next tick
        release_claims(session, [op_id for op_id in op_ids if op_id not in finalized])
    return {"checked": len(op_ids), SendState.FINALIZED: len(finalized), "checkstate_calls": calls}


# --- recovery ----------------------------------------------------------------------------------


def recover(ctx: SagaContext, operation_id: uuid.UUID, state: str) -> dict[str, Any]:
    if state == SendState.EXECUTING:
        return execute(ctx, operation_id)
    if state == SendState.PENDING:
        return refresh(ctx, operation_id)
    return rollback(ctx, operation_id)  # prepared (stale) and rolling_back


register_rule(KIND, SendState.EXECUTING, recover)
register_rule(KIND, SendState.ROLLING_BACK, recover)
register_rule(KIND, SendState.PENDING, recover)
register_rule(KIND, SendState.PREPARED, recover)  # once stale: SagaContext.prepared_max_age


# --- the steps' insides -------------------------------------------------------------------------


@dataclass(frozen=True)
class _SendRequest:
    """A send's arguments, checked before anything is read or reserved."""

    amount: int
    unit: str
    memo: str | None
    p2pk_pubkey: str | None
    include_receiver_fee: bool

    @classmethod
    def checked(
        cls,
        amount: int,
        unit: str,
        memo: str | None,
        p2pk_pubkey: str | None,
        include_receiver_fee: bool,
    ) -> _SendRequest:
        amount = validate_amount(amount)
        if p2pk_pubkey is not None:
            p2pk_pubkey = _valid_pubkey(p2pk_pubkey)
        return cls(amount, unit, memo, p2pk_pubkey, include_receiver_fee)


def _reserve(
    session: Session,
    wallet: str,
    mint_url: str,
    request: _SendRequest,
    notify_task: str | None,
    operation_id: uuid.UUID | None = None,
) -> tuple[Operation, dict[str, Keyset]]:
    """A new prepared send with its inputs reserved and its fee worked out."""
    amount, unit = request.amount, request.unit
    mint_url, keysets = trusted_keysets(session, mint_url)
    keyset = active_keyset(keysets, unit, mint_url)
    fees = fee_ppk(keysets)
    include_receiver_fee = request.include_receiver_fee
    fee_of_receiver = receiver_fee(amount, keyset.input_fee_ppk) if include_receiver_fee else 0
    if not include_receiver_fee and amount <= receiver_fee(amount, keyset.input_fee_ppk):
        raise InvalidAmountError(
            f"a token of {amount} {unit} cannot be received: the receiver's swap costs "
            "that much; send more, or pass include_receiver_fee"
        )
    send_amount = amount + fee_of_receiver
    op = new_operation(
        session,
        KIND,
        SendState.PREPARED,
        operation_id,
        wallet=wallet,
        mint_url=mint_url,
        unit=unit,
        amount=amount,
        notify_task=notify_task,
    )
    # Handing over proofs as they are needs an exact match, no lock, and a receiver
    # fee we computed for the split (which the proofs we hold need not match).
    as_they_are = request.p2pk_pubkey is None and not include_receiver_fee
    inputs = select_and_reserve(
        session,
        wallet=wallet,
        mint_url=mint_url,
        unit=unit,
        amount=send_amount,
        fee_ppk=fees,
        operation_id=op.id,
        exact_without_fees=as_they_are,
    )
    input_amount = sum(p.amount for p in inputs)
    needs_swap = not (as_they_are and input_amount == send_amount)
    fee = input_fee(inputs, fees) if needs_swap else 0
    data = SendData(
        fee=fee,
        input_amount=input_amount,
        needs_swap=needs_swap,
        send_amount=send_amount,
        keep_amount=input_amount - send_amount - fee,
        receiver_fee=fee_of_receiver,
        memo=request.memo,
        p2pk_pubkey=request.p2pk_pubkey,
    )
    op = update_operation(session, op, data=data)
    record_event(session, op)
    return op, keysets


def _start(
    ctx: SagaContext,
    session: Session,
    op: Operation,
    keysets: dict[str, Keyset],
    token_version: int,
) -> dict[str, Any] | SwapRequest:
    """A prepared or executing send: the token at once when its inputs go out as they are,
    else the swap to make (its outputs written ahead on the way to executing)."""
    if op.state == SendState.PREPARED and not send_data(op)["needs_swap"]:
        transition(session, op, SendState.EXECUTING)
        set_proof_state(session, op.id, ProofState.PENDING)
        return _token_out(session, op, token_version)
    first_attempt = op.state == SendState.PREPARED
    if first_attempt:
        _write_outputs_ahead(ctx, session, op, keysets)
    inputs = wire_proofs_of(session, op.id)
    return SwapRequest.of(op, inputs, keysets, ["send", "keep"], first_attempt=first_attempt)


def _swap(ctx: SagaContext, request: SwapRequest, token_version: int) -> dict[str, Any]:
    outcome = request.settle(ctx.mint_client(request.mint_url))
    sent_count = len(request.outputs["send"])
    with ctx.uow() as session:
        op = get_operation(session, request.op_id, KIND)
        if op.state != SendState.EXECUTING:
            return operation_view(op)
        if outcome.result == SwapResult.DONE:
            set_proof_state(session, op.id, ProofState.SPENT)
            sent, kept = outcome.proofs[:sent_count], outcome.proofs[sent_count:]
            store_operation_proofs(session, op, kept)
            store_operation_proofs(session, op, sent, state=ProofState.PENDING, used_by=op.id)
            return _token_out(session, op, token_version)
        if outcome.result == SwapResult.REJECTED:
            release_proofs(session, op.id)
            transition(session, op, SendState.ROLLED_BACK, error=outcome.error)
        elif outcome.result == SwapResult.INPUTS_SPENT_ELSEWHERE:
            set_proof_state(session, op.id, ProofState.SPENT)
            transition(session, op, SendState.ROLLED_BACK, error=outcome.error)
        else:
            update_operation(session, op, error=outcome.error)
        view = operation_view(op)
    raise_if_never_sent(outcome)
    return view


def _write_outputs_ahead(
    ctx: SagaContext, session: Session, op: Operation, keysets: dict[str, Keyset]
) -> None:
    keyset = active_keyset(keysets, op.unit, op.mint_url)
    data = send_data(op)
    locked_to = data.get("p2pk_pubkey")
    planned = plan_outputs(
        session,
        ctx.wallet_seed(op.wallet),
        op.wallet,
        keyset,
        {"send": data["send_amount"], "keep": data["keep_amount"]},
        lock_to={"send": locked_to} if locked_to else None,
        kept_at=op.mint_url,
    )
    transition(session, op, SendState.EXECUTING, data=outputs_data(planned))


def _token_out(session: Session, op: Operation, token_version: int) -> dict:
    proofs = wire_proofs_of(session, op.id, state=ProofState.PENDING)
    token = Token(mint=op.mint_url, unit=op.unit, proofs=proofs, memo=send_data(op).get("memo"))
    text = encode_token_v3(token) if token_version == 3 else encode_token_v4(token)
    transition(session, op, SendState.PENDING, data=SendData(token=text))
    return operation_view(op)


def _plan_reclaim(
    ctx: SagaContext, session: Session, op: Operation, keysets: dict[str, Keyset]
) -> None:
    """pending -> rolling_back, with the reclaim outputs written ahead."""
    locked_to = send_data(op).get("p2pk_pubkey")
    if locked_to and locked_to[2:] != _our_pubkey(ctx, op.wallet)[2:]:
        raise TokenLockedError(
            "the token is locked to the receiver's key (P2PK): only the receiver can claim it"
        )
    sent = wire_proofs_of(session, op.id, state=ProofState.PENDING)
    fee = input_fee(sent, fee_ppk(keysets))
    amount = sum(p.amount for p in sent) - fee
    if amount <= 0:
        raise InvalidStateError(f"reclaiming {amount + fee} would cost {fee} in fees")
    planned = plan_outputs(
        session,
        ctx.wallet_seed(op.wallet),
        op.wallet,
        active_keyset(keysets, op.unit, op.mint_url),
        {"reclaim": amount},
        kept_at=op.mint_url,
    )
    transition(
        session,
        op,
        SendState.ROLLING_BACK,
        data=SendData(**outputs_data(planned), reclaim_fee=fee, reclaimed_amount=amount),
    )


def _signed_for_reclaim(ctx: SagaContext, op: Operation, sent: list[Proof]) -> list[Proof]:
    """The sent proofs as swap inputs, signed when they are locked to our own key."""
    if send_data(op).get("p2pk_pubkey"):
        sent = sign_p2pk_inputs(sent, wallet_p2pk_key(ctx.wallet_seed(op.wallet)))
    return sent


def _our_pubkey(ctx: SagaContext, wallet: str) -> str:
    return wallet_p2pk_key(ctx.wallet_seed(wallet)).public_key.format().hex()


def receiver_fee(amount: int, ppk: int) -> int:
    """The least fee f such that the receiver's swap of a token worth amount + f, split in
    powers of 2, costs at most f: the receiver keeps the whole amount. (The swap's fee is
    not monotonic in f, so f is searched upwards; it is at most 64 proofs' fee.)"""
    fee = 0
    while fee_for_ppks([ppk] * len(split_amount(amount + fee))) > fee:
        fee += 1
    return fee


def _valid_pubkey(pubkey: str) -> str:
    try:
        if len(pubkey) != 66 or pubkey[:2] not in ("02", "03"):
            raise ValueError
        PublicKey(bytes.fromhex(pubkey))
    except ValueError:
        raise InvalidRequestError(
            f"p2pk_pubkey must be a 33-byte compressed public key in hex, got {pubkey[:20]!r}"
        ) from None
    return pubkey.lower()
