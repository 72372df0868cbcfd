"""Melt saga tasks (sagas/melt.py): prepare, execute, pay (the two in one), refresh, cancel,
reclaim, get_by_quote; and the internal steps execute hands on to.

execute and pay are routed to the cashu.lightning queue (tasks/queues.py), where they do
the pre-flight check and the write-ahead and, when there is no pre-swap, the melt request
itself (with a mint that cannot pay in the background it waits for the payment there,
never on the queue everything else needs). A caller without the routes reaches cashu:
one that waits is handed over at once to `cashu.melt.step.begin` /
`cashu.melt.step.prepare_and_begin`, which do the same on cashu.lightning; with
wait=False the write-ahead is done here and the melt request is a step of its own. The
other steps: `cashu.melt.step.swap` (the pre-swap), `cashu.melt.step.pay` (the melt
request after it) and, while the payment is pending, `cashu.melt.step.check` (the quote's
state, a little later each time).
A caller that waits (`.get()`, a chain) gets the final Operation: each step replaces the
one before it (Task.replace). With wait=False it gets the operation as it stands, and the
steps go on beside it; its notify_task and the event stream tell how it ends.

execute and refresh also take (mint_url, quote_id) in place of an operation
id, as the older quote-keyed API did. Steps on an existing operation run under
its lock; the relay is sent once the step's transactions are committed.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from sagas import melt as melt_saga
from sagas.errors import OperationNotFoundError
from tasks import arguments as valid
from tasks.app import app
from tasks.context import saga_context
from tasks.queues import LIGHTNING_QUEUE
from tasks.steps import (
    hand_on,
    new_operation_id,
    polls_left,
    replaceable,
    run_locked_step,
    run_new_locked_step,
    run_step,
    step_lock_wait,
    step_signature,
)

KIND = melt_saga.KIND


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
    unit: str = "sat",
) -> dict[str, Any]:
    return run_step(
        melt_saga.prepare,
        valid.wallet(wallet),
        valid.mint_url(mint_url),
        valid.invoice(invoice),
        valid.method(method),
        valid.notify_task(notify_task),
        max_fee=valid.max_fee(max_fee),
        unit=valid.unit(unit),
    )


@app.task(name="cashu.melt.pay", bind=True)
def pay(
    self: Task,
    wallet: str,
    mint_url: str,
    invoice: str,
    method: str = "bolt11",
    max_fee: int | None = None,
    notify_task: str | None = None,
    wait: bool = True,
    unit: str = "sat",
) -> dict[str, Any]:
    """prepare + execute in one call, for callers that need not see the fees first;
    max_fee bounds them. A caller that waits is handed over to the melt's queue at once."""
    arguments = _pay_arguments(wallet, mint_url, invoice, method, max_fee, notify_task, unit)
    wait = valid.flag(wait, "wait")
    if wait and _sent_elsewhere(self):
        return self.replace(app.signature("cashu.melt.step.prepare_and_begin", kwargs=arguments))
    return _prepare_and_begin(self, arguments, wait)


@app.task(name="cashu.melt.execute", bind=True)
def execute(
    self: Task,
    operation_id: str | None = None,
    mint_url: str | None = None,
    quote_id: str | None = None,
    wait: bool = True,
) -> dict[str, Any]:
    """A caller that waits is handed over to the melt's queue at once; one that does not
    gets the operation once its write-ahead is committed."""
    wait = valid.flag(wait, "wait")
    op_id = _operation_id(operation_id, mint_url, quote_id)
    if wait and _sent_elsewhere(self):
        return self.replace(step_signature(KIND, "begin", op_id, wait=True))
    return _begin(self, op_id, wait)


def _sent_elsewhere(task: Task) -> bool:
    """Whether a caller that waits is to be handed over to the melt's queue: its call
    reached another queue (the routes send it to cashu.lightning; a caller without them
    reaches cashu), and it is not running eagerly in its caller's process."""
    delivered_to = (task.request.delivery_info or {}).get("routing_key")
    return replaceable(task) and delivered_to != LIGHTNING_QUEUE


