"""The worker's typed errors as a caller sees them, each with its stable code.

A task that fails raises, on the worker, a class such as `InsufficientBalanceError`
(sagas/errors.py, nuts/errors.py). Celery sends the caller the class name and its
arguments; a process without the worker's code gets a class Celery makes up on the spot
(module `celery.exceptions`, same name and message). `from_task_failure` turns that into
the class of the same name below, whose `code` is the worker's stable code:

    try:
        client.send_prepare("alice", mint_url, 1000)
    except InsufficientBalanceError as exc:
        exc.code     # "INSUFFICIENT_BALANCE"
        exc.message  # the worker's message

The classes mirror the worker's families: `MintRejectedError` (the mint refused, nothing
changed there), `MintAmbiguousError` (the request may or may not have taken effect), and
`SagaError` (the operation's own rules). A class this table does not know becomes a plain
`CashuWorkerError` with the code "UNKNOWN" (its `remote_type` says what it was).

The table mirrors the worker's classes by hand; tests/test_client.py checks that every
worker error class is here with the same code. Nothing here imports the worker's code.
"""

from __future__ import annotations

from typing import Any


class CashuWorkerError(Exception):
    """An error of a cashu-worker task, as the caller sees it: a stable `code`, a `message`.

    `remote_type` is the class name the worker raised and `task_id` the failed task's id
    (when known). A subclass per code exists; catch the subclass, or this and match `code`.
    """

    code: str = "CASHU_ERROR"

    def __init__(
        self,
        code: str | None = None,
        message: str = "",
        *,
        remote_type: str | None = None,
        task_id: str | None = None,
        task_name: str | None = None,
    ) -> None:
        if code is not None:
            self.code = code
        self.message = message or self.code
        self.remote_type = remote_type
        self.task_id = task_id
        self.task_name = task_name
        super().__init__(self.code, self.message)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    def __reduce__(self) -> Any:  # picklable despite the keyword-only fields
        return (
            _rebuild,
            (type(self), self.code, self.message, self.remote_type, self.task_id, self.task_name),
        )


def _rebuild(cls: type[CashuWorkerError], code: str, message: str, *rest: Any) -> CashuWorkerError:
    exc = cls.__new__(cls)
    CashuWorkerError.__init__(
        exc, code, message, remote_type=rest[0], task_id=rest[1], task_name=rest[2]
    )
    return exc


class _CodedError(CashuWorkerError):
    """A subclass for one stable code: `SomeError(message)`; the code is the class's."""

    # What it says when made without a message (as the worker's errors: nuts/errors.py).
    default_message: str = ""

    def __init__(self, message: str = "", **kwargs: Any) -> None:
        super().__init__(type(self).code, message or self.default_message, **kwargs)


# --- raised by the client itself ---------------------------------------------------------------


class TaskTimeoutError(_CodedError, TimeoutError):
    """No result within the timeout. The task may still run (or have run): look the
    operation up (ops_list, ops_get, melt_get_by_quote) before trying again."""

    code = "TASK_TIMEOUT"
    default_message = "No result within the timeout."


class BrokerError(_CodedError, ConnectionError):
    code = "BROKER_ERROR"
    default_message = "The broker or the result backend could not be reached (sending or waiting)."


# --- the worker's errors (nuts/errors.py, sagas/errors.py, tasks/deliveries.py) -------------------


class InvalidTokenError(_CodedError):
    code = "INVALID_TOKEN"
    default_message = "The token could not be decoded or is not a valid Cashu token."


class KeysetError(_CodedError):
    code = "KEYSET_ERROR"
    default_message = "A keyset is not what it claims to be, or cannot be found."


class KeysetIdMismatchError(KeysetError):
    code = "KEYSET_ID_MISMATCH"
    default_message = "The mint's keys do not hash to the keyset id it claims."


class UnknownKeysetError(KeysetError):
    code = "UNKNOWN_KEYSET"
    default_message = "No known keyset has this id."


class AmbiguousKeysetIdError(KeysetError):
    code = "AMBIGUOUS_KEYSET_ID"
    default_message = "A short keyset id matches more than one known keyset."


class InsufficientFundsError(_CodedError):
    code = "INSUFFICIENT_FUNDS"
    default_message = (
        "The candidates cannot cover the amount plus the fee of spending them (coin selection)."
    )


class InvalidSignatureError(_CodedError):
    code = "INVALID_SIGNATURE"
    default_message = (
        "A signature from the mint (or in a token) does not verify: DLEQ or otherwise."
    )


class MintRejectedError(_CodedError):
    code = "MINT_REJECTED"
    default_message = (
        "The mint refused the request (a 4xx answer); nothing changed at the mint because of it."
    )


class ProofVerificationFailedError(MintRejectedError):
    code = "PROOF_VERIFICATION_FAILED"
    default_message = "Proof verification failed (NUT error 10001)."


