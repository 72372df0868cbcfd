"""Receive saga: swap a token someone gave us into this wallet's own proofs.

    prepared -> executing -> finalized
    prepared/executing -> failed        (the token was claimed elsewhere)
    prepared -> rolled_back             (the mint refused the swap; nothing moved)

prepare decodes and checks the token offline (mint trusted, keysets known,
every DLEQ present verified, a P2PK lock we can sign) and reports amount and
fee. execute writes our outputs ahead and swaps. One operation per token: its
proofs' Ys hash to the operation's token_hash, so a double receive is refused.

Recovery from executing asks the mint: inputs all UNSPENT -> redo the swap
with the same outputs; all SPENT -> restore our outputs (ours: finalized;
not ours: failed); mixed or unreachable -> stay and retry later.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import Operation
from nuts.amounts import input_fee
from nuts.errors import InvalidTokenError, KeysetError, MintAmbiguousError, MintRejectedError
from nuts.keysets import Keyset
from nuts.models import Proof, ProofSpentState
from nuts.outputs import MAX_PROOFS_PER_REQUEST, proof_defect, proof_y
from nuts.p2pk import P2PKConditions, SpendingConditionError, parse_secret, sign_p2pk_inputs
from nuts.secrets import wallet_p2pk_key
from nuts.tokens import Token, decode_token, expand_keyset_ids
from sagas import registry
from sagas.engine import (
    SagaContext,
    SagaSpec,
    get_operation,
    new_operation,
    operation_view,
    present,
    record_event,
    register,
    transition,
    update_operation,
)
from sagas.errors import (
    TokenAlreadySpentError,
    TokenLockedError,
    TokenRefusedError,
    UnknownMintError,
    UntrustedMintError,
)
from sagas.proofs import store_operation_proofs
from sagas.recovery import register_rule
from sagas.registry import (
    active_keyset,
    fee_ppk,
    load_keysets,
    trusted_keysets,
)
from sagas.swap import (
    OutputsData,
    SwapRequest,
    SwapResult,
    inputs_state,
    outputs_data,
    plan_outputs,
    restore_outputs,
    stored_outputs,
)

KIND = "receive"


class ReceiveState(StrEnum):
    """The states of a receive operation (the transitions below)."""

    PREPARED = "prepared"
    EXECUTING = "executing"
    FINALIZED = "finalized"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


class ReceiveData(OutputsData, total=False):
    """What a receive operation keeps in Operation.data, key by key as stored; the outputs
    the token is swapped into ("outputs") are OutputsData's."""

    fee: int  # the swap's input fee
    token_amount: int  # what the token is worth, its fee not yet taken
    memo: str | None
    inputs: list[dict[str, Any]]  # the token's proofs (Proof.model_dump)


def receive_data(op: Operation) -> ReceiveData:
    """op.data as its record: this module writes it only as ReceiveData."""
    return cast(ReceiveData, op.data)


SPEC = register(
    SagaSpec(
        kind=KIND,
        transitions={
            ReceiveState.PREPARED: frozenset(
                {ReceiveState.EXECUTING, ReceiveState.ROLLED_BACK, ReceiveState.FAILED}
            ),
            ReceiveState.EXECUTING: frozenset(
                {ReceiveState.FINALIZED, ReceiveState.FAILED, ReceiveState.ROLLED_BACK}
            ),
            ReceiveState.FINALIZED: frozenset(),
            ReceiveState.FAILED: frozenset(),
            ReceiveState.ROLLED_BACK: frozenset(),
        },
        terminal=frozenset({ReceiveState.FINALIZED, ReceiveState.FAILED, ReceiveState.ROLLED_BACK}),
        event_prefix="receive-op",
        evented=frozenset(
            {
                ReceiveState.PREPARED,
                ReceiveState.FINALIZED,
                ReceiveState.ROLLED_BACK,
                ReceiveState.FAILED,
            }
        ),
        public_columns=("token_hash",),
        public_data=("fee", "token_amount", "memo"),
    )
)


@dataclass(frozen=True)
class _CheckedToken:
    """A token that passed every offline check, and what receiving it yields."""

    token: Token
    mint_url: str
    keysets: dict[str, Keyset]
    fee: int
    token_hash: str


def prepare(
    ctx: SagaContext,
    wallet: str,
    token: str,
    trust_mint: bool = False,
    notify_task: str | None = None,
) -> dict[str, Any]:
    """Check a token offline and report what receiving it yields; nothing moves yet."""
    checked = _check_token(ctx, wallet, token, trust_mint)
    with ctx.uow() as session:
        return operation_view(_record_prepared(session, wallet, checked, notify_task))


def execute(ctx: SagaContext, operation_id: str | uuid.UUID) -> dict[str, Any]:
    """Swap the token into our outputs (written ahead) and keep the proofs."""
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        if op.state not in (ReceiveState.PREPARED, ReceiveState.EXECUTING):
            return operation_view(op)
        _, keysets = trusted_keysets(session, op.mint_url)
        swap = _write_outputs_ahead(ctx, session, op, keysets)
    return _swap(ctx, swap)


