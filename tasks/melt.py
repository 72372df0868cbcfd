"""Melt saga tasks (sagas/melt.py): prepare, execute, pay (the two in one), refresh, cancel,
reclaim, get_by_quote.

execute and refresh also take (mint_url, quote_id) in place of an operation
id, as the older quote-keyed API did. Steps on an existing operation run under
its lock; the relay is sent once the step's transactions are committed.
"""

from __future__ import annotations

import uuid
from typing import Any

from sagas import melt as melt_saga
from sagas.errors import OperationNotFoundError
from tasks import arguments as valid
from tasks.app import app
from tasks.context import saga_context
from tasks.steps import run_locked_step, run_new_locked_step, run_step


def _operation_id(operation_id: object, mint_url: object, quote_id: object) -> str:
    """The operation named by its id, or by (mint_url, quote_id), each argument checked."""
    operation_id = valid.operation_id(operation_id, optional=True)
    mint_url = valid.mint_url(mint_url, optional=True)
    quote_id = valid.quote_id(quote_id, optional=True)
    if operation_id:
        return operation_id
    if mint_url and quote_id:
        found = melt_saga.get_by_quote(saga_context(), mint_url, quote_id)
        if found is None:
            raise OperationNotFoundError(f"no melt operation for quote {quote_id} at {mint_url}")
        return found["id"]
    raise OperationNotFoundError("give operation_id, or mint_url and quote_id")


@app.task(name="cashu.melt.prepare")
def prepare(
    wallet: str,
    mint_url: str,
    invoice: str,
    method: str = "bolt11",
    notify_task: str | None = None,
    max_fee: int | None = None,
) -> dict[str, Any]:
    return run_step(
        melt_saga.prepare,
        valid.wallet(wallet),
        valid.mint_url(mint_url),
        valid.invoice(invoice),
        valid.method(method),
        valid.notify_task(notify_task),
        max_fee=valid.max_fee(max_fee),
    )


@app.task(name="cashu.melt.pay")
def pay(
    wallet: str,
    mint_url: str,
    invoice: str,
    method: str = "bolt11",
    max_fee: int | None = None,
    notify_task: str | None = None,
) -> dict[str, Any]:
    """prepare + execute in one step, under the lock of the operation it creates, for
    callers that need not see the fees first; max_fee bounds them."""
    return run_new_locked_step(
        melt_saga.pay,
        uuid.uuid4(),
        valid.wallet(wallet),
        valid.mint_url(mint_url),
        valid.invoice(invoice),
        valid.method(method),
        valid.notify_task(notify_task),
        valid.max_fee(max_fee),
    )


@app.task(name="cashu.melt.execute")
def execute(
    operation_id: str | None = None, mint_url: str | None = None, quote_id: str | None = None
) -> dict[str, Any]:
    op_id = _operation_id(operation_id, mint_url, quote_id)
    return run_locked_step(melt_saga.execute, op_id)


@app.task(name="cashu.melt.refresh")
def refresh(
    operation_id: str | None = None, mint_url: str | None = None, quote_id: str | None = None
) -> dict[str, Any]:
    op_id = _operation_id(operation_id, mint_url, quote_id)
    return run_locked_step(melt_saga.refresh, op_id)


@app.task(name="cashu.melt.cancel")
def cancel(operation_id: str) -> dict[str, Any]:
    return run_locked_step(melt_saga.cancel, valid.operation_id(operation_id))


@app.task(name="cashu.melt.reclaim")
def reclaim(operation_id: str) -> dict[str, Any]:
    return run_locked_step(melt_saga.reclaim, valid.operation_id(operation_id))


@app.task(name="cashu.melt.get_by_quote")
def get_by_quote(mint_url: str, quote_id: str) -> dict[str, Any] | None:
    return melt_saga.get_by_quote(
        saga_context(), valid.mint_url(mint_url), valid.quote_id(quote_id)
    )
