"""Typed errors of the protocol layer.

Two families matter for money safety:

* MintRejectedError: the mint answered with a NUT error `{detail, code}` (a
  4xx). The request was refused; nothing changed at the mint because of it.
* MintAmbiguousError: a timeout, a dropped connection, or a 5xx. The request
  may or may not have taken effect; the caller must not release funds and must
  settle later from the mint's truth (checkstate, quote state, restore).

Every error has a stable string `code` that callers can match on.
"""

from __future__ import annotations


class CashuError(Exception):
    """Base of every error raised by cashu-worker."""

    code: str = "CASHU_ERROR"
    # What callers see when it is raised without a message: each error's own sentence, said
    # once, here rather than in a docstring (a class's docstring only adds the why).
    default_message: str = "Base of every error raised by cashu-worker."

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message


class InvalidTokenError(CashuError):
    code = "INVALID_TOKEN"
    default_message = "The token could not be decoded or is not a valid Cashu token."


class KeysetError(CashuError):
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


class InsufficientFundsError(CashuError):
    """The candidates cannot cover the amount plus the fee of spending them (coin selection;
    sagas answer InsufficientBalanceError)."""

    code = "INSUFFICIENT_FUNDS"

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(f"need {needed}, have {available}")
        self.needed = needed
        self.available = available


class InvalidSignatureError(CashuError):
    code = "INVALID_SIGNATURE"
    default_message = (
        "A signature from the mint (or in a token) does not verify: DLEQ or otherwise."
    )


# --- Answers from a mint -------------------------------------------------------------------------


class MintRejectedError(CashuError):
    """The mint refused the request (a 4xx answer); nothing changed at the mint because of it.

    `mint_code` is the NUT error code from the JSON body (None when the body had none);
    `detail` is the mint's explanation; `status_code` the HTTP status.
    """

    code = "MINT_REJECTED"
    default_message = (
        "The mint refused the request (a 4xx answer); nothing changed at the mint because of it."
    )
    mint_code: int | None = None

    def __init__(self, detail: str = "", *, mint_code: int | None = None, status_code: int = 400):
        self.detail = detail or self.default_message
        if mint_code is not None:
            self.mint_code = mint_code
        self.status_code = status_code
        label = f"code {self.mint_code}" if self.mint_code is not None else "no code"
        super().__init__(f"mint rejected the request (HTTP {status_code}, {label}): {self.detail}")
        # Celery rebuilds an error as cls(*args): args must be what __init__ takes.
        self.args = (self.detail,)

    def __str__(self) -> str:
        return self.message


class ProofVerificationFailedError(MintRejectedError):
    code = "PROOF_VERIFICATION_FAILED"
    default_message = "Proof verification failed (NUT error 10001)."
    mint_code = 10001


class ProofsAlreadySpentError(MintRejectedError):
    """Proofs already spent (11001).

    After an ambiguous first attempt this can mean our own earlier request went through:
    settle from checkstate / restore, do not assume someone else spent them.
    """

    code = "PROOFS_ALREADY_SPENT"
    default_message = "Proofs already spent (11001)."
    mint_code = 11001


class ProofsPendingError(MintRejectedError):
    code = "PROOFS_PENDING"
    default_message = "Proofs are pending in another request (11002); they are not spendable yet."
    mint_code = 11002


class OutputsAlreadySignedError(MintRejectedError):
    """Outputs already signed (11003); restore (NUT-09) gets their signatures back.

    Nutshell 0.20 also sends 11003 for a secret that is too long.
    """

    code = "OUTPUTS_ALREADY_SIGNED"
    default_message = "Outputs already signed (11003); restore (NUT-09) gets their signatures back."
    mint_code = 11003


class OutputsPendingError(MintRejectedError):
    code = "OUTPUTS_PENDING"
    default_message = (
        "Outputs are pending (11004). Nutshell 0.20 also sends 11004 for a witness too long."
    )
    mint_code = 11004


class TransactionNotBalancedError(MintRejectedError):
    code = "TRANSACTION_NOT_BALANCED"
    default_message = "Transaction is not balanced: inputs != outputs + fees (11005)."
    mint_code = 11005


class AmountOutsideLimitError(MintRejectedError):
    code = "AMOUNT_OUTSIDE_LIMIT"
    default_message = "Amount outside of the mint's limit range (11006)."
    mint_code = 11006


class DuplicateInputsError(MintRejectedError):
    code = "DUPLICATE_INPUTS"
    default_message = "Duplicate inputs provided (11007)."
    mint_code = 11007


class DuplicateOutputsError(MintRejectedError):
    code = "DUPLICATE_OUTPUTS"
    default_message = "Duplicate outputs provided (11008)."
    mint_code = 11008


class MultipleUnitsError(MintRejectedError):
    code = "MULTIPLE_UNITS"
    default_message = "Inputs or outputs of multiple units (11009)."
    mint_code = 11009


class UnitMismatchError(MintRejectedError):
    code = "UNIT_MISMATCH"
    default_message = "Inputs and outputs are not of the same unit (11010)."
    mint_code = 11010


