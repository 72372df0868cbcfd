"""Mint saga tasks (sagas/mint.py): prepare, import_quote, execute, refresh.

Each task runs one saga step and returns the Operation JSON; steps on an
existing operation run under its lock. The relay is sent after the step
returned, when everything it wrote is committed.
"""

from __future__ import annotations

from typing import Any

from sagas import mint as mint_saga
from tasks import arguments as valid
from tasks.app import app
from tasks.steps import run_locked_step, run_step


@app.task(name="cashu.mint.prepare")
def prepare(
    wallet: str,
    mint_url: str,
    amount: int,
    unit: str = "sat",
    method: str = "bolt11",
    notify_task: str | None = None,
) -> dict[str, Any]:
    return run_step(
        mint_saga.prepare,
        valid.wallet(wallet),
        valid.mint_url(mint_url),
        valid.amount(amount),
        valid.unit(unit),
        valid.method(method),
        notify_task=valid.notify_task(notify_task),
    )


@app.task(name="cashu.mint.import_quote")
def import_quote(
    wallet: str, mint_url: str, quote_id: str, notify_task: str | None = None
) -> dict[str, Any]:
    return run_step(
        mint_saga.import_quote,
        valid.wallet(wallet),
        valid.mint_url(mint_url),
        valid.quote_id(quote_id),
        notify_task=valid.notify_task(notify_task),
    )


@app.task(name="cashu.mint.execute")
def execute(operation_id: str) -> dict[str, Any]:
    return run_locked_step(mint_saga.execute, valid.operation_id(operation_id))


@app.task(name="cashu.mint.refresh")
def refresh(operation_id: str) -> dict[str, Any]:
    return run_locked_step(mint_saga.refresh, valid.operation_id(operation_id))
