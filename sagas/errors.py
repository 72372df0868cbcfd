"""Typed errors of the operations, each with a stable code and a severity.

Severity says who must act: CRITICAL means money may be at stake and a person
must look; HIGH needs attention soon; MEDIUM is retried by recovery; LOW is the
caller's own mistake or a transient condition.
"""

from __future__ import annotations

from enum import StrEnum

from nuts.errors import CashuError


class Severity(StrEnum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"


class SagaError(CashuError):
    code = "SAGA_ERROR"
    default_message = "SAGA_ERROR"
    severity: Severity = Severity.MEDIUM


class OperationNotFoundError(SagaError):
    code = "OPERATION_NOT_FOUND"
    default_message = "No operation has this id."
    severity = Severity.LOW


class OperationInProgressError(SagaError):
    code = "OPERATION_IN_PROGRESS"
    default_message = "Another worker is running a step of this operation right now."
    severity = Severity.LOW


class InvalidStateError(SagaError):
    code = "INVALID_STATE"
    default_message = "The operation is not in a state that allows this step."
    severity = Severity.LOW


class StaleOperationError(InvalidStateError):
    code = "STALE_OPERATION"
    default_message = "Someone else moved the operation between our read and our write."


class UnknownMintError(SagaError):
    code = "UNKNOWN_MINT"
    default_message = "The mint is not registered; add it first (cashu.mints.add)."
    severity = Severity.LOW


class UntrustedMintError(SagaError):
    code = "UNTRUSTED_MINT"
    default_message = "The mint is not trusted; it is never contacted."
    severity = Severity.LOW


class InvalidAmountError(SagaError):
    code = "INVALID_AMOUNT"
    default_message = "The amount is not a positive whole number within limits."
    severity = Severity.LOW


class UnsupportedUnitError(SagaError):
    code = "UNSUPPORTED_UNIT"
    default_message = "The mint has no active keyset for this unit."
    severity = Severity.LOW


class UnsupportedMethodError(SagaError):
    code = "UNSUPPORTED_METHOD"
    default_message = "The payment method is not supported."
    severity = Severity.LOW


class InsufficientBalanceError(SagaError):
    code = "INSUFFICIENT_BALANCE"
    default_message = "The wallet's spendable proofs at this mint do not cover the amount and fees."
    severity = Severity.LOW


class QuoteIssuedElsewhereError(SagaError):
    code = "QUOTE_ISSUED_ELSEWHERE"
    default_message = (
        "The quote was issued, but not to outputs we hold: we cannot recover those proofs."
    )
    severity = Severity.HIGH


class ProofsNotRecoveredError(SagaError):
    code = "PROOFS_NOT_RECOVERED"
    default_message = (
        "The mint issued, but restoring our stored outputs did not bring the proofs back."
    )
    severity = Severity.CRITICAL


class MintSignatureInvalidError(SagaError):
    code = "MINT_SIGNATURE_INVALID"
    default_message = (
        "The mint's signatures failed verification (DLEQ): its ecash cannot be trusted."
    )
    severity = Severity.CRITICAL


class InvalidRequestError(SagaError):
    code = "INVALID_REQUEST"
    default_message = "An argument is malformed (a public key, a method, a unit)."
    severity = Severity.LOW


class TokenLockedError(SagaError):
    code = "TOKEN_LOCKED"
    default_message = "The token is locked (P2PK) to a key this wallet does not hold."
    severity = Severity.LOW


class TokenAlreadySpentError(SagaError):
    code = "TOKEN_ALREADY_SPENT"
    default_message = "The token was already claimed (its proofs are spent at the mint)."
    severity = Severity.LOW


class TokenRefusedError(SagaError):
    code = "TOKEN_REFUSED"
    default_message = (
        "The mint refused the token's proofs (forged, or not valid there); nothing was received."
    )
    severity = Severity.LOW


class InvalidInvoiceError(SagaError):
    code = "INVALID_INVOICE"
    default_message = (
        "The payment request is not a payable bolt11 invoice (garbage, no amount, expired)."
    )
    severity = Severity.LOW


class DuplicatePaymentError(SagaError):
    code = "DUPLICATE_PAYMENT"
    default_message = (
        "Another melt of ours has paid this invoice, or is paying it; nothing was paid again."
    )
    severity = Severity.LOW


class FeeLimitExceededError(SagaError):
    code = "FEE_LIMIT_EXCEEDED"
    default_message = "The payment's fees could exceed the caller's max_fee; nothing was reserved."
    severity = Severity.LOW


class ProofsSpentAtMintError(SagaError):
    code = "PROOFS_SPENT_AT_MINT"
    default_message = (
        "Inputs we hold as ours are spent or pending at the mint (pre-flight reconciliation)."
    )
    severity = Severity.HIGH


class MeltInputsMismatchError(SagaError):
    code = "MELT_INPUTS_MISMATCH"
    default_message = (
        "A melt's inputs are not the ones its change blanks were planned for; it is not sent."
    )
    severity = Severity.CRITICAL


class MeltCostError(SagaError):
    code = "MELT_COST_INVALID"
    default_message = (
        "A paid melt's fee would come out negative or above its worst case; not recorded."
    )
    severity = Severity.CRITICAL


class MintInUseError(SagaError):
    code = "MINT_IN_USE"
    default_message = "The mint still holds our money or has operations open: it cannot be removed."
    severity = Severity.LOW


class SeedMismatchError(SagaError):
    code = "SEED_MISMATCH"
    default_message = (
        "This process's master seed is not the one the database's wallets derive from."
    )
    severity = Severity.CRITICAL