class ProofsAlreadySpentError(MintRejectedError):
    code = "PROOFS_ALREADY_SPENT"
    default_message = "Proofs already spent (11001)."


class ProofsPendingError(MintRejectedError):
    code = "PROOFS_PENDING"
    default_message = "Proofs are pending in another request (11002); they are not spendable yet."


class OutputsAlreadySignedError(MintRejectedError):
    code = "OUTPUTS_ALREADY_SIGNED"
    default_message = "Outputs already signed (11003); restore (NUT-09) gets their signatures back."


class OutputsPendingError(MintRejectedError):
    code = "OUTPUTS_PENDING"
    default_message = (
        "Outputs are pending (11004). Nutshell 0.20 also sends 11004 for a witness too long."
    )


class TransactionNotBalancedError(MintRejectedError):
    code = "TRANSACTION_NOT_BALANCED"
    default_message = "Transaction is not balanced: inputs != outputs + fees (11005)."


class AmountOutsideLimitError(MintRejectedError):
    code = "AMOUNT_OUTSIDE_LIMIT"
    default_message = "Amount outside of the mint's limit range (11006)."


class DuplicateInputsError(MintRejectedError):
    code = "DUPLICATE_INPUTS"
    default_message = "Duplicate inputs provided (11007)."


class DuplicateOutputsError(MintRejectedError):
    code = "DUPLICATE_OUTPUTS"
    default_message = "Duplicate outputs provided (11008)."


class MultipleUnitsError(MintRejectedError):
    code = "MULTIPLE_UNITS"
    default_message = "Inputs or outputs of multiple units (11009)."


class UnitMismatchError(MintRejectedError):
    code = "UNIT_MISMATCH"
    default_message = "Inputs and outputs are not of the same unit (11010)."


class AmountlessInvoiceNotSupportedError(MintRejectedError):
    code = "AMOUNTLESS_INVOICE_NOT_SUPPORTED"
    default_message = "Amountless invoice is not supported (11011)."


class InvoiceAmountMismatchError(MintRejectedError):
    code = "INVOICE_AMOUNT_MISMATCH"
    default_message = "Amount in the request does not equal the invoice's (11012)."


class UnitNotSupportedError(MintRejectedError):
    code = "UNIT_NOT_SUPPORTED"
    default_message = "Unit in the request is not supported (11013)."


class MaxInputsExceededError(MintRejectedError):
    code = "MAX_INPUTS_EXCEEDED"
    default_message = "Too many inputs in one request (11014)."


class MaxOutputsExceededError(MintRejectedError):
    code = "MAX_OUTPUTS_EXCEEDED"
    default_message = "Too many outputs in one request (11015)."


class DuplicateQuoteIdsError(MintRejectedError):
    code = "DUPLICATE_QUOTE_IDS"
    default_message = "Duplicate quote ids in a batch request (11016, NUT-29)."


class BatchSizeExceededError(MintRejectedError):
    code = "BATCH_SIZE_EXCEEDED"
    default_message = "Batch too large (11017, NUT-29)."


class MintKeysetUnknownError(MintRejectedError):
    code = "MINT_KEYSET_UNKNOWN"
    default_message = "The mint does not know this keyset (12001)."


class KeysetInactiveError(MintRejectedError):
    code = "KEYSET_INACTIVE"
    default_message = "Keyset is inactive and cannot sign new outputs (12002); refresh keysets."


class KeysetExpiredError(MintRejectedError):
    code = "KEYSET_EXPIRED"
    default_message = "Keyset has expired (12003)."


class QuoteNotPaidError(MintRejectedError):
    code = "QUOTE_NOT_PAID"
    default_message = "Mint quote is not paid yet (20001)."


class QuoteAlreadyIssuedError(MintRejectedError):
    code = "QUOTE_ALREADY_ISSUED"
    default_message = (
        "Mint quote was already issued (20002); after an ambiguous attempt, restore the outputs."
    )


class MintingDisabledError(MintRejectedError):
    code = "MINTING_DISABLED"
    default_message = "Minting is disabled at this mint (20003)."


class LightningPaymentFailedError(MintRejectedError):
    code = "LIGHTNING_PAYMENT_FAILED"
    default_message = (
        "The mint's Lightning payment failed (20004); the mint has released the inputs."
    )


class QuotePendingError(MintRejectedError):
    code = "QUOTE_PENDING"
    default_message = "Quote is pending (20005): a payment for it is in flight."


class InvoiceAlreadyPaidError(MintRejectedError):
    code = "INVOICE_ALREADY_PAID"
    default_message = "Invoice already paid (20006)."


class QuoteExpiredError(MintRejectedError):
    code = "QUOTE_EXPIRED"
    default_message = "Quote is expired (20007), or found past its expiry unpaid."


