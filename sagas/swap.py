"""Swaps (NUT-03) as the sagas use them: outputs planned ahead, outcomes settled from the mint.

Send, receive, melt and reclaims all swap. What they share is here:

* `plan_outputs` derives the outputs for each purpose ("send", "keep", ...)
  from freshly allocated counters, to be stored with the write-ahead state.
* `settle_swap` performs the swap, or after an ambiguous failure replays it,
  and says what happened: replay the identical request; if the mint says it
  already signed or the inputs are spent, restore our outputs' signatures
  (NUT-09); only a definitive answer leaves the inputs ours to release.

Where the definitive/ambiguous line is drawn for a swap (nuts/errors.py has the
families):

* definitive: a 4xx with a NUT error code (but 11002, inputs pending in another
  request, which only says "not yet"); a refused connection on the first attempt,
  when nothing was ever sent; a 4xx without a code once checkstate says every input
  is still UNSPENT (a mint swaps atomically: unspent inputs mean nothing was signed);
* ambiguous: a timeout, a reset, a 5xx or 502, a refused connection on a replay
  (an earlier attempt may have reached the mint), a 4xx without a code whose inputs
  checkstate cannot clear. The operation stays for recovery.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, TypedDict, cast

from sqlalchemy.orm import Session

from models import Operation
from nuts.amounts import split_amount
from nuts.client import MintClient
from nuts.errors import (
    InvalidSignatureError,
    MintAmbiguousError,
    MintRefusedWithoutCodeError,
    MintRejectedError,
    MintUnreachableError,
    OutputsAlreadySignedError,
    ProofsAlreadySpentError,
    ProofsPendingError,
)
from nuts.keysets import Keyset
from nuts.models import Proof, ProofSpentState
from nuts.outputs import PreparedOutput, derive_outputs, proof_y, unblind_outputs
from nuts.p2pk import p2pk_secret
from sagas.counters import allocate_counters
from sagas.proofs import split_for_wallet

# The purposes outputs are planned for: the keys of OutputsData.
OutputPurpose = Literal["outputs", "send", "keep", "reclaim", "blanks", "melt_inputs"]


class OutputsData(TypedDict, total=False):
    """Outputs written ahead into an operation's data, by purpose, each as
    PreparedOutput.to_dict(). A saga's data record extends this; it plans some of them."""

    outputs: list[dict[str, Any]]  # receive: what the token is swapped into
    send: list[dict[str, Any]]  # send: the token's proofs
    keep: list[dict[str, Any]]  # send, melt: what the wallet keeps from the swap
    reclaim: list[dict[str, Any]]  # send, melt: the reclaim swap's
    blanks: list[dict[str, Any]]  # melt: NUT-08 blanks for the change
    melt_inputs: list[dict[str, Any]]  # melt: the exact inputs its pre-swap makes


class SwapResult(StrEnum):
    DONE = "done"  # our outputs are signed: proofs in hand
    REJECTED = "rejected"  # definitively refused; inputs unspent, ours to release
    INPUTS_SPENT_ELSEWHERE = "inputs_spent_elsewhere"  # someone else spent the inputs
    UNKNOWN = "unknown"  # ambiguous; leave the operation for recovery


@dataclass
class SwapOutcome:
    result: SwapResult
    proofs: list[Proof] = field(default_factory=list)  # in the order of the outputs
    error: Exception | None = None


