"""Receive saga tasks (sagas/receive.py): prepare, execute, and redeem (both in one).

Each task returns the Operation JSON; execute runs under the operation's lock. The
relay is sent after the step returned. The token argument never reaches the worker log,
task events or the stored result's arguments (tasks/app.py: CashuTask).
"""

from __future__ import annotations

from typing import Any

from sagas import receive as receive_saga
from tasks import arguments as valid
from tasks.app import app
from tasks.steps import new_operation_id, run_locked_step, run_new_locked_step, run_step


@app.task(name="cashu.receive.prepare")
def prepare(
    wallet: str, token: str, trust_mint: bool = False, notify_task: str | None = None
) -> dict[str, Any]:
    """Check the token offline: amount, fee, mint_url. Nothing moves yet."""
    return run_step(
        receive_saga.prepare,
        valid.wallet(wallet),
        valid.token(token),
        valid.flag(trust_mint, "trust_mint"),
        notify_task=valid.notify_task(notify_task),
    )


@app.task(name="cashu.receive.execute")
def execute(operation_id: str) -> dict[str, Any]:
    """Swap the token into the wallet's own proofs; TokenAlreadySpentError if claimed."""
    return run_locked_step(receive_saga.execute, valid.operation_id(operation_id))


@app.task(name="cashu.receive.redeem")
def redeem(
    wallet: str, token: str, trust_mint: bool = False, notify_task: str | None = None
) -> dict[str, Any]:
    """prepare + execute in one step, under the lock of the operation it creates."""
    arguments = (
        valid.wallet(wallet),
        valid.token(token),
        valid.flag(trust_mint, "trust_mint"),
        valid.notify_task(notify_task),
    )
    new_id = new_operation_id(*arguments)
    op = run_new_locked_step(receive_saga.redeem, receive_saga.execute, new_id, *arguments)
    if op["id"] != str(new_id):  # the token's operation existed: finish it under its lock
        return execute.run(op["id"])
    return op
