"""Mint saga: turn a paid Lightning invoice into ecash (NUT-04/23, NUT-20).

    init -> pending (quote made, waiting for payment) -> executing -> finalized
    init/pending -> failed (expired, refused);  executing -> pending (quote UNPAID after all)

Write-ahead: the outputs and their counters are committed with the move to
executing, before the mint request; a re-run replays the same outputs, so the
mint can never issue twice and whatever it issued can always be restored.

Recovery, per state (run by the beat and cashu.recovery.run):
    init       older than the grace period -> failed (no quote was handed out)
    pending    check the quote: PAID -> execute; UNPAID and expired -> failed;
               ISSUED -> restore our outputs if we hold any, else failed
    executing  check the quote: PAID -> replay the mint; ISSUED -> restore;
               UNPAID -> pending (failed once expired)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypedDict, cast

from coincurve import PrivateKey
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import Mint, Operation
from nuts.errors import (
    InvalidSignatureError,
    KeysetInactiveError,
    MintAmbiguousError,
    MintKeysetUnknownError,
    MintRejectedError,
    OutputsAlreadySignedError,
    QuoteAlreadyIssuedError,
    QuoteExpiredError,
    QuoteNotPaidError,
    QuotePendingError,
)
from nuts.keysets import Keyset
from nuts.models import BlindSignature, MintQuote, MintQuoteState
from nuts.outputs import PreparedOutput, derive_outputs, unblind_outputs
from nuts.secrets import derive_labelled_key
from sagas.counters import allocate_counters
from sagas.engine import (
    SagaContext,
    SagaSpec,
    get_operation,
    new_operation,
    operation_view,
    present,
    record_error,
    record_event,
    register,
    transition,
    update_operation,
    validate_amount,
)
from sagas.errors import (
    InvalidAmountError,
    InvalidStateError,
    MintSignatureInvalidError,
    ProofsNotRecoveredError,
    QuoteIssuedElsewhereError,
    Severity,
    UnsupportedMethodError,
)
from sagas.proofs import split_for_wallet, store_operation_proofs
from sagas.recovery import register_rule
from sagas.registry import active_keyset, load_keysets, require_trusted_mint, trusted_keysets

KIND = "mint"
QUOTE_EXPIRED_SEVERITY = Severity.LOW
"""A mint whose quote expired unpaid fails LOW, the caller's to ask again; left to the
engine, a mint's answer would be HIGH (a melt's expired quote is)."""


class MintState(StrEnum):
    """The states of a mint operation (the transitions below)."""

    INIT = "init"
    PENDING = "pending"
    EXECUTING = "executing"
    FINALIZED = "finalized"
    FAILED = "failed"


class MintData(TypedDict, total=False):
    """What a mint operation keeps in Operation.data, key by key as stored."""

    request: str  # the invoice to pay
    expiry: int | None  # the quote's, as the mint gave it at creation
    quote_state: str  # MintQuoteState, as last seen
    locked: bool  # the quote is locked to our NUT-20 key
    outputs: list[dict[str, Any]]  # written ahead, PreparedOutput.to_dict() each
    minted_amount: int


def mint_data(op: Operation) -> MintData:
    """op.data as its record: this module writes it only as MintData."""
    return cast(MintData, op.data)


METHODS = frozenset({"bolt11"})

SPEC = register(
    SagaSpec(
        kind=KIND,
        transitions={
            MintState.INIT: frozenset({MintState.PENDING, MintState.FAILED}),
            MintState.PENDING: frozenset({MintState.EXECUTING, MintState.FAILED}),
            MintState.EXECUTING: frozenset(
                {MintState.FINALIZED, MintState.PENDING, MintState.FAILED}
            ),
            MintState.FINALIZED: frozenset(),
            MintState.FAILED: frozenset(),
        },
        terminal=frozenset({MintState.FINALIZED, MintState.FAILED}),
        event_prefix="mint-op",
        evented=frozenset(
            {MintState.PENDING, MintState.EXECUTING, MintState.FINALIZED, MintState.FAILED}
        ),
        public_columns=("method", "quote_id"),
        public_data=("request", "expiry", "quote_state", "minted_amount"),
    )
)


# --- public steps ------------------------------------------------------------------------------


def prepare(
    ctx: SagaContext,
    wallet: str,
    mint_url: str,
    amount: int,
    unit: str = "sat",
    method: str = "bolt11",
    notify_task: str | None = None,
) -> dict[str, Any]:
    """Create a quote at the mint and return the invoice to pay (state pending)."""
    _check_method(method)
    amount = validate_amount(amount)
    with ctx.uow() as session:
        mint_url, keysets = trusted_keysets(session, mint_url)
        active_keyset(keysets, unit, mint_url)  # the unit must be mintable
        locked = _supports_nut20(session, mint_url)
        op = new_operation(
            session,
            KIND,
            MintState.INIT,
            wallet=wallet,
            method=method,
            mint_url=mint_url,
            unit=unit,
            amount=amount,
            notify_task=notify_task,
        )
    # The init row is committed before the quote request: a crash here leaves a
    # trace for recovery, and no invoice was handed to anyone.
    client = ctx.mint_client(mint_url)
    pubkey = _quote_key(ctx, wallet, op.id).public_key.format().hex() if locked else None
    try:
        quote = client.create_mint_quote(amount, unit, method=method, pubkey=pubkey)
    except MintRejectedError as exc:
        with ctx.uow() as session:
            op = get_operation(session, op.id, KIND)
            transition(session, op, MintState.FAILED, error=exc)
        raise
    if quote.unit is not None and quote.unit != unit:
        raise InvalidStateError(f"mint answered a {quote.unit} quote for a {unit} request")
    with ctx.uow() as session:
        op = get_operation(session, op.id, KIND)
        transition(
            session, op, MintState.PENDING, quote_id=quote.quote, data=_quote_data(quote, locked)
        )
        return operation_view(op)


def import_quote(
    ctx: SagaContext,
    wallet: str,
    mint_url: str,
    quote_id: str,
    notify_task: str | None = None,
) -> dict[str, Any]:
    """Adopt a quote made elsewhere; idempotent, and one operation per quote however many race."""
    with ctx.uow() as session:
        mint_url = require_trusted_mint(session, mint_url)
        existing = _by_quote(session, mint_url, quote_id)
        if existing is not None:
            if existing.wallet != wallet:
                raise InvalidStateError(f"quote {quote_id} belongs to another wallet's operation")
            return operation_view(existing)
    quote = ctx.mint_client(mint_url).check_mint_quote(quote_id)
    if quote.state == MintQuoteState.ISSUED:
        raise QuoteIssuedElsewhereError(
            f"quote {quote_id} is already issued and we hold no outputs for it"
        )
    if quote.pubkey:
        raise InvalidStateError(f"quote {quote_id} is locked to a key (NUT-20) we do not hold")
    if not quote.amount:
        raise InvalidAmountError(f"quote {quote_id} has no amount")
    with ctx.uow() as session:
        op_id = uuid.uuid4()
        session.execute(
            insert(Operation)
            .values(
                id=op_id,
                wallet=wallet,
                kind=KIND,
                method="bolt11",
                state=MintState.PENDING,
                version=0,
                mint_url=mint_url,
                unit=quote.unit or "sat",
                amount=quote.amount,
                quote_id=quote_id,
                notify_task=notify_task,
                data=_quote_data(quote, locked=False),
            )
            .on_conflict_do_nothing(
                index_elements=["mint_url", "kind", "quote_id"],
                index_where=Operation.kind != "receive",
            )
        )
        op = _by_quote(session, mint_url, quote_id)
        assert op is not None
        if op.wallet != wallet:  # another wallet's import won the race: never hand it out
            raise InvalidStateError(f"quote {quote_id} belongs to another wallet's operation")
        if op.id == op_id:  # we created it: announce it like any other arrival in pending
            record_event(session, op)
        return operation_view(op)


def execute(ctx: SagaContext, operation_id: str | uuid.UUID) -> dict[str, Any]:
    """Issue the ecash of a paid quote: outputs written ahead, then the mint request."""
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        if op.state in SPEC.terminal:
            return operation_view(op)
        _, keysets = trusted_keysets(session, op.mint_url)
        if op.state == MintState.PENDING:
            _write_outputs_ahead(ctx, session, op, keysets)
        elif op.state != MintState.EXECUTING:
            raise InvalidStateError(f"cannot execute a mint operation in state {op.state}")
        request = _MintRequest.of(op, keysets)  # committed in executing when this block ends
    return _issue(ctx, request)


def refresh(ctx: SagaContext, operation_id: str | uuid.UUID) -> dict[str, Any]:
    """Check the quote; issue once paid, fail once expired unpaid. Safe to call any time."""
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        if op.state in SPEC.terminal or op.state == MintState.INIT:
            return operation_view(op)
        mint_url = require_trusted_mint(session, op.mint_url)
        op_id, state, method = op.id, op.state, present(op.method, "method")
        quote_id = present(op.quote_id, "quote_id")
    try:
        quote = ctx.mint_client(mint_url).check_mint_quote(quote_id, method)
    except (MintAmbiguousError, MintRejectedError) as exc:
        return record_error(ctx, KIND, op_id, exc)
    return _settle_from_quote(ctx, op_id, state, quote)


# --- recovery ----------------------------------------------------------------------------------


def recover(ctx: SagaContext, operation_id: uuid.UUID, state: str) -> dict[str, Any]:
    """One recovery pass over an open operation (see the table at the top)."""
    if state == MintState.INIT:
        with ctx.uow() as session:
            op = get_operation(session, operation_id, KIND)
            if op.state == MintState.INIT:
                transition(
                    session,
                    op,
                    MintState.FAILED,
                    error=InvalidStateError("abandoned before a quote was made"),
                )
            return operation_view(op)
    return refresh(ctx, operation_id)


# --- the steps' insides -------------------------------------------------------------------------


def _settle_from_quote(
    ctx: SagaContext, op_id: uuid.UUID, state: str, quote: MintQuote
) -> dict[str, Any]:
    if quote.state == MintQuoteState.PAID:
        return execute(ctx, op_id)
    if quote.state == MintQuoteState.ISSUED:
        return _restore_issued(ctx, op_id)
    # UNPAID
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state != state:
            return operation_view(op)  # a newer step moved it; this check is stale
        # Nutshell leaves expiry out of quote checks; the one from creation still holds.
        expiry = quote.expiry or mint_data(op).get("expiry")
        expired = expiry is not None and expiry <= ctx.now().timestamp()
        if expired:
            transition(
                session,
                op,
                MintState.FAILED,
                error=QuoteExpiredError.past_expiry(quote.quote),
                severity=QUOTE_EXPIRED_SEVERITY,
            )
        elif op.state == MintState.EXECUTING:
            transition(session, op, MintState.PENDING, clear_error=False)
        return operation_view(op)


def _write_outputs_ahead(
    ctx: SagaContext, session: Session, op: Operation, keysets: dict[str, Keyset]
) -> None:
    """pending -> executing with the outputs stored (derived once; a re-run reuses them)."""
    data = MintData()
    if not mint_data(op).get("outputs"):
        keyset = active_keyset(keysets, op.unit, op.mint_url)
        amount = present(op.amount, "amount")
        amounts = split_for_wallet(session, op.wallet, op.mint_url, op.unit, amount)
        first = allocate_counters(session, op.wallet, keyset.id, len(amounts))
        outputs = derive_outputs(ctx.wallet_seed(op.wallet), keyset.id, amounts, first)
        data["outputs"] = [o.to_dict() for o in outputs]
    transition(session, op, MintState.EXECUTING, data=data)


@dataclass(frozen=True)
class _MintRequest:
    """What the mint request of an executing operation needs (read in its transaction)."""

    op_id: uuid.UUID
    outputs: list[PreparedOutput]
    mint_url: str
    quote_id: str
    wallet: str
    method: str
    locked: bool
    keysets: dict[str, Keyset]  # to unblind the answer

    @classmethod
    def of(cls, op: Operation, keysets: dict[str, Keyset]) -> _MintRequest:
        return cls(
            op_id=op.id,
            outputs=[PreparedOutput.from_dict(o) for o in mint_data(op)["outputs"]],
            mint_url=op.mint_url,
            quote_id=present(op.quote_id, "quote_id"),
            wallet=op.wallet,
            method=present(op.method, "method"),
            locked=mint_data(op).get("locked", False),
            keysets=keysets,
        )


def _issue(ctx: SagaContext, request: _MintRequest) -> dict[str, Any]:
    op_id, outputs = request.op_id, request.outputs
    key = _quote_key(ctx, request.wallet, op_id) if request.locked else None
    try:
        signatures = ctx.mint_client(request.mint_url).mint(
            request.quote_id,
            [o.blinded_message for o in outputs],
            quote_key=key,
            method=request.method,
        )
    except (QuoteAlreadyIssuedError, OutputsAlreadySignedError):
        # Our earlier request (same outputs) went through and its answer was lost.
        return _restore_issued(ctx, op_id)
    except QuoteNotPaidError:
        return _back_to_pending(ctx, op_id)
    except QuoteExpiredError as exc:
        return _fail(ctx, op_id, exc, QUOTE_EXPIRED_SEVERITY)
    except (KeysetInactiveError, MintKeysetUnknownError) as exc:
        # The keyset rotated under us: nothing was issued, derive fresh outputs next time.
        return _back_to_pending(ctx, op_id, drop_outputs=True, error=exc)
    except (QuotePendingError, MintAmbiguousError, MintRejectedError) as exc:
        return record_error(ctx, KIND, op_id, exc)  # stays executing; recovery settles it
    return _finalize(ctx, op_id, outputs, signatures, request.keysets)


def _finalize(
    ctx: SagaContext,
    op_id: uuid.UUID,
    outputs: list[PreparedOutput],
    signatures: list[BlindSignature],
    keysets: dict[str, Keyset] | None = None,
) -> dict[str, Any]:
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state != MintState.EXECUTING:
            return operation_view(op)
        try:
            keysets = keysets or load_keysets(session, op.mint_url)
            proofs = unblind_outputs(outputs, signatures, keysets)
        except InvalidSignatureError as exc:
            update_operation(session, op, error=MintSignatureInvalidError(str(exc)))
            return operation_view(op)
        minted = sum(p.amount for p in proofs)
        if minted != op.amount:
            update_operation(
                session,
                op,
                error=ProofsNotRecoveredError(f"got {minted} of {op.amount} from the mint"),
            )
            return operation_view(op)
        store_operation_proofs(session, op, proofs)
        transition(
            session,
            op,
            MintState.FINALIZED,
            data=MintData(minted_amount=minted, quote_state="ISSUED"),
        )
        return operation_view(op)


def _restore_issued(ctx: SagaContext, op_id: uuid.UUID) -> dict[str, Any]:
    """The quote is issued: finalize only if our stored outputs' signatures come back."""
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state in SPEC.terminal:
            return operation_view(op)
        stored = [PreparedOutput.from_dict(o) for o in mint_data(op).get("outputs", [])]
        mint_url = op.mint_url
        if not stored:
            transition(
                session,
                op,
                MintState.FAILED,
                error=QuoteIssuedElsewhereError(f"quote {op.quote_id} was issued to other outputs"),
            )
            return operation_view(op)
        if op.state == MintState.PENDING:
            transition(session, op, MintState.EXECUTING, clear_error=False)
    try:
        restored = ctx.mint_client(mint_url).restore([o.blinded_message for o in stored])
    except (MintAmbiguousError, MintRejectedError) as exc:
        return record_error(ctx, KIND, op_id, exc)
    by_b = {o.B_: o for o in stored}
    outputs = [by_b[m.B_] for m in restored.outputs if m.B_ in by_b]
    if len(outputs) != len(stored):
        return record_error(
            ctx,
            KIND,
            op_id,
            ProofsNotRecoveredError(
                f"quote issued, but the mint restored {len(outputs)} of {len(stored)} outputs"
            ),
        )
    return _finalize(ctx, op_id, outputs, restored.signatures)