def plan_outputs(
    session: Session,
    seed: bytes,
    wallet: str,
    keyset: Keyset,
    amounts_by_purpose: Mapping[OutputPurpose, int | list[int]],
    lock_to: Mapping[OutputPurpose, str] | None = None,
    kept_at: str | None = None,
) -> dict[OutputPurpose, list[PreparedOutput]]:
    """Deterministic outputs per purpose, from one counter allocation.

    A purpose gets an amount or a list of output amounts as they are (NUT-08
    blanks). An amount is split in powers of two, the fewest proofs, except for
    the value the wallet keeps ("keep", "outputs", "reclaim" when `kept_at` names
    the mint): that tops up the small amounts the wallet lacks (split_for_wallet).
    `lock_to` maps a purpose to a public key its outputs are P2PK-locked to.
    """

    def split(purpose: OutputPurpose, amount: int) -> list[int]:
        if kept_at is not None and purpose in KEPT_PURPOSES:
            return split_for_wallet(session, wallet, kept_at, keyset.unit, amount)
        return split_amount(amount)

    splits = {
        purpose: list(amount) if isinstance(amount, list) else split(purpose, amount)
        for purpose, amount in amounts_by_purpose.items()
    }
    count = sum(len(parts) for parts in splits.values())
    if count == 0:
        return {purpose: [] for purpose in splits}
    counter = allocate_counters(session, wallet, keyset.id, count)
    planned: dict[OutputPurpose, list[PreparedOutput]] = {}
    for purpose, parts in splits.items():
        pubkey = (lock_to or {}).get(purpose)
        secrets = [p2pk_secret(pubkey) for _ in parts] if pubkey else None
        planned[purpose] = derive_outputs(seed, keyset.id, parts, counter, secrets)
        counter += len(parts)
    return planned


KEPT_PURPOSES = frozenset({"keep", "outputs", "reclaim"})


def stored_outputs(data: OutputsData, purpose: OutputPurpose) -> list[PreparedOutput]:
    """Outputs written ahead into an operation's data, back as PreparedOutputs."""
    return [PreparedOutput.from_dict(o) for o in data.get(purpose) or []]


def outputs_data(planned: Mapping[OutputPurpose, list[PreparedOutput]]) -> OutputsData:
    """The JSON form of planned outputs, for the write-ahead state."""
    return cast(
        OutputsData,
        {purpose: [o.to_dict() for o in outputs] for purpose, outputs in planned.items()},
    )


@dataclass(frozen=True)
class SwapRequest:
    """A swap written ahead, as the transaction that wrote it read it; made after commit."""

    op_id: uuid.UUID
    mint_url: str
    inputs: list[Proof]
    outputs: dict[OutputPurpose, list[PreparedOutput]]  # by purpose, in the order they are sent
    keysets: dict[str, Keyset]

    first_attempt: bool = False  # written ahead in the same call: never sent before

    @classmethod
    def of(
        cls,
        op: Operation,
        inputs: list[Proof],
        keysets: dict[str, Keyset],
        purposes: Sequence[OutputPurpose],
        *,
        first_attempt: bool = False,
    ) -> SwapRequest:
        data = cast(OutputsData, op.data)  # the outputs part of its saga's data record
        outputs = {purpose: stored_outputs(data, purpose) for purpose in purposes}
        return cls(op.id, op.mint_url, inputs, outputs, keysets, first_attempt)

    def settle(self, client: MintClient) -> SwapOutcome:
        """settle_swap; the outcome's proofs in the order of the purposes."""
        outputs = [o for purpose in self.outputs.values() for o in purpose]
        return settle_swap(client, self.inputs, outputs, self.keysets, self.first_attempt)


def settle_swap(
    client: MintClient,
    inputs: Sequence[Proof],
    outputs: Sequence[PreparedOutput],
    keysets: dict[str, Keyset],
    first_attempt: bool = False,
) -> SwapOutcome:
    """Swap (or replay the identical swap) and classify the outcome; never raises for the mint.

    `first_attempt`: no earlier request with these inputs can have reached the mint, so a
    refused connection (nothing sent) is a definitive REJECTED.
    """
    try:
        signatures = client.swap(list(inputs), [o.blinded_message for o in outputs])
    except (OutputsAlreadySignedError, ProofsAlreadySpentError) as exc:
        return _restore_or_classify(client, inputs, outputs, keysets, exc)
    except ProofsPendingError as exc:
        return SwapOutcome(SwapResult.UNKNOWN, error=exc)  # another request holds them
    except MintRejectedError as exc:
        return SwapOutcome(SwapResult.REJECTED, error=exc)
    except MintRefusedWithoutCodeError as exc:
        return _settle_refusal_without_code(client, inputs, outputs, keysets, exc)
    except MintUnreachableError as exc:
        return SwapOutcome(SwapResult.REJECTED if first_attempt else SwapResult.UNKNOWN, error=exc)
    except MintAmbiguousError as exc:
        return SwapOutcome(SwapResult.UNKNOWN, error=exc)
    try:
        return SwapOutcome(SwapResult.DONE, unblind_outputs(outputs, signatures, keysets))
    except InvalidSignatureError as exc:
        return SwapOutcome(SwapResult.UNKNOWN, error=exc)