class AmountlessInvoiceNotSupportedError(MintRejectedError):
    code = "AMOUNTLESS_INVOICE_NOT_SUPPORTED"
    default_message = "Amountless invoice is not supported (11011)."
    mint_code = 11011


class InvoiceAmountMismatchError(MintRejectedError):
    code = "INVOICE_AMOUNT_MISMATCH"
    default_message = "Amount in the request does not equal the invoice's (11012)."
    mint_code = 11012


class UnitNotSupportedError(MintRejectedError):
    code = "UNIT_NOT_SUPPORTED"
    default_message = "Unit in the request is not supported (11013)."
    mint_code = 11013


class MaxInputsExceededError(MintRejectedError):
    code = "MAX_INPUTS_EXCEEDED"
    default_message = "Too many inputs in one request (11014)."
    mint_code = 11014


class MaxOutputsExceededError(MintRejectedError):
    code = "MAX_OUTPUTS_EXCEEDED"
    default_message = "Too many outputs in one request (11015)."
    mint_code = 11015


class DuplicateQuoteIdsError(MintRejectedError):
    code = "DUPLICATE_QUOTE_IDS"
    default_message = "Duplicate quote ids in a batch request (11016, NUT-29)."
    mint_code = 11016


class BatchSizeExceededError(MintRejectedError):
    code = "BATCH_SIZE_EXCEEDED"
    default_message = "Batch too large (11017, NUT-29)."
    mint_code = 11017


class MintKeysetUnknownError(MintRejectedError):
    code = "MINT_KEYSET_UNKNOWN"
    default_message = "The mint does not know this keyset (12001)."
    mint_code = 12001


class KeysetInactiveError(MintRejectedError):
    code = "KEYSET_INACTIVE"
    default_message = "Keyset is inactive and cannot sign new outputs (12002); refresh keysets."
    mint_code = 12002


class KeysetExpiredError(MintRejectedError):
    code = "KEYSET_EXPIRED"
    default_message = "Keyset has expired (12003)."
    mint_code = 12003


class QuoteNotPaidError(MintRejectedError):
    code = "QUOTE_NOT_PAID"
    default_message = "Mint quote is not paid yet (20001)."
    mint_code = 20001


class QuoteAlreadyIssuedError(MintRejectedError):
    code = "QUOTE_ALREADY_ISSUED"
    default_message = (
        "Mint quote was already issued (20002); after an ambiguous attempt, restore the outputs."
    )
    mint_code = 20002


class MintingDisabledError(MintRejectedError):
    code = "MINTING_DISABLED"
    default_message = "Minting is disabled at this mint (20003)."
    mint_code = 20003


class LightningPaymentFailedError(MintRejectedError):
    code = "LIGHTNING_PAYMENT_FAILED"
    default_message = (
        "The mint's Lightning payment failed (20004); the mint has released the inputs."
    )
    mint_code = 20004


class QuotePendingError(MintRejectedError):
    code = "QUOTE_PENDING"
    default_message = "Quote is pending (20005): a payment for it is in flight."
    mint_code = 20005


class InvoiceAlreadyPaidError(MintRejectedError):
    code = "INVOICE_ALREADY_PAID"
    default_message = "Invoice already paid (20006)."
    mint_code = 20006


class QuoteExpiredError(MintRejectedError):
    code = "QUOTE_EXPIRED"
    default_message = "Quote is expired (20007), or found past its expiry unpaid (`past_expiry`)."
    mint_code = 20007

    @classmethod
    def past_expiry(cls, quote_id: str) -> QuoteExpiredError:
        """The quote's own expiry has passed unpaid: no answer from the mint says so, so the
        message says just that, not "mint rejected the request (HTTP ...)"."""
        error = cls(f"quote {quote_id} expired unpaid")
        error.message = error.detail
        return error


class QuoteSignatureInvalidError(MintRejectedError):
    code = "QUOTE_SIGNATURE_INVALID"
    default_message = "NUT-20 signature on the mint request is invalid (20008)."
    mint_code = 20008


class QuotePubkeyRequiredError(MintRejectedError):
    code = "QUOTE_PUBKEY_REQUIRED"
    default_message = "The mint requires a NUT-20 pubkey on the mint quote (20009)."
    mint_code = 20009


class ClearAuthRequiredError(MintRejectedError):
    code = "CLEAR_AUTH_REQUIRED"
    default_message = "Endpoint requires clear auth (30001, NUT-21)."
    mint_code = 30001


class ClearAuthFailedError(MintRejectedError):
    code = "CLEAR_AUTH_FAILED"
    default_message = "Clear authentication failed (30002, NUT-21)."
    mint_code = 30002


class BlindAuthRequiredError(MintRejectedError):
    code = "BLIND_AUTH_REQUIRED"
    default_message = "Endpoint requires blind auth (31001, NUT-22)."
    mint_code = 31001