def _pay_arguments(
    wallet: object,
    mint_url: object,
    invoice: object,
    method: object,
    max_fee: object,
    notify_task: object,
    unit: object,
) -> dict[str, Any]:
    return {
        "wallet": valid.wallet(wallet),
        "mint_url": valid.mint_url(mint_url),
        "invoice": valid.invoice(invoice),
        "method": valid.method(method),
        "max_fee": valid.max_fee(max_fee),
        "notify_task": valid.notify_task(notify_task),
        "unit": valid.unit(unit),
    }


def _begin(task: Task, op_id: str, wait: bool) -> dict[str, Any]:
    """As a public call does: a lock another holds is OperationInProgressError at once.
    On the melt's queue (wait), the melt request follows in the same task when there is no
    pre-swap; otherwise it is a step of its own there."""
    step = melt_saga.begin_and_pay if wait else melt_saga.begin
    return hand_on(task, KIND, run_locked_step(step, op_id), wait=wait)


def _prepare_and_begin(task: Task, arguments: dict[str, Any], wait: bool) -> dict[str, Any]:
    step, resume = (
        (melt_saga.prepare_begin_and_pay, melt_saga.begin_and_pay)
        if wait
        else (melt_saga.prepare_and_begin, melt_saga.begin)
    )
    progress = run_new_locked_step(
        step,
        resume,
        new_operation_id(*arguments.values()),
        arguments["wallet"],
        arguments["mint_url"],
        arguments["invoice"],
        arguments["method"],
        arguments["notify_task"],
        arguments["max_fee"],
        arguments["unit"],
    )
    return hand_on(task, KIND, progress, wait=wait)


@app.task(name="cashu.melt.refresh", bind=True)
def refresh(
    self: Task,
    operation_id: str | None = None,
    mint_url: str | None = None,
    quote_id: str | None = None,
) -> dict[str, Any]:
    """The quote's state now; a melt whose request never left is handed on to its step."""
    op_id = _operation_id(operation_id, mint_url, quote_id)
    progress = run_locked_step(melt_saga.check, op_id)
    return hand_on(self, KIND, progress, wait=True, until=("check",))


# --- the steps execute hands on to (internal: callers use execute or pay) ----------------------
# A caller that waits hands its melt over to them at once: everything a melt does at the
# mint runs on the cashu.lightning queue, and a burst of payments never queues before other
# users' work on cashu.


@app.task(name="cashu.melt.step.prepare_and_begin", bind=True)
def prepare_and_begin_step(
    self: Task,
    wallet: str,
    mint_url: str,
    invoice: str,
    method: str = "bolt11",
    max_fee: int | None = None,
    notify_task: str | None = None,
    unit: str = "sat",
) -> dict[str, Any]:
    arguments = _pay_arguments(wallet, mint_url, invoice, method, max_fee, notify_task, unit)
    return _prepare_and_begin(self, arguments, wait=True)


@app.task(name="cashu.melt.step.begin", bind=True)
def begin_step(self: Task, operation_id: str, wait: bool = True) -> dict[str, Any]:
    return _begin(self, valid.operation_id(operation_id), valid.flag(wait, "wait"))


@app.task(name="cashu.melt.step.swap", bind=True)
def swap_step(self: Task, operation_id: str, wait: bool = True) -> dict[str, Any]:
    return _step(self, melt_saga.swap, operation_id, wait)


@app.task(name="cashu.melt.step.pay", bind=True)
def pay_step(self: Task, operation_id: str, wait: bool = True) -> dict[str, Any]:
    return _step(self, melt_saga.pay_step, operation_id, wait)


@app.task(name="cashu.melt.step.check", bind=True)
def check_step(
    self: Task, operation_id: str, wait: bool = True, attempt: int = 0
) -> dict[str, Any]:
    """Poll `attempt` of a pending payment (0 the first, right after the melt request)."""
    next_poll = valid.count(attempt, "attempt") + 1
    return _step(self, melt_saga.check, operation_id, wait, next_poll)


def _step(
    task: Task, step: Any, operation_id: object, wait: object, next_poll: int = 0
) -> dict[str, Any]:
    op_id, wait = valid.operation_id(operation_id), valid.flag(wait, "wait")
    progress = run_locked_step(step, op_id, lock_wait=step_lock_wait())
    if progress.next_step == "check" and not polls_left(next_poll):
        return progress.view  # pending past the melt timeout: the beat's poller goes on
    return hand_on(task, KIND, progress, wait=wait, attempt=next_poll)


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