def raise_if_never_sent(outcome: SwapOutcome) -> None:
    """A first attempt whose connection was refused moved nothing and has been settled as
    REJECTED: after that is committed, the caller gets the typed error."""
    if outcome.result == SwapResult.REJECTED and isinstance(outcome.error, MintUnreachableError):
        raise outcome.error


def restore_signed(
    client: MintClient, outputs: Sequence[PreparedOutput], keysets: dict[str, Keyset]
) -> list[Proof]:
    """Proofs for those of our outputs the mint has signed (NUT-09), in our order."""
    restored = client.restore([o.blinded_message for o in outputs])
    signature_of = {m.B_: s for m, s in zip(restored.outputs, restored.signatures, strict=False)}
    signed = [o for o in outputs if o.B_ in signature_of]
    return unblind_outputs(signed, [signature_of[o.B_] for o in signed], keysets)


def restore_outputs(
    client: MintClient, outputs: Sequence[PreparedOutput], keysets: dict[str, Keyset]
) -> list[Proof] | None:
    """Our outputs' signatures from the mint, all of them, or None."""
    proofs = restore_signed(client, outputs, keysets)
    return proofs if outputs and len(proofs) == len(outputs) else None


def inputs_state(client: MintClient, inputs: Sequence[Proof]) -> set[ProofSpentState]:
    return {s.state for s in client.checkstate([proof_y(p) for p in inputs])}


def _settle_refusal_without_code(
    client: MintClient,
    inputs: Sequence[Proof],
    outputs: Sequence[PreparedOutput],
    keysets: dict[str, Keyset],
    exc: MintRefusedWithoutCodeError,
) -> SwapOutcome:
    """A 4xx without a code proves nothing by itself: the inputs' states decide."""
    try:
        states = inputs_state(client, inputs)
    except (MintAmbiguousError, MintRejectedError):
        return SwapOutcome(SwapResult.UNKNOWN, error=exc)
    if states == {ProofSpentState.UNSPENT}:
        return SwapOutcome(SwapResult.REJECTED, error=exc)
    if states == {ProofSpentState.SPENT}:
        return _restore_or_classify(
            client, inputs, outputs, keysets, ProofsAlreadySpentError(exc.message)
        )
    return SwapOutcome(SwapResult.UNKNOWN, error=exc)


def _restore_or_classify(
    client: MintClient,
    inputs: Sequence[Proof],
    outputs: Sequence[PreparedOutput],
    keysets: dict[str, Keyset],
    exc: MintRejectedError,
) -> SwapOutcome:
    try:
        proofs = restore_outputs(client, outputs, keysets)
        if proofs is not None:
            return SwapOutcome(SwapResult.DONE, proofs)  # our earlier attempt went through
        if isinstance(exc, ProofsAlreadySpentError):
            return SwapOutcome(SwapResult.INPUTS_SPENT_ELSEWHERE, error=exc)
        # Outputs signed but not restorable: that is not ours to decide here.
        return SwapOutcome(SwapResult.UNKNOWN, error=exc)
    except (MintAmbiguousError, MintRejectedError, InvalidSignatureError) as restore_error:
        return SwapOutcome(SwapResult.UNKNOWN, error=restore_error)