def redeem(
    ctx: SagaContext,
    wallet: str,
    token: str,
    trust_mint: bool = False,
    notify_task: str | None = None,
    *,
    operation_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """prepare + execute in one call: the outputs are written ahead in prepare's transaction.

    `operation_id`: the id to give the new operation (its caller holds its lock). When the
    token already has an open operation of this wallet, that one is returned as it is, for
    the caller to execute under its own lock.
    """
    checked = _check_token(ctx, wallet, token, trust_mint)
    with ctx.uow() as session:
        op = _record_prepared(session, wallet, checked, notify_task, operation_id)
        if operation_id is not None and op.id != operation_id:
            return operation_view(op)
        swap = _write_outputs_ahead(ctx, session, op, checked.keysets)
    return _swap(ctx, swap)


def recover(ctx: SagaContext, operation_id: uuid.UUID, state: str) -> dict[str, Any]:
    """Executing: ask checkstate first, then redo, restore, or wait (see the module doc)."""
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        if op.state != ReceiveState.EXECUTING:
            return operation_view(op)
        mint_url, keysets = trusted_keysets(session, op.mint_url)
        inputs = _signed_inputs(ctx, op)
        outputs = stored_outputs(receive_data(op), "outputs")
    client = ctx.mint_client(mint_url)
    try:
        states = inputs_state(client, inputs)
        if states == {ProofSpentState.UNSPENT}:
            return execute(ctx, operation_id)
        if states != {ProofSpentState.SPENT}:
            return operation_view_of(ctx, operation_id)  # mixed or pending: later
        restored = restore_outputs(client, outputs, keysets)
    except (MintAmbiguousError, MintRejectedError):
        return operation_view_of(ctx, operation_id)
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        if op.state != ReceiveState.EXECUTING:
            return operation_view(op)
        if restored is None:
            transition(session, op, ReceiveState.FAILED, error=TokenAlreadySpentError())
        else:
            store_operation_proofs(session, op, restored)
            transition(session, op, ReceiveState.FINALIZED)
        return operation_view(op)


register_rule(KIND, ReceiveState.EXECUTING, recover)


def operation_view_of(ctx: SagaContext, operation_id: uuid.UUID) -> dict[str, Any]:
    with ctx.uow() as session:
        return operation_view(get_operation(session, operation_id, KIND))


# --- the steps' insides -------------------------------------------------------------------------


def _check_token(ctx: SagaContext, wallet: str, token: str, trust_mint: bool) -> _CheckedToken:
    """Decode and check a token offline: mint trusted, keysets known, DLEQs, locks, fee."""
    parsed = decode_token(token)
    mint_url, keysets = _trusted_mint_for(ctx, parsed.mint, trust_mint)
    if not set(_short(parsed)) <= {k[:16] for k in keysets}:
        registry.sync_keysets(ctx, mint_url)  # a keyset we have not seen yet: fetch, verify
        with ctx.uow() as session:
            keysets = load_keysets(session, mint_url)
    try:
        parsed = expand_keyset_ids(parsed, keysets)
    except KeysetError as exc:
        raise InvalidTokenError(f"token names a keyset the mint does not have: {exc}") from None
    if len(parsed.proofs) > MAX_PROOFS_PER_REQUEST:
        raise InvalidTokenError(f"token holds more than {MAX_PROOFS_PER_REQUEST} proofs")
    for proof in parsed.proofs:
        keyset = keysets[proof.id]
        if keyset.unit != parsed.unit:
            raise InvalidTokenError(f"token unit {parsed.unit} but keyset unit {keyset.unit}")
        defect = proof_defect(proof, keyset)
        if defect is not None:
            raise InvalidTokenError(defect)
    ys = [proof_y(p) for p in parsed.proofs]
    if len(set(ys)) != len(ys):
        raise InvalidTokenError("token holds the same proof twice")
    _check_locks(ctx, wallet, parsed.proofs)
    fee = input_fee(parsed.proofs, fee_ppk(keysets))
    if parsed.amount <= fee:
        raise InvalidTokenError(f"token worth {parsed.amount} does not cover its fee {fee}")
    token_hash = hashlib.sha256("".join(sorted(ys)).encode()).hexdigest()
    return _CheckedToken(parsed, mint_url, keysets, fee, token_hash)


def _record_prepared(
    session: Session,
    wallet: str,
    checked: _CheckedToken,
    notify_task: str | None,
    operation_id: uuid.UUID | None = None,
) -> Operation:
    """The token's operation: this wallet's open one, or a new one in prepared.

    A token some receive of ours already took (finalized) or lost (failed) is refused
    without asking the mint. Open receives of other wallets do not block it: the mint
    decides whose swap wins. A concurrent redeem by this wallet finds the one that won.
    """
    existing = _live_receive(session, wallet, checked)
    if existing is not None:
        return existing
    token = checked.token
    try:
        with session.begin_nested():
            op = new_operation(
                session,
                KIND,
                ReceiveState.PREPARED,
                operation_id,
                wallet=wallet,
                mint_url=checked.mint_url,
                unit=token.unit,
                amount=token.amount - checked.fee,
                token_hash=checked.token_hash,
                notify_task=notify_task,
                data=ReceiveData(
                    fee=checked.fee,
                    token_amount=token.amount,
                    memo=token.memo,
                    inputs=[p.model_dump(exclude_none=True) for p in token.proofs],
                ),
            )
    except IntegrityError:  # this wallet's concurrent redeem of the token got there first
        existing = _live_receive(session, wallet, checked)
        if existing is None:
            raise
        return existing
    record_event(session, op)
    return op


def _live_receive(session: Session, wallet: str, checked: _CheckedToken) -> Operation | None:
    """This wallet's open receive of the token; TokenAlreadySpentError once any receive of
    ours settled it."""
    receives = session.scalars(
        select(Operation).where(
            Operation.mint_url == checked.mint_url,
            Operation.kind == KIND,
            Operation.token_hash == checked.token_hash,
            Operation.state != ReceiveState.ROLLED_BACK,
        )
    ).all()
    if any(op.state in SPEC.terminal for op in receives):
        raise TokenAlreadySpentError("this token was already received")
    return next((op for op in receives if op.wallet == wallet), None)


def _write_outputs_ahead(
    ctx: SagaContext, session: Session, op: Operation, keysets: dict[str, Keyset]
) -> SwapRequest:
    """prepared -> executing with our outputs stored; an executing one replays its outputs."""
    if op.state == ReceiveState.PREPARED:
        planned = plan_outputs(
            session,
            ctx.wallet_seed(op.wallet),
            op.wallet,
            active_keyset(keysets, op.unit, op.mint_url),
            {"outputs": present(op.amount, "amount")},
            kept_at=op.mint_url,
        )
        transition(session, op, ReceiveState.EXECUTING, data=outputs_data(planned))
    return SwapRequest.of(op, _signed_inputs(ctx, op), keysets, ["outputs"])


def _swap(ctx: SagaContext, request: SwapRequest) -> dict[str, Any]:
    outcome = request.settle(ctx.mint_client(request.mint_url))
    with ctx.uow() as session:
        op = get_operation(session, request.op_id, KIND)
        if op.state != ReceiveState.EXECUTING:
            return operation_view(op)
        if outcome.result == SwapResult.DONE:
            store_operation_proofs(session, op, outcome.proofs)
            transition(session, op, ReceiveState.FINALIZED)
        elif outcome.result == SwapResult.INPUTS_SPENT_ELSEWHERE:
            transition(session, op, ReceiveState.FAILED, error=TokenAlreadySpentError())
        elif outcome.result == SwapResult.REJECTED:
            transition(session, op, ReceiveState.ROLLED_BACK, error=outcome.error)
        else:
            update_operation(session, op, error=outcome.error)
        view = operation_view(op)
    if view["state"] == ReceiveState.FAILED:
        raise TokenAlreadySpentError("the token was already claimed elsewhere")
    if view["state"] == ReceiveState.ROLLED_BACK:
        raise TokenRefusedError(
            f"the mint refused the token, nothing was received: {outcome.error}"
        )
    return view


def _trusted_mint_for(
    ctx: SagaContext, url: str, trust_mint: bool
) -> tuple[str, dict[str, Keyset]]:
    """The token's mint, registered and trusted (trust_mint=True adds or trusts it), and
    its keysets."""
    try:
        with ctx.uow() as session:
            return trusted_keysets(session, url)
    except (UnknownMintError, UntrustedMintError):
        if not trust_mint:
            raise
    url = registry.add_mint(ctx, url, trusted=True)["url"]
    with ctx.uow() as session:
        return url, load_keysets(session, url)


def _short(token: Token) -> list[str]:
    return [kid[:16] for kid in token.keyset_ids]


def _check_locks(ctx: SagaContext, wallet: str, proofs: list[Proof]) -> None:
    ours = wallet_p2pk_key(ctx.wallet_seed(wallet)).public_key.format().hex()[2:]
    for proof in proofs:
        try:
            secret = parse_secret(proof.secret)
            if secret is None:
                continue
            if secret.kind != "P2PK":
                raise TokenLockedError(f"spending condition {secret.kind} is not supported")
            conditions = P2PKConditions.of(secret)
        except SpendingConditionError as exc:
            raise InvalidTokenError(f"malformed spending condition: {exc}") from None
        paths = conditions.signers_needed()
        if paths and not any(
            n == 1 and any(k.lower()[2:] == ours for k in keys) for keys, n in paths
        ):
            raise TokenLockedError("the token is locked to a key this wallet does not hold")


def _signed_inputs(ctx: SagaContext, op: Operation) -> list[Proof]:
    inputs = [Proof.model_validate(p) for p in receive_data(op)["inputs"]]
    if any(parse_secret(p.secret) is not None for p in inputs):
        inputs = sign_p2pk_inputs(inputs, wallet_p2pk_key(ctx.wallet_seed(op.wallet)))
    return inputs
