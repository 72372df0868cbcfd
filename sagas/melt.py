"""Melt saga: pay a Lightning invoice with ecash (NUT-05/23), change never lost (NUT-08).

    prepared -> executing -> pending -> finalized
    executing -> finalized                               (paid at once)
    prepared/executing/pending -> rolling_back -> rolled_back

prepare decodes the invoice, creates the melt quote and reserves inputs for
amount + fee reserve + input fee, all reported before anything moves. When the
inputs would overshoot by more than a swap costs, execute first swaps them
into an exact amount (needs_swap), so no extra value sits locked in a long
pending payment. Change comes back through blank outputs planned at execute.

execute checks the inputs with the mint first (pre-flight reconciliation): a
proof the mint says is spent is marked spent here and the melt stops with a
HIGH error. Then executing is committed with the swap outputs and the change
blanks (write-ahead) before either request.

Outcome -> action:
    PAID                 finalized: change unblinded and stored, effective fee, preimage
    PENDING              pending; the poller (refresh) settles it later
    UNPAID / rejected    rolled back, inputs released (only after a definitive answer)
    ambiguous            stays executing; recovery asks the quote

Recovery, per state:
    prepared      older than the configured age -> cancelled
    executing     phase swap: replay the swap; phase melt: settle from the quote state
    pending       poll the quote: PAID -> finalize (change from the answer or by
                  restoring the blanks), UNPAID -> release once checkstate agrees
    rolling_back  resume the reclaim swap from its stored outputs
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NoReturn, cast

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from models import Operation, ProofState
from nuts.amounts import (
    change_blank_count,
    fee_for_ppks,
    input_fee,
    select_proofs,
    split_amount,
)
from nuts.errors import (
    CashuError,
    InsufficientFundsError,
    InvalidSignatureError,
    LightningPaymentFailedError,
    MintAmbiguousError,
    MintRejectedError,
    MintUnreachableError,
)
from nuts.invoices import InvoiceError, read_invoice
from nuts.keysets import Keyset
from nuts.models import MeltQuote, MeltQuoteState, Proof, ProofSpentState
from nuts.outputs import BLANK_AMOUNT, PreparedOutput, proof_y, unblind_outputs
from sagas.engine import (
    Progress,
    SagaContext,
    SagaSpec,
    drive,
    get_operation,
    new_operation,
    operation_view,
    present,
    record_error,
    record_event,
    register,
    register_steps,
    transition,
    update_operation,
)
from sagas.errors import (
    DuplicatePaymentError,
    FeeLimitExceededError,
    InsufficientBalanceError,
    InvalidAmountError,
    InvalidInvoiceError,
    InvalidStateError,
    MeltCostError,
    MeltInputsMismatchError,
    ProofsSpentAtMintError,
    UnsupportedMethodError,
)
from sagas.proofs import (
    Candidate,
    balance,
    proofs_of_operation,
    release_proofs,
    select_and_reserve,
    set_proof_state,
    spendable_candidates,
    store_operation_proofs,
    to_wire,
    wire_proofs_of,
)
from sagas.recovery import register_rule
from sagas.registry import (
    active_keyset,
    fee_ppk,
    load_keysets,
    pays_in_background,
    require_trusted_mint,
    trusted_keysets,
)
from sagas.swap import (
    OutputPurpose,
    OutputsData,
    SwapResult,
    inputs_state,
    outputs_data,
    plan_outputs,
    raise_if_never_sent,
    restore_signed,
    settle_swap,
    stored_outputs,
)

KIND = "melt"


class MeltState(StrEnum):
    """The states of a melt operation (the transitions below)."""

    PREPARED = "prepared"
    EXECUTING = "executing"
    PENDING = "pending"
    ROLLING_BACK = "rolling_back"
    FINALIZED = "finalized"
    ROLLED_BACK = "rolled_back"


class MeltPhase(StrEnum):
    """Which request an executing melt is at: its pre-swap, or the melt request."""

    SWAP = "swap"
    MELT = "melt"


class MeltData(OutputsData, total=False):
    """What a melt operation keeps in Operation.data, key by key as stored; its outputs
    written ahead (blanks, melt_inputs, keep, reclaim) are OutputsData's."""

    # prepare: the quote and the FeePlan
    request: str  # the invoice
    expiry: int | None
    fee_reserve: int
    needs_swap: bool
    swap_fee: int
    input_fee: int
    input_amount: int
    melt_input: int
    blank_count: int
    reconciliation: dict[str, dict[str, Any]]  # the pre-flight's findings (severity_report)
    # executing
    phase: MeltPhase
    swap_sent: bool  # the pre-swap request may have reached the mint
    melt_sent: bool  # the melt request may have reached the mint
    # rolling back
    reclaim_fee: int
    # settled
    keep_amount: int
    change_amount: int
    effective_fee: int
    preimage: str | None


def melt_data(op: Operation) -> MeltData:
    """op.data as its record: this module writes it only as MeltData."""
    return cast(MeltData, op.data)


METHODS = frozenset({"bolt11"})

