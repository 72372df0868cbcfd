"""CashuClient: the public tasks of cashu-worker (docs/design.md section 2) as methods.

Needs only Celery and the broker's URL; not the worker's code or dependencies:

    from cashu_client import CashuClient, InsufficientBalanceError

    client = CashuClient("redis://127.0.0.1:6379/0")
    op = client.mint_prepare("alice", "https://mint.example", 1000)
    ...                                   # pay op["request"]
    client.mint_refresh(op["id"])
    client.balance("alice")["spendable"]

With RabbitMQ as the workers' broker (BROKER_URL), the results are still in Redis:
`CashuClient("amqp://user:password@rabbit:5672/vhost", "redis://127.0.0.1:6379/0")`.

Each method sends its task by name to the queue (default "cashu"; a melt's execute and
pay to `lightning_queue`, default "cashu.lightning", where the melt's requests run), waits
for the result (`timeout` seconds, default 60) and returns its JSON. A task that fails
raises the typed error of cashu_client.errors (`exc.code` is the worker's stable code);
no result in time raises TaskTimeoutError (the task may still run: look the operation up
before retrying); an unreachable broker (or result backend) raises BrokerError once it has
been retried for `connect_timeout` seconds (default 2), not after Celery's own retries (20
s and more).

Tokens are secrets: the representation of the arguments Celery puts in the message
headers and task events (argsrepr/kwargsrepr) has them masked. The task gets the token.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.exceptions import OperationalError

from cashu_client.errors import BrokerError, TaskTimeoutError, from_task_failure
from cashu_client.redaction import redact

DEFAULT_QUEUE = "cashu"
DEFAULT_LIGHTNING_QUEUE = "cashu.lightning"
# Sent where the melt's requests run; on another queue a worker hands them over (one hop more).
LIGHTNING_TASKS = frozenset({"cashu.melt.execute", "cashu.melt.pay"})
DEFAULT_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 2.0
_RETRY_INTERVAL = 0.5

_REPR_MAXSIZE = 1024


def _safe_repr(value: Any) -> str:
    text = repr(redact(value))
    return text if len(text) <= _REPR_MAXSIZE else text[: _REPR_MAXSIZE - 3] + "..."


def _connection_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OperationalError, ConnectionError]
    try:  # the Redis transport's own (not subclasses of the builtin ConnectionError)
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        errors += [RedisConnectionError, RedisTimeoutError]
    except ImportError:  # another broker
        pass
    return tuple(errors)


_CONNECTION_ERRORS = _connection_errors()


def _connection_error_of(exc: BaseException) -> BaseException | None:
    """`exc` or what caused it, when that is a connection error: Celery's result consumer
    turns one it gave up retrying into a RuntimeError ("Retry limit exceeded ...")."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, _CONNECTION_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _retry_settings(connect_timeout: float) -> dict[str, Any]:
    """Celery settings that give up on an unreachable broker or backend after about
    `connect_timeout` seconds (a connection attempt each _RETRY_INTERVAL)."""
    policy = {
        "max_retries": max(0, int(connect_timeout / _RETRY_INTERVAL)),
        "interval_start": 0,
        "interval_step": _RETRY_INTERVAL,
        "interval_max": _RETRY_INTERVAL,
    }
    return {
        "broker_connection_timeout": connect_timeout,
        "broker_connection_max_retries": policy["max_retries"],
        "broker_transport_options": {"socket_connect_timeout": connect_timeout},
        "task_publish_retry_policy": policy,
        "redis_socket_connect_timeout": connect_timeout,
        "result_backend_transport_options": {"retry_policy": policy},
    }


def _failed(result: Any) -> bool:
    """Whether the task itself failed (its state is cached once `get` has seen it)."""
    try:
        return result.state == "FAILURE"
    except Exception:
        return False


def _given(**kwargs: Any) -> dict[str, Any]:
    """The optional arguments that were given (None: leave the worker's default)."""
    return {k: v for k, v in kwargs.items() if v is not None}