def _back_to_pending(
    ctx: SagaContext,
    op_id: uuid.UUID,
    *,
    drop_outputs: bool = False,
    error: Exception | None = None,
) -> dict[str, Any]:
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state == MintState.EXECUTING:
            data = MintData(outputs=[]) if drop_outputs else None
            transition(session, op, MintState.PENDING, data=data, error=error)
        return operation_view(op)


def _fail(
    ctx: SagaContext, op_id: uuid.UUID, error: Exception, severity: Severity
) -> dict[str, Any]:
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state not in SPEC.terminal:
            transition(session, op, MintState.FAILED, error=error, severity=severity)
        return operation_view(op)


def _by_quote(session: Session, mint_url: str, quote_id: str) -> Operation | None:
    return session.scalars(
        select(Operation).where(
            Operation.mint_url == mint_url, Operation.kind == KIND, Operation.quote_id == quote_id
        )
    ).one_or_none()


def _quote_data(quote: MintQuote, locked: bool) -> MintData:
    return MintData(
        request=quote.request, expiry=quote.expiry, quote_state=str(quote.state), locked=locked
    )


def _quote_key(ctx: SagaContext, wallet: str, op_id: uuid.UUID) -> PrivateKey:
    """The NUT-20 key of one quote, derived from the wallet seed: nothing secret is stored."""
    return derive_labelled_key(ctx.wallet_seed(wallet), b"nut20/" + op_id.bytes)


def _supports_nut20(session: Session, mint_url: str) -> bool:
    info = session.scalar(select(Mint.info).where(Mint.url == mint_url)) or {}
    entry = (info.get("nuts") or {}).get("20")
    return isinstance(entry, dict) and bool(entry.get("supported"))


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise UnsupportedMethodError(f"mint method {method!r} is not supported")


register_rule(KIND, MintState.INIT, recover, min_age=timedelta(minutes=10))
register_rule(KIND, MintState.EXECUTING, recover)
register_rule(KIND, MintState.PENDING, recover)
