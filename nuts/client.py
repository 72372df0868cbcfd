"""MintClient: the Cashu mint HTTP API (NUT-01..09, 20, 23) over one httpx.Client per mint.

Every failure is typed so that a saga can decide whether funds may be released:

* MintRejectedError (4xx): the mint refused; definitive.
* MintAmbiguousError (timeout, transport error, 5xx, a 2xx that does not parse): the
  request may have taken effect; settle later from the mint's truth.

Request and response bodies carry proof secrets and blinded messages; they are never logged.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote as _quote_path

import httpx
from coincurve import PrivateKey

from nuts.errors import (
    MintAmbiguousError,
    MintRefusedWithoutCodeError,
    MintServerError,
    MintTimeoutError,
    MintUnreachableError,
    mint_error_from_response,
)
from nuts.models import (
    BlindedMessage,
    BlindSignature,
    KeysetInfo,
    KeysetKeys,
    MeltQuote,
    MintInfo,
    MintQuote,
    Proof,
    ProofStateReport,
    RestoreResult,
)
from nuts.p2pk import sign_mint_quote

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
DEFAULT_MELT_TIMEOUT = 120.0
_METHOD_RE = re.compile(r"^[a-z0-9_]+$")
_USER_AGENT = "cashu-worker/0.1"


class _BadResponse(ValueError):
    """A 2xx body that is valid JSON but not the answer we asked for."""


def normalize_mint_url(url: str) -> str:
    """The canonical form of a mint URL: trimmed, http(s), no trailing slash."""
    url = url.strip().rstrip("/")
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"mint URL must be http(s): {url!r}")
    return url


def sort_outputs(outputs: Sequence[BlindedMessage]) -> list[BlindedMessage]:
    """Outputs in the order they are sent: by amount ascending, stable (NUT-03 privacy).

    A NUT-20 mint signature must be computed over the B_ values in THIS order.
    """
    return [outputs[i] for i in _sorted_order(outputs)]


def _sorted_order(outputs: Sequence[BlindedMessage]) -> list[int]:
    """Indices of `outputs` sorted by amount; position j of the request holds outputs[order[j]]."""
    return sorted(range(len(outputs)), key=lambda i: outputs[i].amount)


def _path_part(value: str) -> str:
    """A quote id or keyset id made safe as one URL path segment."""
    return _quote_path(value, safe="")


def _method(method: str) -> str:
    if not _METHOD_RE.match(method):
        raise ValueError(f"invalid payment method: {method!r}")
    return method


class MintClient:
    """A typed, synchronous client of one Cashu mint. Thread-safe (httpx.Client is)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        melt_timeout: float = DEFAULT_MELT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = normalize_mint_url(url)
        # monotonic time of the last request the mint did not answer (refused, timed out,
        # cut, 5xx); None once it answers again. Recovery skips a mint that is down.
        self.failed_at: float | None = None
        self.timeout = timeout
        self.melt_timeout = melt_timeout
        # A melt waits for a Lightning payment: long read, but a dead mint is still
        # noticed at connect time.
        self._melt_timeouts = httpx.Timeout(melt_timeout, connect=timeout)
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": _USER_AGENT, "Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"MintClient({self.url!r})"

    def __enter__(self) -> MintClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # --- NUT-06, NUT-01/02 ---------------------------------------------------------------------

    def info(self) -> MintInfo:
        """GET /v1/info."""
        return self._call("GET", "/v1/info", MintInfo.model_validate)

    def keysets(self) -> list[KeysetInfo]:
        """GET /v1/keysets: every keyset, active or not, with its input fee."""
        return self._call(
            "GET", "/v1/keysets", lambda d: [KeysetInfo.model_validate(k) for k in d["keysets"]]
        )

    def keys(self, keyset_id: str | None = None) -> list[KeysetKeys]:
        """GET /v1/keys (active keysets) or /v1/keys/{id} (one keyset, active or not)."""
        path = "/v1/keys" if keyset_id is None else f"/v1/keys/{_path_part(keyset_id)}"
        return self._call(
            "GET", path, lambda d: [KeysetKeys.model_validate(k) for k in d["keysets"]]
        )

    # --- NUT-03 swap ---------------------------------------------------------------------------

    def swap(self, inputs: list[Proof], outputs: list[BlindedMessage]) -> list[BlindSignature]:
        """POST /v1/swap. Signatures come back in the caller's order of `outputs`."""
        order = _sorted_order(outputs)
        body = {
            "inputs": [p.to_wire() for p in inputs],
            "outputs": [outputs[i].to_wire() for i in order],
        }
        return self._call(
            "POST",
            "/v1/swap",
            _signatures_in_callers_order(outputs, order),
            body,
            changes_state=True,
        )

    # --- NUT-04/23 mint ------------------------------------------------------------------------

    def create_mint_quote(
        self,
        amount: int,
        unit: str = "sat",
        *,
        method: str = "bolt11",
        description: str | None = None,
        pubkey: str | None = None,
    ) -> MintQuote:
        """POST /v1/mint/quote/{method}. `pubkey` locks the quote to a key (NUT-20)."""
        body: dict[str, Any] = {"amount": amount, "unit": unit}
        if description is not None:
            body["description"] = description
        if pubkey is not None:
            body["pubkey"] = pubkey
        return self._call(
            "POST", f"/v1/mint/quote/{_method(method)}", MintQuote.model_validate, body
        )

    def check_mint_quote(self, quote_id: str, method: str = "bolt11") -> MintQuote:
        """GET /v1/mint/quote/{method}/{quote_id}."""
        path = f"/v1/mint/quote/{_method(method)}/{_path_part(quote_id)}"
        return self._call("GET", path, MintQuote.model_validate)

    def mint(
        self,
        quote_id: str,
        outputs: list[BlindedMessage],
        *,
        quote_key: PrivateKey | None = None,
        method: str = "bolt11",
    ) -> list[BlindSignature]:
        """POST /v1/mint/{method}. Signatures come back in the caller's order of `outputs`.

        With `quote_key` (a NUT-20 locked quote) the request is signed here, over the
        outputs in the order they are sent.
        """
        order = _sorted_order(outputs)
        sent = [outputs[i] for i in order]
        body: dict[str, Any] = {"quote": quote_id, "outputs": [o.to_wire() for o in sent]}
        if quote_key is not None:
            body["signature"] = sign_mint_quote(quote_key, quote_id, sent)
        return self._call(
            "POST",
            f"/v1/mint/{_method(method)}",
            _signatures_in_callers_order(outputs, order),
            body,
            changes_state=True,
        )

    # --- NUT-05/23 melt, NUT-08 change ---------------------------------------------------------

    def create_melt_quote(
        self, request: str, unit: str = "sat", method: str = "bolt11"
    ) -> MeltQuote:
        """POST /v1/melt/quote/{method} for a payment request (bolt11 invoice)."""
        body = {"request": request, "unit": unit}
        return self._call(
            "POST", f"/v1/melt/quote/{_method(method)}", MeltQuote.model_validate, body
        )

    def check_melt_quote(self, quote_id: str, method: str = "bolt11") -> MeltQuote:
        """GET /v1/melt/quote/{method}/{quote_id}; carries `change` once PAID."""
        path = f"/v1/melt/quote/{_method(method)}/{_path_part(quote_id)}"
        return self._call("GET", path, MeltQuote.model_validate)

    def melt(
        self,
        quote_id: str,
        inputs: list[Proof],
        outputs: list[BlindedMessage] | None = None,
        method: str = "bolt11",
        *,
        prefer_async: bool = False,
    ) -> MeltQuote:
        """POST /v1/melt/{method} with the long timeout (the mint pays over Lightning).

        `outputs` are NUT-08 change blanks, sent unsorted; the change signatures in the
        result correspond to the first blanks, in order. `prefer_async`: a mint that can
        answers PENDING at once and pays in the background (NUT-05); one that cannot
        ignores the field and answers once paid.
        """
        body: dict[str, Any] = {"quote": quote_id, "inputs": [p.to_wire() for p in inputs]}
        if outputs is not None:
            body["outputs"] = [o.to_wire() for o in outputs]
        if prefer_async:
            body["prefer_async"] = True
        return self._call(
            "POST",
            f"/v1/melt/{_method(method)}",
            MeltQuote.model_validate,
            body,
            timeout=self._melt_timeouts,
            changes_state=True,
        )

    # --- NUT-07 checkstate, NUT-09 restore -----------------------------------------------------

    def checkstate(self, Ys: list[str]) -> list[ProofStateReport]:  # noqa: N803 (the NUT's name)
        """POST /v1/checkstate. States come back in the order of `Ys`."""

        def parse(data: Any) -> list[ProofStateReport]:
            by_y = {s.Y: s for s in (ProofStateReport.model_validate(x) for x in data["states"])}
            missing = [y for y in Ys if y not in by_y]
            if missing:
                raise _BadResponse(f"checkstate answer lacks {len(missing)} of the asked Ys")
            return [by_y[y] for y in Ys]

        return self._call("POST", "/v1/checkstate", parse, {"Ys": list(Ys)})

    def restore(self, outputs: list[BlindedMessage]) -> RestoreResult:
        """POST /v1/restore: the signatures the mint already made for any of `outputs`."""

        def parse(data: Any) -> RestoreResult:
            if isinstance(data, dict) and "signatures" not in data and "promises" in data:
                data = {**data, "signatures": data["promises"]}  # legacy field name
            result = RestoreResult.model_validate(data)
            if len(result.outputs) != len(result.signatures):
                raise _BadResponse("restore answer has unequal outputs and signatures")
            return result

        return self._call("POST", "/v1/restore", parse, {"outputs": [o.to_wire() for o in outputs]})

    # --- the one place that talks HTTP ---------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        parse: Callable[[Any], T],
        body: dict[str, Any] | None = None,
        *,
        timeout: httpx.Timeout | None = None,
        changes_state: bool = False,
    ) -> T:
        """Send one request and map every outcome to a result or a typed error."""
        where = f"{method} {self.url}{path}"
        started = time.monotonic()
        try:
            response = self._http.request(
                method,
                path,
                json=body,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as exc:
            self.failed_at = time.monotonic()
            logger.warning("mint timeout: %s (%s)", where, type(exc).__name__)
            raise MintTimeoutError(f"mint timed out: {where} ({type(exc).__name__})") from exc
        except httpx.ConnectError as exc:
            self.failed_at = time.monotonic()
            logger.warning("mint unreachable: %s", where)
            raise MintUnreachableError(f"cannot connect to mint: {where}: {exc}") from exc
        except httpx.RequestError as exc:
            # Read/protocol errors can happen after the mint received the request.
            self.failed_at = time.monotonic()
            logger.warning("mint transport error: %s (%s)", where, type(exc).__name__)
            raise MintAmbiguousError(
                f"connection to mint failed: {where} ({type(exc).__name__}: {exc})"
            ) from exc

        status = response.status_code
        logger.debug("%s -> %s in %.0f ms", where, status, (time.monotonic() - started) * 1000)
        self.failed_at = time.monotonic() if status >= 500 else None
        if status >= 500:
            raise MintServerError(status, response.text, f"mint server error {status}: {where}")
        if 400 <= status < 500:
            error = mint_error_from_response(status, _json_or_text(response))
            if changes_state and status == 400 and not error.mint_code:
                # Nutshell answers 400 with code 0 for any uncaught exception, even one
                # raised after a payment settled: without a NUT code it proves nothing.
                raise MintRefusedWithoutCodeError(
                    f"mint refused {where} without an error code: {error}"
                )
            raise error
        if not 200 <= status < 300:
            raise MintAmbiguousError(f"unexpected HTTP {status} from mint: {where}")
        try:
            return parse(response.json())
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            # json.JSONDecodeError and pydantic.ValidationError are ValueErrors.
            logger.warning("mint answer does not parse: %s (%s)", where, type(exc).__name__)
            raise MintAmbiguousError(
                f"mint answered {status} but the body does not parse: {where}"
            ) from exc


def _json_or_text(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:  # not JSON (or not UTF-8)
        return response.text


def _signatures_in_callers_order(
    outputs: Sequence[BlindedMessage], order: list[int]
) -> Callable[[Any], list[BlindSignature]]:
    """Parser of {"signatures": [...]} sent for outputs in `order`, returned in caller's order.

    A count, amount or keyset that does not match what was sent makes the answer
    unusable, which is ambiguous: the mint may have signed.
    """

    def parse(data: Any) -> list[BlindSignature]:
        signatures = [BlindSignature.model_validate(s) for s in data["signatures"]]
        if len(signatures) != len(order):
            raise _BadResponse(f"{len(signatures)} signatures for {len(order)} outputs")
        result: list[BlindSignature | None] = [None] * len(order)
        for sent_position, caller_index in enumerate(order):
            signature, output = signatures[sent_position], outputs[caller_index]
            if signature.amount != output.amount or signature.id != output.id:
                raise _BadResponse("a signature does not match its output's amount or keyset")
            result[caller_index] = signature
        return [s for s in result if s is not None]

    return parse


# --- one client per mint, shared by the threads of a process --------------------------------------

_clients: dict[tuple[str, float, float], MintClient] = {}
_clients_lock = threading.Lock()
_clients_pid = os.getpid()


def get_mint_client(
    url: str, *, timeout: float = DEFAULT_TIMEOUT, melt_timeout: float = DEFAULT_MELT_TIMEOUT
) -> MintClient:
    """The process's shared MintClient (one connection pool) for this mint URL.

    Safe across threads; after a fork (Celery prefork) the child builds its own clients
    instead of sharing the parent's sockets.
    """
    global _clients_pid
    key = (normalize_mint_url(url), timeout, melt_timeout)
    with _clients_lock:
        if _clients_pid != os.getpid():
            _clients.clear()  # the parent's pools are not ours to use or close
            _clients_pid = os.getpid()
        client = _clients.get(key)
        if client is None or client.is_closed:
            client = MintClient(key[0], timeout=timeout, melt_timeout=melt_timeout)
            _clients[key] = client
        return client


def close_mint_clients() -> None:
    """Close every shared client (worker shutdown, tests)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        client.close()
