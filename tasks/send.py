"""Send saga tasks (sagas/send.py): prepare, execute, token (the two in one), refresh,
rollback; and the beat's proof-state watcher and stale-prepared canceller.

Each task runs one saga step and returns the Operation JSON; steps on an existing
operation run under its lock. Its events are relayed after the step returned, when
everything it wrote is committed. The token in a result never reaches the worker log
or task events (tasks/app.py: CashuTask).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from sagas import send as send_saga
from tasks import arguments as valid
from tasks.app import app
from tasks.context import saga_context
from tasks.events import request_relay
from tasks.steps import new_operation_id, run_locked_step, run_new_locked_step, run_step


@app.task(name="cashu.send.prepare")
def prepare(
    wallet: str,
    mint_url: str,
    amount: int,
    unit: str = "sat",
    memo: str | None = None,
    p2pk_pubkey: str | None = None,
    include_receiver_fee: bool = False,
    notify_task: str | None = None,
) -> dict[str, Any]:
    return run_step(
        send_saga.prepare,
        valid.wallet(wallet),
        valid.mint_url(mint_url),
        valid.amount(amount),
        valid.unit(unit),
        memo=valid.memo(memo),
        p2pk_pubkey=valid.p2pk_pubkey(p2pk_pubkey),
        include_receiver_fee=valid.flag(include_receiver_fee, "include_receiver_fee"),
        notify_task=valid.notify_task(notify_task),
    )


@app.task(name="cashu.send.execute")
def execute(operation_id: str, token_version: int = 4) -> dict[str, Any]:
    """Make the token: V4 (cashuB) by default, V3 (cashuA) on request."""
    operation_id, token_version = (
        valid.operation_id(operation_id),
        valid.token_version(token_version),
    )
    return run_locked_step(send_saga.execute, operation_id, token_version)


@app.task(name="cashu.send.token")
def token(
    wallet: str,
    mint_url: str,
    amount: int,
    unit: str = "sat",
    memo: str | None = None,
    p2pk_pubkey: str | None = None,
    include_receiver_fee: bool = False,
    token_version: int = 4,
    notify_task: str | None = None,
) -> dict[str, Any]:
    """prepare + execute in one step, under the lock of the operation it creates, for
    callers that need not see the fee first: the Operation with its token."""
    version = valid.token_version(token_version)
    arguments = (
        valid.wallet(wallet),
        valid.mint_url(mint_url),
        valid.amount(amount),
        valid.unit(unit),
        valid.memo(memo),
        valid.p2pk_pubkey(p2pk_pubkey),
        valid.flag(include_receiver_fee, "include_receiver_fee"),
        valid.notify_task(notify_task),
        version,
    )
    return run_new_locked_step(
        send_saga.token,
        partial(send_saga.execute, token_version=version),
        new_operation_id(*arguments),
        *arguments,
    )


@app.task(name="cashu.send.refresh")
def refresh(operation_id: str) -> dict[str, Any]:
    """Finalized once the mint reports the token's proofs spent."""
    return run_locked_step(send_saga.refresh, valid.operation_id(operation_id))


@app.task(name="cashu.send.rollback")
def rollback(operation_id: str) -> dict[str, Any]:
    """Cancel a prepared send, or reclaim a pending one (minus the swap fee)."""
    return run_locked_step(send_saga.rollback, valid.operation_id(operation_id))


# --- beat ------------------------------------------------------------------------------------


@app.task(name="cashu.beat.check_sends")
def check_sends() -> dict[str, int]:
    """Pending sends: one checkstate per mint per 100 proofs; claimed tokens finalize.

    {"checked", "finalized", "checkstate_calls"}.
    """
    counts = send_saga.watch_pending_sends(saga_context())
    if counts.get("finalized"):
        request_relay()
    return counts