class CashuClient:
    """One method per public task of cashu-worker; see the module's docstring."""

    def __init__(
        self,
        broker_url: str,
        backend_url: str | None = None,
        *,
        queue: str = DEFAULT_QUEUE,
        lightning_queue: str = DEFAULT_LIGHTNING_QUEUE,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.broker_url = broker_url
        self.backend_url = backend_url or broker_url
        self.queue = queue
        self.lightning_queue = lightning_queue
        self.timeout = timeout
        self.app = Celery(
            f"cashu-client-{uuid.uuid4().hex[:8]}",
            broker=self.broker_url,
            backend=self.backend_url,
            set_as_current=False,
        )
        self.app.conf.update(
            task_serializer="json",
            result_serializer="json",
            accept_content=["json"],
            result_accept_content=["json"],
            task_default_queue=queue,
            broker_connection_retry_on_startup=True,
            enable_utc=True,
            **_retry_settings(connect_timeout),
        )

    # --- plumbing ------------------------------------------------------------------------------

    def call(self, name: str, /, *, timeout: float | None = None, **kwargs: Any) -> Any:
        """Send task `name` with `kwargs`, wait up to `timeout` seconds (default: the
        client's), return its result; typed errors as described in the module."""
        wait = self.timeout if timeout is None else timeout
        queue = self.lightning_queue if name in LIGHTNING_TASKS else self.queue
        try:
            result = self.app.send_task(
                name,
                kwargs=kwargs,
                queue=queue,
                argsrepr="()",
                kwargsrepr=_safe_repr(kwargs),
            )
        except Exception as exc:
            lost = _connection_error_of(exc)
            if lost is None:
                raise
            raise BrokerError(f"could not send {name}: {lost}", task_name=name) from exc
        try:
            return result.get(timeout=wait)
        except CeleryTimeoutError as exc:
            raise TaskTimeoutError(
                f"{name} gave no result within {wait:g}s (task {result.id}, queue "
                f"{queue!r}); no worker may be consuming that queue, or it may still "
                "run: look the operation up before trying again",
                task_id=result.id,
                task_name=name,
            ) from exc
        except Exception as exc:
            if _failed(result):  # the task raised: its typed error
                raise from_task_failure(exc, task_id=result.id, task_name=name) from exc
            lost = _connection_error_of(exc)
            if lost is not None:
                raise BrokerError(
                    f"lost the result backend while waiting for {name} (task {result.id}); "
                    f"it may still run: {lost}",
                    task_id=result.id,
                    task_name=name,
                ) from exc
            raise

    def close(self) -> None:
        """Release the broker and backend connections."""
        self.app.close()

    def __enter__(self) -> CashuClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- mints ---------------------------------------------------------------------------------

    def mints_add(self, url: str, trusted: bool = True) -> dict[str, Any]:
        """Register (or refresh) a mint: {url, info, keysets, trusted}."""
        return self.call("cashu.mints.add", url=url, trusted=trusted)

    def mints_set_trusted(self, url: str, trusted: bool) -> dict[str, Any]:
        return self.call("cashu.mints.set_trusted", url=url, trusted=trusted)

    def mints_remove(self, url: str) -> dict[str, Any]:
        """Forget a mint that holds nothing of ours and has nothing open (MintInUseError
        otherwise: untrust it instead)."""
        return self.call("cashu.mints.remove", url=url)

    def mints_list(self) -> dict[str, Any]:
        """{"mints": [Mint]}."""
        return self.call("cashu.mints.list")

    # --- wallet --------------------------------------------------------------------------------

    def balance(
        self, wallet: str, mint_url: str | None = None, unit: str = "sat"
    ) -> dict[str, Any]:
        """{"spendable", "reserved", "pending", "total", "unit", "by_mint": {url: {...}}}."""
        return self.call(
            "cashu.wallet.balance", wallet=wallet, unit=unit, **_given(mint_url=mint_url)
        )

    def wallet_info(self, wallet: str) -> dict[str, Any]:
        """{"wallet", "pubkey"}: the wallet's P2PK key, for senders to lock tokens to."""
        return self.call("cashu.wallet.info", wallet=wallet)

    def check_proofs(self, wallet: str, mint_url: str, token: str | None = None) -> dict[str, Any]:
        """Our proof states against the mint's (NUT-07), discrepancies classified and the
        safe ones corrected; `token`: proofs from outside to check too (PROOF_NOT_IN_DB)."""
        return self.call(
            "cashu.wallet.check_proofs", wallet=wallet, mint_url=mint_url, **_given(token=token)
        )

    def restore(self, mint_url: str, wallet: str = "default") -> dict[str, Any]:
        """The wallet's proofs at the mint, recovered from its seed (NUT-09/13)."""
        return self.call("cashu.wallet.restore", mint_url=mint_url, wallet=wallet)

    # --- mint (Lightning in, ecash out) --------------------------------------------------------

    def mint_prepare(
        self,
        wallet: str,
        mint_url: str,
        amount: int,
        unit: str = "sat",
        method: str = "bolt11",
        notify_task: str | None = None,
    ) -> dict[str, Any]:
        """A mint quote: Operation with quote_id, request (the invoice), expiry."""
        return self.call(
            "cashu.mint.prepare",
            wallet=wallet,
            mint_url=mint_url,
            amount=amount,
            unit=unit,
            method=method,
            **_given(notify_task=notify_task),
        )

    def mint_import_quote(
        self, wallet: str, mint_url: str, quote_id: str, notify_task: str | None = None
    ) -> dict[str, Any]:
        return self.call(
            "cashu.mint.import_quote",
            wallet=wallet,
            mint_url=mint_url,
            quote_id=quote_id,
            **_given(notify_task=notify_task),
        )

    def mint_execute(self, operation_id: str) -> dict[str, Any]:
        return self.call("cashu.mint.execute", operation_id=operation_id)

    def mint_refresh(self, operation_id: str) -> dict[str, Any]:
        """Checks the payment; issues the ecash once paid."""
        return self.call("cashu.mint.refresh", operation_id=operation_id)

    # --- melt (ecash in, Lightning out) --------------------------------------------------------

    def melt_prepare(
        self,
        wallet: str,
        mint_url: str,
        invoice: str,
        method: str = "bolt11",
        notify_task: str | None = None,
        max_fee: int | None = None,
    ) -> dict[str, Any]:
        """A melt quote, inputs reserved: Operation with amount, fee_reserve, swap_fee...
        With max_fee, FeeLimitExceededError when the fees could come to more."""
        return self.call(
            "cashu.melt.prepare",
            wallet=wallet,
            mint_url=mint_url,
            invoice=invoice,
            method=method,
            **_given(notify_task=notify_task, max_fee=max_fee),
        )

    def melt_pay(
        self,
        wallet: str,
        mint_url: str,
        invoice: str,
        max_fee: int | None = None,
        method: str = "bolt11",
        notify_task: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """prepare + execute in one task: Operation finalized, pending or rolled_back.
        With max_fee, FeeLimitExceededError (nothing moved) when the fees could come to more.
        wait=False: the operation as it stands at once (executing); events tell the end."""
        return self.call(
            "cashu.melt.pay",
            wallet=wallet,
            mint_url=mint_url,
            invoice=invoice,
            method=method,
            **_given(max_fee=max_fee, notify_task=notify_task, wait=None if wait else False),
        )

    def melt_execute(
        self,
        operation_id: str | None = None,
        *,
        mint_url: str | None = None,
        quote_id: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Pay: Operation finalized (change_amount, effective_fee, preimage), pending or
        rolled_back. By operation id, or by (mint_url, quote_id). wait=False: at once."""
        return self.call(
            "cashu.melt.execute",
            **_given(
                operation_id=operation_id,
                mint_url=mint_url,
                quote_id=quote_id,
                wait=None if wait else False,
            ),
        )

    def melt_refresh(
        self,
        operation_id: str | None = None,
        *,
        mint_url: str | None = None,
        quote_id: str | None = None,
    ) -> dict[str, Any]:
        return self.call(
            "cashu.melt.refresh",
            **_given(operation_id=operation_id, mint_url=mint_url, quote_id=quote_id),
        )

    def melt_cancel(self, operation_id: str) -> dict[str, Any]:
        """Cancel a prepared melt (its inputs are released)."""
        return self.call("cashu.melt.cancel", operation_id=operation_id)

    def melt_reclaim(self, operation_id: str) -> dict[str, Any]:
        """A pending melt whose quote the mint confirms UNPAID: inputs back."""
        return self.call("cashu.melt.reclaim", operation_id=operation_id)

    def melt_get_by_quote(self, mint_url: str, quote_id: str) -> dict[str, Any] | None:
        return self.call("cashu.melt.get_by_quote", mint_url=mint_url, quote_id=quote_id)

    # --- send (ecash out as a token) -----------------------------------------------------------

    def send_prepare(
        self,
        wallet: str,
        mint_url: str,
        amount: int,
        unit: str = "sat",
        memo: str | None = None,
        p2pk_pubkey: str | None = None,
        include_receiver_fee: bool = False,
        notify_task: str | None = None,
    ) -> dict[str, Any]:
        """Inputs reserved: Operation with fee, input_amount, needs_swap."""
        return self.call(
            "cashu.send.prepare",
            wallet=wallet,
            mint_url=mint_url,
            amount=amount,
            unit=unit,
            include_receiver_fee=include_receiver_fee,
            **_given(memo=memo, p2pk_pubkey=p2pk_pubkey, notify_task=notify_task),
        )

    def send_token(
        self,
        wallet: str,
        mint_url: str,
        amount: int,
        unit: str = "sat",
        memo: str | None = None,
        p2pk_pubkey: str | None = None,
        include_receiver_fee: bool = False,
        token_version: int | None = None,
        notify_task: str | None = None,
    ) -> dict[str, Any]:
        """prepare + execute in one task: Operation with `token`."""
        return self.call(
            "cashu.send.token",
            wallet=wallet,
            mint_url=mint_url,
            amount=amount,
            unit=unit,
            include_receiver_fee=include_receiver_fee,
            **_given(
                memo=memo,
                p2pk_pubkey=p2pk_pubkey,
                token_version=token_version,
                notify_task=notify_task,
            ),
        )

    def send_execute(self, operation_id: str, token_version: int | None = None) -> dict[str, Any]:
        """Operation with `token` (V4 cashuB by default; token_version=3 for cashuA)."""
        return self.call(
            "cashu.send.execute",
            operation_id=operation_id,
            **_given(token_version=token_version),
        )

    def send_refresh(self, operation_id: str) -> dict[str, Any]:
        """Finalized once the token is claimed."""
        return self.call("cashu.send.refresh", operation_id=operation_id)

    def send_rollback(self, operation_id: str) -> dict[str, Any]:
        """Cancel a prepared send, or reclaim a pending one."""
        return self.call("cashu.send.rollback", operation_id=operation_id)

    # --- receive (a token in) ------------------------------------------------------------------

    def receive_prepare(
        self, wallet: str, token: str, trust_mint: bool = False, notify_task: str | None = None
    ) -> dict[str, Any]:
        """Check the token offline: Operation with amount, fee, mint_url."""
        return self.call(
            "cashu.receive.prepare",
            wallet=wallet,
            token=token,
            trust_mint=trust_mint,
            **_given(notify_task=notify_task),
        )

    def receive_execute(self, operation_id: str) -> dict[str, Any]:
        return self.call("cashu.receive.execute", operation_id=operation_id)

    def receive_redeem(
        self, wallet: str, token: str, trust_mint: bool = False, notify_task: str | None = None
    ) -> dict[str, Any]:
        """prepare + execute in one task."""
        return self.call(
            "cashu.receive.redeem",
            wallet=wallet,
            token=token,
            trust_mint=trust_mint,
            **_given(notify_task=notify_task),
        )

    # --- queries and recovery ------------------------------------------------------------------

    def ops_get(self, operation_id: str) -> dict[str, Any] | None:
        """The Operation, or None when no operation has this id."""
        return self.call("cashu.ops.get", operation_id=operation_id)

    def ops_audit(self, operation_id: str) -> dict[str, Any]:
        """Every transition of the operation, oldest first: {operation_id, transitions}."""
        return self.call("cashu.ops.audit", operation_id=operation_id)

    def ops_list(
        self,
        wallet: str,
        kind: str | None = None,
        states: list[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> dict[str, Any]:
        """{"operations": [...]}, newest first."""
        return self.call(
            "cashu.ops.list",
            wallet=wallet,
            limit=limit,
            offset=offset,
            **_given(kind=kind, states=list(states) if states else None),
        )

    def history_list(self, wallet: str, limit: int = 25, offset: int = 0) -> dict[str, Any]:
        """{"entries": [...]}, newest first: amounts, fees, states; no tokens."""
        return self.call("cashu.history.list", wallet=wallet, limit=limit, offset=offset)

    def recovery_run(self) -> dict[str, Any]:
        """{"recovered", "rolled_back", "still_pending", "failed", ...}."""
        return self.call("cashu.recovery.run")