SPEC = register(
    SagaSpec(
        kind=KIND,
        transitions={
            MeltState.PREPARED: frozenset({MeltState.EXECUTING, MeltState.ROLLING_BACK}),
            MeltState.EXECUTING: frozenset(
                {MeltState.PENDING, MeltState.FINALIZED, MeltState.ROLLING_BACK}
            ),
            MeltState.PENDING: frozenset({MeltState.FINALIZED, MeltState.ROLLING_BACK}),
            MeltState.ROLLING_BACK: frozenset({MeltState.ROLLED_BACK, MeltState.PENDING}),
            MeltState.FINALIZED: frozenset(),
            MeltState.ROLLED_BACK: frozenset(),
        },
        terminal=frozenset({MeltState.FINALIZED, MeltState.ROLLED_BACK}),
        event_prefix="melt-op",
        evented=frozenset(
            {MeltState.PREPARED, MeltState.PENDING, MeltState.FINALIZED, MeltState.ROLLED_BACK}
        ),
        public_columns=("method", "quote_id"),
        public_data=(
            "request",
            "fee_reserve",
            "swap_fee",
            "input_fee",
            "needs_swap",
            "input_amount",
            "expiry",
            "keep_amount",
            "change_amount",
            "effective_fee",
            "preimage",
            "reconciliation",
        ),
    )
)


# --- public steps ------------------------------------------------------------------------------


def prepare(
    ctx: SagaContext,
    wallet: str,
    mint_url: str,
    invoice: str,
    method: str = "bolt11",
    notify_task: str | None = None,
    max_fee: int | None = None,
    unit: str = "sat",
) -> dict[str, Any]:
    """Quote the payment and reserve inputs for it; report every fee before anything moves.

    `unit`: what the wallet pays with (the mint quotes the invoice in it); amounts, fees
    and change are in that unit. With `max_fee`, a payment whose fees could come to more
    (Lightning fee reserve, swap and input fees) raises FeeLimitExceededError and nothing
    is reserved.
    """
    return _prepare(ctx, wallet, mint_url, invoice, method, notify_task, max_fee, unit)[0]


def execute(ctx: SagaContext, operation_id: str | uuid.UUID) -> dict[str, Any]:
    """Pre-flight check, then the optional swap and the melt, each written ahead: every step
    in this process (a worker runs each as its own task: tasks/melt.py)."""
    return drive(ctx, KIND, begin(ctx, operation_id), until=("check",))