class BlindAuthFailedError(MintRejectedError):
    code = "BLIND_AUTH_FAILED"
    default_message = "Blind authentication failed (31002, NUT-22)."
    mint_code = 31002


class BlindAuthAmountExceededError(MintRejectedError):
    code = "BLIND_AUTH_AMOUNT_EXCEEDED"
    default_message = "Maximum blind auth token mint amount exceeded (31003, NUT-22)."
    mint_code = 31003


class BlindAuthRateLimitError(MintRejectedError):
    code = "BLIND_AUTH_RATE_LIMIT"
    default_message = "Blind auth token mint rate limit exceeded (31004, NUT-22)."
    mint_code = 31004


MINT_ERRORS: dict[int, type[MintRejectedError]] = {
    cls.mint_code: cls
    for cls in (
        ProofVerificationFailedError,
        ProofsAlreadySpentError,
        ProofsPendingError,
        OutputsAlreadySignedError,
        OutputsPendingError,
        TransactionNotBalancedError,
        AmountOutsideLimitError,
        DuplicateInputsError,
        DuplicateOutputsError,
        MultipleUnitsError,
        UnitMismatchError,
        AmountlessInvoiceNotSupportedError,
        InvoiceAmountMismatchError,
        UnitNotSupportedError,
        MaxInputsExceededError,
        MaxOutputsExceededError,
        DuplicateQuoteIdsError,
        BatchSizeExceededError,
        MintKeysetUnknownError,
        KeysetInactiveError,
        KeysetExpiredError,
        QuoteNotPaidError,
        QuoteAlreadyIssuedError,
        MintingDisabledError,
        LightningPaymentFailedError,
        QuotePendingError,
        InvoiceAlreadyPaidError,
        QuoteExpiredError,
        QuoteSignatureInvalidError,
        QuotePubkeyRequiredError,
        ClearAuthRequiredError,
        ClearAuthFailedError,
        BlindAuthRequiredError,
        BlindAuthFailedError,
        BlindAuthAmountExceededError,
        BlindAuthRateLimitError,
    )
    if cls.mint_code is not None
}
"""NUT error code -> class. Codes not listed give a plain MintRejectedError."""

_MAX_DETAIL = 300


def _detail_text(detail: object) -> str:
    """The mint's `detail` as a short string.

    FastAPI's 422 detail is a list of errors whose `input` echoes the request, which
    can hold proof secrets: keep only where (`loc`) and what (`msg`).
    """
    if isinstance(detail, str):
        text = detail
    elif isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", ()))
                parts.append(f"{loc}: {item.get('msg', '')}".strip(": "))
            else:
                parts.append(str(item))
        text = "; ".join(parts)
    elif detail is None:
        text = ""
    else:
        text = str(detail)
    return text[:_MAX_DETAIL]


def _code_of(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def mint_error_from_response(status_code: int, body: object) -> MintRejectedError:
    """The error for a 4xx answer: the subclass for its NUT code, else MintRejectedError.

    `body` is the parsed JSON (normally `{"detail": ..., "code": N}`) or the raw text.
    """
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, dict):
        mint_code = _code_of(body.get("code"))
        detail = _detail_text(body.get("detail"))
    else:
        mint_code = None
        detail = _detail_text(body if body is not None else "")
    cls: type[MintRejectedError] = MintRejectedError
    if mint_code is not None:
        cls = MINT_ERRORS.get(mint_code, MintRejectedError)
    return cls(detail, mint_code=mint_code, status_code=status_code)


class MintAmbiguousError(CashuError):
    """The request may or may not have taken effect at the mint.

    Timeouts, dropped or refused connections, 5xx answers, and 2xx answers that do not
    parse. Never release funds on it: settle later from the mint's truth.
    """

    code = "MINT_AMBIGUOUS"
    default_message = "The request may or may not have taken effect at the mint."


class MintTimeoutError(MintAmbiguousError):
    code = "MINT_TIMEOUT"
    default_message = "The mint did not answer in time."


class MintUnreachableError(MintAmbiguousError):
    code = "MINT_UNREACHABLE"
    default_message = "The mint could not be connected to."


class MintRefusedWithoutCodeError(MintAmbiguousError):
    """The mint answered 4xx to a request that changes state, without a NUT error code.

    Nutshell answers so for any uncaught exception, even one raised after it acted, so the
    answer alone proves nothing; a swap settles it from checkstate (sagas/swap.py).
    """

    code = "MINT_REFUSED_WITHOUT_CODE"
    default_message = (
        "The mint answered 4xx to a request that changes state, without a NUT error code."
    )


class MintServerError(MintAmbiguousError):
    code = "MINT_SERVER_ERROR"
    default_message = "The mint answered with a 5xx."

    def __init__(self, status_code: int, body: str = "", message: str = "") -> None:
        self.status_code = status_code
        self.body = body[:_MAX_DETAIL]
        super().__init__(message or f"mint server error (HTTP {status_code}): {self.body}")
        self.args = (status_code, self.body, self.message)

    def __str__(self) -> str:
        return self.message