class QuoteSignatureInvalidError(MintRejectedError):
    code = "QUOTE_SIGNATURE_INVALID"
    default_message = "NUT-20 signature on the mint request is invalid (20008)."


class QuotePubkeyRequiredError(MintRejectedError):
    code = "QUOTE_PUBKEY_REQUIRED"
    default_message = "The mint requires a NUT-20 pubkey on the mint quote (20009)."


class ClearAuthRequiredError(MintRejectedError):
    code = "CLEAR_AUTH_REQUIRED"
    default_message = "Endpoint requires clear auth (30001, NUT-21)."


class ClearAuthFailedError(MintRejectedError):
    code = "CLEAR_AUTH_FAILED"
    default_message = "Clear authentication failed (30002, NUT-21)."


class BlindAuthRequiredError(MintRejectedError):
    code = "BLIND_AUTH_REQUIRED"
    default_message = "Endpoint requires blind auth (31001, NUT-22)."


class BlindAuthFailedError(MintRejectedError):
    code = "BLIND_AUTH_FAILED"
    default_message = "Blind authentication failed (31002, NUT-22)."


class BlindAuthAmountExceededError(MintRejectedError):
    code = "BLIND_AUTH_AMOUNT_EXCEEDED"
    default_message = "Maximum blind auth token mint amount exceeded (31003, NUT-22)."


class BlindAuthRateLimitError(MintRejectedError):
    code = "BLIND_AUTH_RATE_LIMIT"
    default_message = "Blind auth token mint rate limit exceeded (31004, NUT-22)."


class MintAmbiguousError(_CodedError):
    code = "MINT_AMBIGUOUS"
    default_message = "The request may or may not have taken effect at the mint."


class MintTimeoutError(MintAmbiguousError):
    code = "MINT_TIMEOUT"
    default_message = "The mint did not answer in time."


class MintUnreachableError(MintAmbiguousError):
    code = "MINT_UNREACHABLE"
    default_message = "The mint could not be connected to."


class MintRefusedWithoutCodeError(MintAmbiguousError):
    code = "MINT_REFUSED_WITHOUT_CODE"
    default_message = (
        "The mint answered 4xx to a request that changes state, without a NUT error code."
    )


class MintServerError(MintAmbiguousError):
    code = "MINT_SERVER_ERROR"
    default_message = "The mint answered with a 5xx."


class SagaError(_CodedError):
    code = "SAGA_ERROR"
    default_message = "An error of an operation (sagas/)."


class OperationNotFoundError(SagaError):
    code = "OPERATION_NOT_FOUND"
    default_message = "No operation has this id."


class OperationInProgressError(SagaError):
    code = "OPERATION_IN_PROGRESS"
    default_message = "Another worker is running a step of this operation right now."


class InvalidStateError(SagaError):
    code = "INVALID_STATE"
    default_message = "The operation is not in a state that allows this step."


class StaleOperationError(InvalidStateError):
    code = "STALE_OPERATION"
    default_message = "Someone else moved the operation between our read and our write."


class UnknownMintError(SagaError):
    code = "UNKNOWN_MINT"
    default_message = "The mint is not registered; add it first (cashu.mints.add)."


class UntrustedMintError(SagaError):
    code = "UNTRUSTED_MINT"
    default_message = "The mint is not trusted; it is never contacted."


class InvalidAmountError(SagaError):
    code = "INVALID_AMOUNT"
    default_message = "The amount is not a positive whole number within limits."


class UnsupportedUnitError(SagaError):
    code = "UNSUPPORTED_UNIT"
    default_message = "The mint has no active keyset for this unit."


class UnsupportedMethodError(SagaError):
    code = "UNSUPPORTED_METHOD"
    default_message = "The payment method is not supported."


class InsufficientBalanceError(SagaError):
    code = "INSUFFICIENT_BALANCE"
    default_message = "The wallet's spendable proofs at this mint do not cover the amount and fees."


class QuoteIssuedElsewhereError(SagaError):
    code = "QUOTE_ISSUED_ELSEWHERE"
    default_message = (
        "The quote was issued, but not to outputs we hold: we cannot recover those proofs."
    )


class ProofsNotRecoveredError(SagaError):
    code = "PROOFS_NOT_RECOVERED"
    default_message = (
        "The mint issued, but restoring our stored outputs did not bring the proofs back."
    )


class MintSignatureInvalidError(SagaError):
    code = "MINT_SIGNATURE_INVALID"
    default_message = (
        "The mint's signatures failed verification (DLEQ): its ecash cannot be trusted."
    )


class InvalidRequestError(SagaError):
    code = "INVALID_REQUEST"
    default_message = "An argument is malformed (a public key, a method, a unit)."