def pay(ctx: SagaContext, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """prepare + execute in one call (prepare_and_begin's arguments), every step here."""
    return drive(ctx, KIND, prepare_and_begin(ctx, *args, **kwargs), until=("check",))


def refresh(ctx: SagaContext, operation_id: str | uuid.UUID) -> dict[str, Any]:
    """Settle a pending (or stuck executing) melt from the quote's state at the mint."""
    return drive(ctx, KIND, check(ctx, operation_id), until=("check",))


# --- the steps, each with at most one request that can move money --------------------------------
#
#   begin  prepared -> executing (pre-flight checkstate, then the write-ahead) -> swap | pay
#   swap   the pre-swap into the exact melt inputs                            -> pay
#   pay    the melt request (prefer_async where the context allows)           -> check if pending
#   check  the quote's state: settles a pending melt, resumes a reclaim       -> check while pending
#
# A step run twice, or after its worker died, finds the operation already moved and hands on
# from where it is. Whether a request was ever sent is on the operation (swap_sent,
# melt_sent), never in a message: only a first attempt may treat a refused connection as
# "nothing happened".


def begin(ctx: SagaContext, operation_id: str | uuid.UUID) -> Progress:
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        if op.state != MeltState.PREPARED:
            return _carry_on(op)
        _, keysets = trusted_keysets(session, op.mint_url)
        inputs = wire_proofs_of(session, op.id)
        reserved = _Reserved(op.id, op.mint_url, inputs, keysets)
    return _begin(ctx, reserved)


def prepare_and_begin(
    ctx: SagaContext,
    wallet: str,
    mint_url: str,
    invoice: str,
    method: str = "bolt11",
    notify_task: str | None = None,
    max_fee: int | None = None,
    unit: str = "sat",
    *,
    operation_id: uuid.UUID | None = None,
) -> Progress:
    """prepare, then begin with the inputs prepare reserved (`operation_id`: the id to give
    the new operation; its caller holds its lock)."""
    _, reserved = _prepare(
        ctx, wallet, mint_url, invoice, method, notify_task, max_fee, unit, operation_id
    )
    return _begin(ctx, reserved)


def begin_and_pay(ctx: SagaContext, operation_id: str | uuid.UUID) -> Progress:
    """begin, then the melt request at once when there is no pre-swap: begin's checkstate
    moves nothing, so the two still make one request that can move money, one task apart
    fewer (tasks/melt.py)."""
    return _pay_next(ctx, begin(ctx, operation_id))


def prepare_begin_and_pay(ctx: SagaContext, *args: Any, **kwargs: Any) -> Progress:
    """prepare_and_begin (its arguments), then the melt request as begin_and_pay does."""
    return _pay_next(ctx, prepare_and_begin(ctx, *args, **kwargs))


def _pay_next(ctx: SagaContext, progress: Progress) -> Progress:
    return pay_step(ctx, progress.operation_id) if progress.next_step == "pay" else progress


def swap(ctx: SagaContext, operation_id: str | uuid.UUID) -> Progress:
    """Swap the reserved inputs into exactly the melt's inputs plus change we keep; hands on
    to pay only once the swap is known done and its proofs stored."""
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        if op.state != MeltState.EXECUTING or melt_data(op).get("phase") != MeltPhase.SWAP:
            return _carry_on(op)
        op_id, first_attempt = op.id, not melt_data(op).get("swap_sent")
        if first_attempt:
            update_operation(session, op, data=MeltData(swap_sent=True))
        inputs = wire_proofs_of(session, op.id)
        data = melt_data(op)
        melt_inputs, keep = stored_outputs(data, "melt_inputs"), stored_outputs(data, "keep")
        keysets = load_keysets(session, op.mint_url)
        mint_url = op.mint_url
    outcome = settle_swap(
        ctx.mint_client(mint_url), inputs, melt_inputs + keep, keysets, first_attempt
    )
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state != MeltState.EXECUTING or melt_data(op).get("phase") != MeltPhase.SWAP:
            return _carry_on(op)
        if outcome.result == SwapResult.DONE:
            set_proof_state(session, op.id, ProofState.SPENT)
            new_inputs, kept = (
                outcome.proofs[: len(melt_inputs)],
                outcome.proofs[len(melt_inputs) :],
            )
            store_operation_proofs(session, op, kept)
            store_operation_proofs(
                session, op, new_inputs, state=ProofState.RESERVED, used_by=op.id
            )
            update_operation(session, op, data=MeltData(phase=MeltPhase.MELT))
            return _carry_on(op)
        if outcome.result == SwapResult.REJECTED:
            _release_and_roll_back(session, op, outcome.error)
        elif outcome.result == SwapResult.INPUTS_SPENT_ELSEWHERE:
            set_proof_state(session, op.id, ProofState.SPENT)
            _release_and_roll_back(session, op, outcome.error)
        else:
            update_operation(session, op, error=outcome.error)
        view = operation_view(op)
    raise_if_never_sent(outcome)
    return Progress(view)


def pay_step(ctx: SagaContext, operation_id: str | uuid.UUID) -> Progress:
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        if op.state != MeltState.EXECUTING or melt_data(op).get("phase") != MeltPhase.MELT:
            return _carry_on(op)
        inputs = wire_proofs_of(session, op.id, unspent=True)
        first_attempt = not melt_data(op).get("melt_sent")
        if first_attempt:
            update_operation(session, op, data=MeltData(melt_sent=True))
        request = _MeltRequest.of(op, inputs, load_keysets(session, op.mint_url))
        in_background = ctx.async_melts and pays_in_background(session, op.mint_url)
    view = _melt(ctx, op.id, request, first_attempt=first_attempt, in_background=in_background)
    if view["state"] != MeltState.PENDING:
        return Progress(view)
    # Asked to pay in the background, the mint answered at once: a fast payment is often
    # done already, so look once now before handing on to the polls.
    return check(ctx, op.id) if in_background else Progress(view, "check")


def check(ctx: SagaContext, operation_id: str | uuid.UUID) -> Progress:
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        if op.state == MeltState.EXECUTING and not _request_sent(op):
            # Handed on to a step not started yet (a queue backlog), or whose message was
            # lost: leave it `handoff_grace`, then hand it on again, touched so that the
            # next sweep waits as long before it does.
            now = session.execute(select(func.now())).scalar_one()
            if now - op.updated_at < ctx.handoff_grace:
                return Progress(operation_view(op))
            update_operation(session, op)
            return _carry_on(op)
        if op.state == MeltState.EXECUTING and melt_data(op).get("phase") == MeltPhase.SWAP:
            return _carry_on(op)  # the swap's outcome is the mint's: replay it
        if op.state not in (MeltState.PENDING, MeltState.EXECUTING, MeltState.ROLLING_BACK):
            return Progress(operation_view(op))
        mint_url = require_trusted_mint(session, op.mint_url)
        op_id, state, method = op.id, op.state, present(op.method, "method")
        quote_id = present(op.quote_id, "quote_id")
    if state == MeltState.ROLLING_BACK:
        return Progress(_resume_reclaim(ctx, op_id))
    try:
        quote = ctx.mint_client(mint_url).check_melt_quote(quote_id, method)
    except (MintAmbiguousError, MintRejectedError) as exc:
        return Progress(record_error(ctx, KIND, op_id, exc))
    view = _settle(ctx, op_id, quote)
    return Progress(view, "check" if view["state"] == MeltState.PENDING else None)


register_steps(KIND, {"begin": begin, "swap": swap, "pay": pay_step, "check": check})


def _request_sent(op: Operation) -> bool:
    """Whether the request of an executing melt's phase may have reached the mint."""
    data = melt_data(op)
    return bool(
        data.get("swap_sent") if data.get("phase") == MeltPhase.SWAP else data.get("melt_sent")
    )


def _carry_on(op: Operation) -> Progress:
    """The step an operation past prepared goes on with. An executing one repeats the step
    of its phase: the mint answers a repeated request from its own records."""
    view = operation_view(op)
    if op.state == MeltState.PENDING:
        return Progress(view, "check")
    if op.state == MeltState.EXECUTING:
        return Progress(view, "swap" if melt_data(op).get("phase") == MeltPhase.SWAP else "pay")
    return Progress(view)  # settled, or rolling back (check resumes the reclaim)


def cancel(ctx: SagaContext, operation_id: str | uuid.UUID) -> dict[str, Any]:
    """Release the inputs of a prepared melt. Only a prepared one: later, money may be moving."""
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        if op.state == MeltState.ROLLED_BACK:
            return operation_view(op)
        if op.state != MeltState.PREPARED:
            raise InvalidStateError(
                f"only a prepared melt can be cancelled, this one is {op.state}"
            )
        _release_and_roll_back(session, op)
        return operation_view(op)


def reclaim(ctx: SagaContext, operation_id: str | uuid.UUID) -> dict[str, Any]:
    """Take back the inputs of a pending melt whose quote the mint confirms UNPAID (a swap)."""
    with ctx.uow() as session:
        op = get_operation(session, operation_id, KIND)
        op_id, state, method = op.id, op.state, present(op.method, "method")
        quote_id = present(op.quote_id, "quote_id")
        if state not in (MeltState.ROLLING_BACK, MeltState.PENDING):
            raise InvalidStateError(f"only a pending melt can be reclaimed, this one is {state}")
        mint_url = require_trusted_mint(session, op.mint_url)
    if state == MeltState.ROLLING_BACK:  # no transaction is open while the mint is asked
        return _resume_reclaim(ctx, op_id)
    quote = ctx.mint_client(mint_url).check_melt_quote(quote_id, method)
    if quote.state != MeltQuoteState.UNPAID:
        raise InvalidStateError(f"the melt quote is {quote.state}, not UNPAID: nothing to reclaim")
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state != MeltState.PENDING:
            return operation_view(op)
        rows = proofs_of_operation(session, op.id, unspent=True)
        keysets = load_keysets(session, op.mint_url)
        fee = input_fee([to_wire(p) for p in rows], fee_ppk(keysets))
        planned = plan_outputs(
            session,
            ctx.wallet_seed(op.wallet),
            op.wallet,
            active_keyset(keysets, op.unit, op.mint_url),
            {"reclaim": sum(p.amount for p in rows) - fee},
            kept_at=op.mint_url,
        )
        transition(
            session,
            op,
            MeltState.ROLLING_BACK,
            data=MeltData(**outputs_data(planned), reclaim_fee=fee),
        )
    return _resume_reclaim(ctx, op_id, first_attempt=True)


def get_by_quote(ctx: SagaContext, mint_url: str, quote_id: str) -> dict[str, Any] | None:
    with ctx.uow() as session:
        op = session.scalars(
            select(Operation).where(
                Operation.kind == KIND,
                Operation.mint_url == mint_url.rstrip("/"),
                Operation.quote_id == quote_id,
            )
        ).one_or_none()
        return operation_view(op) if op else None


def recover(ctx: SagaContext, operation_id: uuid.UUID, state: str) -> Progress:
    if state == MeltState.PREPARED:
        return Progress(cancel(ctx, operation_id))
    return check(ctx, operation_id)  # executing, pending, rolling_back


register_rule(KIND, MeltState.EXECUTING, recover)
register_rule(KIND, MeltState.ROLLING_BACK, recover)
register_rule(KIND, MeltState.PENDING, recover)
register_rule(KIND, MeltState.PREPARED, recover)  # once stale: SagaContext.prepared_max_age


def invoice_amount(invoice: str, now: float | None = None, network: str = "bc") -> int:
    """The invoice's amount in sat; garbage, another network, no amount or expired is an
    InvalidInvoiceError."""
    try:
        terms = read_invoice(invoice)
    except InvoiceError as exc:
        raise InvalidInvoiceError(f"not a valid bolt11 invoice: {exc}") from None
    if terms.network != network:
        raise InvalidInvoiceError(
            f"the invoice is for network {terms.network!r}; this wallet pays on {network!r}"
        )
    if not terms.amount_msat:
        raise InvalidInvoiceError("the invoice has no amount; amountless invoices are not paid")
    if terms.amount_msat % 1000:
        raise InvalidInvoiceError("the invoice amount is not a whole number of sat")
    if terms.expires_at <= (now or time.time()):
        raise InvalidInvoiceError("the invoice has expired")
    return terms.amount_msat // 1000


# --- the steps' insides -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reserved:
    """A melt about to be executed, as a transaction read it."""

    op_id: uuid.UUID
    mint_url: str
    inputs: list[Proof]  # the reserved inputs of the prepared melt
    keysets: dict[str, Keyset]


def _prepare(
    ctx: SagaContext,
    wallet: str,
    mint_url: str,
    invoice: str,
    method: str,
    notify_task: str | None,
    max_fee: int | None,
    unit: str,
    operation_id: uuid.UUID | None = None,
) -> tuple[dict[str, Any], _Reserved]:
    """prepare's work: the Operation JSON, and the reservation as execute needs it."""
    if method not in METHODS:
        raise UnsupportedMethodError(f"melt method {method!r} is not supported")
    if max_fee is not None and (
        isinstance(max_fee, bool) or not isinstance(max_fee, int) or max_fee < 0
    ):
        raise InvalidAmountError(f"max_fee must be a whole number, 0 or more: {max_fee!r}")
    sats = invoice_amount(invoice, ctx.now().timestamp(), ctx.network)
    with ctx.uow() as session:
        mint_url, keysets = trusted_keysets(session, mint_url)
        keyset = active_keyset(keysets, unit, mint_url)  # UnsupportedUnitError
        _refuse_a_second_payment(session, invoice)
        # No quote for a payment the wallet cannot make. The bounded read answers at
        # once for a wallet that can; only a short one is summed in full. In another unit
        # the amount is known only from the quote: reserving below says it then.
        if unit == "sat":
            quick = spendable_candidates(session, wallet, mint_url, unit, covering=sats)
            if sum(c.amount for c in quick) < sats:
                spendable = balance(session, wallet, mint_url=mint_url)["spendable"]
                if spendable < sats:
                    raise InsufficientBalanceError(
                        f"wallet {wallet!r} has {spendable} sat, needs {sats}+"
                    )
    quote = ctx.mint_client(mint_url).create_melt_quote(invoice, keyset.unit, method)
    needed = quote.amount + quote.fee_reserve
    fees = fee_ppk(keysets)
    exact = exact_melt_input(needed, keyset.input_fee_ppk)
    with ctx.uow() as session:
        op = new_operation(
            session,
            KIND,
            MeltState.PREPARED,
            operation_id,
            wallet=wallet,
            method=method,
            mint_url=mint_url,
            unit=keyset.unit,
            amount=quote.amount,
            quote_id=quote.quote,
            notify_task=notify_task,
        )
        inputs = select_and_reserve(
            session,
            wallet=wallet,
            mint_url=mint_url,
            unit=keyset.unit,
            amount=needed,
            fee_ppk=fees,
            operation_id=op.id,
            choose=lambda candidates: choose_melt_inputs(candidates, needed, exact, fees),
        )
        plan = plan_fees(
            quote.amount,
            quote.fee_reserve,
            input_amount=sum(p.amount for p in inputs),
            inputs_fee=input_fee(inputs, fees),
            exact=exact,
            keyset_fee_ppk=keyset.input_fee_ppk,
        )
        data = MeltData(
            request=invoice,
            expiry=quote.expiry,
            fee_reserve=quote.fee_reserve,
            needs_swap=plan.needs_swap,
            swap_fee=plan.swap_fee,
            input_fee=plan.input_fee,
            input_amount=plan.input_amount,
            melt_input=plan.melt_input,
            blank_count=plan.blank_count,
        )
        worst_fee = plan.worst_fee
        if max_fee is not None and worst_fee > max_fee:
            # Raised inside the transaction: the operation and its reservation vanish.
            raise FeeLimitExceededError(
                f"paying {quote.amount} {unit} could cost up to {worst_fee} {unit} in fees "
                f"(max_fee {max_fee})"
            )
        op = update_operation(session, op, data=data)
        record_event(session, op)
        return operation_view(op), _Reserved(op.id, op.mint_url, inputs, keysets)


def _begin(ctx: SagaContext, reserved: _Reserved) -> Progress:
    """Pre-flight check, then executing written ahead; hands on to the swap or the melt."""
    op_id = reserved.op_id
    blocked = _preflight(ctx, op_id, reserved.mint_url, reserved.inputs)
    if blocked is not None:
        return Progress(blocked)
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state != MeltState.PREPARED:
            return _carry_on(op)
        # Serialized per invoice: of two melts of one invoice, one pays, the other
        # stops here before it costs a swap fee.
        duplicate = _second_payment(session, melt_data(op)["request"], op.id, wait=True)
        if duplicate is None:
            _write_ahead(ctx, session, op, reserved.keysets)
            # Only a swap known to be done lets the melt go (the swap step hands on to pay
            # only then): its inputs are what the change blanks were planned for.
            return _carry_on(op)
        _release_and_roll_back(session, op, duplicate)
    raise duplicate


@dataclass(frozen=True)
class _MeltRequest:
    """What the melt request of an executing operation needs (read in its transaction)."""

    op_id: uuid.UUID
    mint_url: str
    quote_id: str
    method: str
    inputs: list[Proof]
    blanks: list[PreparedOutput]
    keysets: dict[str, Keyset] | None
    planned_input: int  # the value the change blanks were planned for (melt_input)

    @classmethod
    def of(
        cls, op: Operation, inputs: list[Proof], keysets: dict[str, Keyset] | None
    ) -> _MeltRequest:
        blanks = stored_outputs(melt_data(op), "blanks")
        return cls(
            op.id,
            op.mint_url,
            present(op.quote_id, "quote_id"),
            present(op.method, "method"),
            inputs,
            blanks,
            keysets,
            melt_data(op)["melt_input"],
        )

    def unplanned_inputs(self) -> MeltInputsMismatchError | None:
        """Inputs other than the ones the blanks were planned for: the mint could not return
        all the change (NUT-08), so such a melt request must never be sent."""
        value = sum(p.amount for p in self.inputs)
        if value == self.planned_input:
            return None
        return MeltInputsMismatchError(
            f"the melt's inputs are worth {value} sat, its change blanks were planned for "
            f"{self.planned_input}: not sent"
        )


def choose_melt_inputs(
    candidates: list[Candidate], needed: int, exact: int, fees: dict[str, int]
) -> list[Candidate]:
    """What a melt of `needed` (amount + fee reserve) reserves: inputs that cover it as they
    are, unless swapping them to `exact` (exact_melt_input) first frees more than the
    swap's inputs cost. Raises InsufficientFundsError when `needed` cannot be covered."""
    direct = select_proofs(candidates, needed, fees)
    direct_fee = input_fee(direct, fees)
    overshoot = sum(c.amount for c in direct) - needed - direct_fee
    if overshoot <= direct_fee:
        return direct
    try:
        for_swap = select_proofs(candidates, exact, fees)
    except InsufficientFundsError:
        return direct
    return for_swap if input_fee(for_swap, fees) < overshoot else direct


def _refuse_a_second_payment(session: Session, invoice: str) -> None:
    duplicate = _second_payment(session, invoice)
    if duplicate is not None:
        raise duplicate


def _second_payment(
    session: Session, invoice: str, op_id: uuid.UUID | None = None, *, wait: bool = False
) -> DuplicatePaymentError | None:
    """Another melt of ours paid this invoice or is paying it: the error to stop with.

    `wait`: hold the invoice's transaction lock first, so that melts of one invoice
    moving to executing at the same time see each other.
    """
    if wait:
        key = int.from_bytes(hashlib.sha256(invoice.encode()).digest()[:8], "big", signed=True)
        session.execute(select(func.pg_advisory_xact_lock(key)))
    other = session.scalar(
        select(Operation.state)
        .where(
            Operation.kind == KIND,
            Operation.data["request"].astext == invoice,
            Operation.state.in_((MeltState.EXECUTING, MeltState.PENDING, MeltState.FINALIZED)),
            Operation.id != op_id if op_id is not None else true(),
        )
        .limit(1)
    )
    if other is None:
        return None
    verb = "paid" if other == MeltState.FINALIZED else "is paying"
    return DuplicatePaymentError(f"another melt of ours {verb} this invoice")


@dataclass(frozen=True)
class FeePlan:
    """How a melt spends its reserved inputs, and what that can cost."""

    input_amount: int  # the reserved inputs
    needs_swap: bool  # swap them first into exactly `melt_input`, the rest kept
    swap_fee: int  # the pre-swap's input fee (0 without one)
    melt_input: int  # what the melt request spends
    input_fee: int  # the melt request's input fee
    fee_reserve: int
    blank_count: int  # NUT-08 blank outputs for the change

    @property
    def worst_fee(self) -> int:
        """The most the payment can cost beyond its amount."""
        return self.fee_reserve + self.swap_fee + self.input_fee


def plan_fees(
    amount: int,
    fee_reserve: int,
    *,
    input_amount: int,
    inputs_fee: int,
    exact: int,
    keyset_fee_ppk: int,
) -> FeePlan:
    """Melt the inputs as they are, or swap them first into `exact` (the smallest sum that
    covers amount + fee reserve + its own input fee) when what they overshoot by is more
    than the swap costs; either way the change comes back in blanks."""
    overshoot = input_amount - amount - fee_reserve - inputs_fee
    needs_swap = overshoot > inputs_fee and input_amount - inputs_fee >= exact
    melt_input = exact if needs_swap else input_amount
    melt_fee = (
        fee_for_ppks([keyset_fee_ppk] * len(split_amount(exact))) if needs_swap else inputs_fee
    )
    return FeePlan(
        input_amount=input_amount,
        needs_swap=needs_swap,
        swap_fee=inputs_fee if needs_swap else 0,
        melt_input=melt_input,
        input_fee=melt_fee,
        fee_reserve=fee_reserve,
        blank_count=change_blank_count(melt_input - melt_fee - amount),
    )


def exact_melt_input(needed: int, ppk: int) -> int:
    """The smallest value M that, split in powers of two, covers needed + its own input fee."""
    value = needed
    for _ in range(64):
        fee = fee_for_ppks([ppk] * len(split_amount(value)))
        if value >= needed + fee:
            return value
        value = needed + fee
    return value


def _preflight(
    ctx: SagaContext, op_id: uuid.UUID, mint_url: str, inputs: list[Proof]
) -> dict[str, Any] | None:
    """Reconcile the inputs with the mint before any money moves; None when clear."""
    try:
        states = ctx.mint_client(mint_url).checkstate([proof_y(p) for p in inputs])
    except (MintAmbiguousError, MintRejectedError) as exc:
        # A checkstate moves nothing: the inputs go back, the caller hears why.
        _roll_back_and_raise(ctx, op_id, (MeltState.PREPARED,), exc)
    spent = [s.Y for s in states if s.state == ProofSpentState.SPENT]
    pending = [s.Y for s in states if s.state == ProofSpentState.PENDING]
    if not spent and not pending:
        return None
    from sagas.reconcile import severity_report  # the table check_proofs classifies with too

    report = severity_report(
        {"DB_RESERVED_MINT_SPENT": len(spent), "DB_RESERVED_MINT_PENDING": len(pending)}
    )
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state != MeltState.PREPARED:
            return operation_view(op)
        if spent:
            set_proof_state(session, op.id, ProofState.SPENT, ys=spent)
            update_operation(session, op, data=MeltData(reconciliation=report))
            _release_and_roll_back(
                session,
                op,
                ProofsSpentAtMintError(
                    f"{len(spent)} input(s) are already spent at the mint; marked spent here"
                ),
            )
        else:
            update_operation(
                session,
                op,
                data=MeltData(reconciliation=report),
                error=ProofsSpentAtMintError(f"{len(pending)} input(s) are pending at the mint"),
            )
        return operation_view(op)


def keep_amount(data: MeltData) -> int:
    """What the pre-swap gives back to the wallet: its inputs less its fee and the exact
    melt inputs (0 without a pre-swap)."""
    if not data["needs_swap"]:
        return 0
    return int(data["input_amount"] - data["swap_fee"] - data["melt_input"])


def _write_ahead(
    ctx: SagaContext, session: Session, op: Operation, keysets: dict[str, Keyset]
) -> None:
    """prepared -> executing with the swap outputs (if any) and the change blanks stored."""
    data = melt_data(op)
    amounts: dict[OutputPurpose, int | list[int]] = {"blanks": [BLANK_AMOUNT] * data["blank_count"]}
    if data["needs_swap"]:
        amounts |= {"melt_inputs": data["melt_input"], "keep": keep_amount(data)}
    planned = plan_outputs(
        session,
        ctx.wallet_seed(op.wallet),
        op.wallet,
        active_keyset(keysets, op.unit, op.mint_url),
        amounts,
        kept_at=op.mint_url,
    )
    phase = MeltPhase.SWAP if data["needs_swap"] else MeltPhase.MELT
    transition(
        session, op, MeltState.EXECUTING, data=MeltData(**outputs_data(planned), phase=phase)
    )


def _melt(
    ctx: SagaContext,
    op_id: uuid.UUID,
    request: _MeltRequest,
    *,
    first_attempt: bool,
    in_background: bool = False,
) -> dict[str, Any]:
    mismatch = request.unplanned_inputs()
    if mismatch is not None:
        return record_error(ctx, KIND, op_id, mismatch)
    client = ctx.mint_client(request.mint_url)
    quote_id, method = request.quote_id, request.method
    try:
        blanks = [b.blinded_message for b in request.blanks]
        result = client.melt(quote_id, request.inputs, blanks, method, prefer_async=in_background)
    except MintAmbiguousError as exc:
        if first_attempt and isinstance(exc, MintUnreachableError):
            _roll_back_and_raise(ctx, op_id, (MeltState.EXECUTING,), exc)  # nothing was ever sent
        return record_error(ctx, KIND, op_id, exc)  # maybe paid: recovery asks the quote
    except MintRejectedError as exc:
        # Refused, but an earlier attempt of ours may have paid: the quote knows.
        try:
            quote = client.check_melt_quote(quote_id, method)
        except (MintAmbiguousError, MintRejectedError):
            return record_error(ctx, KIND, op_id, exc)
        if quote.state == MeltQuoteState.UNPAID:
            return _roll_back_if_inputs_unspent(ctx, op_id, exc)
        return _settle(ctx, op_id, quote)
    return _settle(ctx, op_id, result, request.keysets)


def _settle(
    ctx: SagaContext,
    op_id: uuid.UUID,
    quote: MeltQuote,
    keysets: dict[str, Keyset] | None = None,
) -> dict[str, Any]:
    if quote.state == MeltQuoteState.PAID:
        return _finalize(ctx, op_id, quote, keysets)
    if quote.state == MeltQuoteState.PENDING:
        with ctx.uow() as session:
            op = get_operation(session, op_id, KIND)
            if op.state == MeltState.EXECUTING:
                set_proof_state(session, op.id, ProofState.PENDING)
                transition(session, op, MeltState.PENDING)
            return operation_view(op)
    # UNPAID after our request reached it: the mint tried and the payment failed (an
    # asynchronous melt says so only this way).
    failed = LightningPaymentFailedError(
        f"the mint reports the quote {quote.state}: the payment failed or never started"
    )
    return _roll_back_if_inputs_unspent(ctx, op_id, failed)


def _finalize(
    ctx: SagaContext,
    op_id: uuid.UUID,
    quote: MeltQuote,
    keysets: dict[str, Keyset] | None = None,
) -> dict[str, Any]:
    """PAID: store the change (from the answer, else by restoring our blanks), then finalize."""
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state not in (MeltState.EXECUTING, MeltState.PENDING):
            return operation_view(op)
        blanks = stored_outputs(melt_data(op), "blanks")
        keysets = keysets or load_keysets(session, op.mint_url)
        if quote.change or not blanks:  # the change is in the answer (or none can come)
            try:
                change = unblind_outputs(blanks, quote.change, keysets) if quote.change else []
            except InvalidSignatureError as exc:
                update_operation(session, op, error=exc)  # paid: stay open for the change
                return operation_view(op)
            return _finalize_or_hold(session, op, quote, change)
        mint_url = op.mint_url
    try:
        restored = restore_signed(ctx.mint_client(mint_url), blanks, keysets)
    except (MintAmbiguousError, MintRejectedError, InvalidSignatureError) as exc:
        return record_error(ctx, KIND, op_id, exc)  # paid: stay open until the change is in hand
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state not in (MeltState.EXECUTING, MeltState.PENDING):
            return operation_view(op)
        return _finalize_or_hold(session, op, quote, restored)


def _finalize_or_hold(
    session: Session, op: Operation, quote: MeltQuote, change: list[Proof]
) -> dict[str, Any]:
    """Finalize with the change; a cost the books cannot explain keeps it open instead."""
    try:
        return _store_change_and_finalize(session, op, quote, change)
    except MeltCostError as exc:
        update_operation(session, op, error=exc)  # paid: stay open for a person to look at
        return operation_view(op)


def _store_change_and_finalize(
    session: Session, op: Operation, quote: MeltQuote, change: list[Proof]
) -> dict[str, Any]:
    change_amount = sum(p.amount for p in change)
    data = melt_data(op)
    kept = keep_amount(data)
    effective_fee = data["input_amount"] - kept - present(op.amount, "amount") - change_amount
    worst = data["fee_reserve"] + data["swap_fee"] + data["input_fee"]
    if not 0 <= effective_fee <= worst:
        # The books and the mint disagree on what this payment cost: a bug, never recorded
        # as a fee. The melt stays open with this error for a person to look at.
        raise MeltCostError(
            f"the payment would cost {effective_fee} sat in fees, outside 0..{worst}: not finalized"
        )
    set_proof_state(session, op.id, ProofState.SPENT)
    store_operation_proofs(session, op, change)
    transition(
        session,
        op,
        MeltState.FINALIZED,
        data=MeltData(
            keep_amount=kept,
            change_amount=change_amount,
            effective_fee=effective_fee,
            preimage=quote.payment_preimage,
        ),
    )
    return operation_view(op)


def _roll_back_if_inputs_unspent(
    ctx: SagaContext, op_id: uuid.UUID, error: Exception | None
) -> dict[str, Any]:
    """UNPAID: release the inputs, but only once the mint confirms they are unspent."""
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state not in (MeltState.EXECUTING, MeltState.PENDING):
            return operation_view(op)
        inputs = wire_proofs_of(session, op.id, unspent=True)
        mint_url = op.mint_url
    try:
        states = inputs_state(ctx.mint_client(mint_url), inputs)
    except (MintAmbiguousError, MintRejectedError) as exc:
        return record_error(ctx, KIND, op_id, exc)
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state not in (MeltState.EXECUTING, MeltState.PENDING):
            return operation_view(op)
        if states == {ProofSpentState.UNSPENT}:
            _release_and_roll_back(session, op, error)
        else:
            update_operation(
                session, op, error=InvalidStateError(f"quote UNPAID but inputs are {states}")
            )
        return operation_view(op)


def _resume_reclaim(
    ctx: SagaContext, op_id: uuid.UUID, *, first_attempt: bool = False
) -> dict[str, Any]:
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state != MeltState.ROLLING_BACK:
            return operation_view(op)
        mint_url, keysets = trusted_keysets(session, op.mint_url)
        inputs = wire_proofs_of(session, op.id, unspent=True)
        reclaim_outputs = stored_outputs(melt_data(op), "reclaim")
    outcome = settle_swap(
        ctx.mint_client(mint_url), inputs, reclaim_outputs, keysets, first_attempt
    )
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state != MeltState.ROLLING_BACK:
            return operation_view(op)
        if outcome.result == SwapResult.DONE:
            set_proof_state(session, op.id, ProofState.SPENT)
            store_operation_proofs(session, op, outcome.proofs)
            transition(
                session, op, MeltState.ROLLED_BACK, data=MeltData(effective_fee=_fees_paid(op))
            )
        elif outcome.result in (SwapResult.REJECTED, SwapResult.INPUTS_SPENT_ELSEWHERE):
            transition(session, op, MeltState.PENDING, error=outcome.error)
        else:
            update_operation(session, op, error=outcome.error)
        view = operation_view(op)
    raise_if_never_sent(outcome)
    return view


def _roll_back_and_raise(
    ctx: SagaContext, op_id: uuid.UUID, states: tuple[str, ...], error: CashuError
) -> NoReturn:
    """A request that moved nothing failed: the inputs go back, then the caller gets the
    error (the operation, rolled back, keeps it)."""
    with ctx.uow() as session:
        op = get_operation(session, op_id, KIND)
        if op.state in states:
            _release_and_roll_back(session, op, error)
    raise error


def _release_and_roll_back(session: Session, op: Operation, error: Exception | None = None) -> None:
    release_proofs(session, op.id)
    transition(session, op, MeltState.ROLLING_BACK, clear_error=False)
    transition(
        session, op, MeltState.ROLLED_BACK, error=error, data=MeltData(effective_fee=_fees_paid(op))
    )


def _fees_paid(op: Operation) -> int:
    """What a rolled-back melt still cost: a pre-swap that went through, a reclaim swap."""
    data = melt_data(op)
    swapped = data.get("needs_swap") and data.get("phase") == MeltPhase.MELT
    return (data["swap_fee"] if swapped else 0) + data.get("reclaim_fee", 0)