class TokenLockedError(SagaError):
    code = "TOKEN_LOCKED"
    default_message = "The token is locked (P2PK) to a key this wallet does not hold."


class TokenAlreadySpentError(SagaError):
    code = "TOKEN_ALREADY_SPENT"
    default_message = "The token was already claimed (its proofs are spent at the mint)."


class InvalidInvoiceError(SagaError):
    code = "INVALID_INVOICE"
    default_message = (
        "The payment request is not a payable bolt11 invoice (garbage, no amount, expired)."
    )


class DuplicatePaymentError(SagaError):
    code = "DUPLICATE_PAYMENT"
    default_message = (
        "Another melt of ours has paid this invoice, or is paying it; nothing was paid again."
    )


class FeeLimitExceededError(SagaError):
    code = "FEE_LIMIT_EXCEEDED"
    default_message = "The payment's fees could exceed the caller's max_fee; nothing was reserved."


class ProofsSpentAtMintError(SagaError):
    code = "PROOFS_SPENT_AT_MINT"
    default_message = (
        "Inputs we hold as ours are spent or pending at the mint (pre-flight reconciliation)."
    )


class TokenRefusedError(SagaError):
    code = "TOKEN_REFUSED"
    default_message = (
        "The mint refused the token's proofs (forged, or not valid there); nothing was received."
    )


class MeltInputsMismatchError(SagaError):
    code = "MELT_INPUTS_MISMATCH"
    default_message = (
        "A melt's inputs are not the ones its change blanks were planned for; it is not sent."
    )


class MeltCostError(SagaError):
    code = "MELT_COST_INVALID"
    default_message = (
        "A paid melt's fee would come out negative or above its worst case; not recorded."
    )


class MintInUseError(SagaError):
    code = "MINT_IN_USE"
    default_message = "The mint still holds our money or has operations open: it cannot be removed."


class SeedMismatchError(SagaError):
    code = "SEED_MISMATCH"
    default_message = (
        "This process's master seed is not the one the database's wallets derive from."
    )


class TooManyDeliveriesError(SagaError):
    code = "TOO_MANY_DELIVERIES"
    default_message = (
        "The task's message was delivered too many times (its worker kept dying): given up."
    )


def _error_classes() -> dict[str, type[CashuWorkerError]]:
    found: dict[str, type[CashuWorkerError]] = {}
    pending: list[type[CashuWorkerError]] = list(CashuWorkerError.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if not cls.__name__.startswith("_"):
            found[cls.__name__] = cls
    return found


ERRORS: dict[str, type[CashuWorkerError]] = {
    name: cls
    for name, cls in sorted(_error_classes().items())
    if cls not in (TaskTimeoutError, BrokerError)
}
"""The worker's error class name -> the class here (its `code` is the worker's)."""

ERRORS_BY_CODE: dict[str, type[CashuWorkerError]] = {cls.code: cls for cls in ERRORS.values()}
ERRORS["CashuError"] = CashuWorkerError  # the worker's base class: code CASHU_ERROR

UNKNOWN = "UNKNOWN"


def _message_of(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    if isinstance(message, str) and message:
        return message
    args = exc.args
    if len(args) == 1:
        return str(args[0])
    strings = [a for a in args if isinstance(a, str) and a]
    # MintServerError is rebuilt from (status_code, body, message): the message is last
    return strings[-1] if strings else str(exc)


def from_task_failure(
    exc: BaseException, *, task_id: str | None = None, task_name: str | None = None
) -> CashuWorkerError:
    """The typed error for what a failed task raised (a class rebuilt by Celery, under
    `celery.exceptions` when the caller lacks the worker's code, or the worker's own)."""
    if isinstance(exc, CashuWorkerError):
        return exc
    name = type(exc).__name__
    cls = ERRORS.get(name)
    if cls is None:
        code = getattr(exc, "code", None)  # the worker's own class, when importable here
        cls = ERRORS_BY_CODE.get(code) if isinstance(code, str) else None
        if cls is None:
            return CashuWorkerError(
                code if isinstance(code, str) and code else UNKNOWN,
                f"{name}: {_message_of(exc)}",
                remote_type=name,
                task_id=task_id,
                task_name=task_name,
            )
    if cls is CashuWorkerError:
        return CashuWorkerError(
            CashuWorkerError.code,
            _message_of(exc),
            remote_type=name,
            task_id=task_id,
            task_name=task_name,
        )
    return cls(_message_of(exc), remote_type=name, task_id=task_id, task_name=task_name)


__all__ = [
    "ERRORS",
    "ERRORS_BY_CODE",
    "UNKNOWN",
    "BrokerError",
    "CashuWorkerError",
    "TaskTimeoutError",
    "from_task_failure",
    *sorted(name for name in ERRORS if name != "CashuError"),
]
