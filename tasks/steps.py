"""How a task runs a saga step: the one shape every public task shares.

`run_step` for a step that creates an operation; `run_locked_step` for a step on an
existing one, under its lock; `run_new_locked_step` for a one-call step that creates an
operation and carries on with it (the task picks the id, and the lock is held before
the operation exists). A step that leaves a next step (a sagas.engine.Progress) has it
run as a task of its own by `hand_on`, once its lock is released. Either way its events
are relayed afterwards, when everything the step wrote is committed (docs/design.md
section 6), and after the task's result went out (tasks/events.py: request_relay). The
task's log context (tasks/log_format.py) learns the operation's id, and its wallet once
the step returns it, for the task's remaining log lines.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Task, current_task
from celery.canvas import Signature

from nuts.errors import CashuError
from sagas import melt as melt_saga
from sagas import send as send_saga
from sagas.engine import Progress, operation_exists
from sagas.recovery import POLL_STEP
from tasks.app import app
from tasks.config import get_settings
from tasks.context import saga_context
from tasks.events import request_relay
from tasks.locks import operation_lock
from tasks.log_format import bind

T = TypeVar("T")
ONE_CALL_NAMESPACE = uuid.UUID("6f1c1f2e-9b0a-4d47-8a43-2f3cbb0c5d11")
# The operations that hold funds while prepared, and how each lets them go.
CANCEL_PREPARED: dict[str, Callable[..., dict[str, Any]]] = {
    "send": send_saga.cancel,
    "melt": melt_saga.cancel,
}


def run_step(step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        result = step(saga_context(), *args, **kwargs)
        view = result.view if isinstance(result, Progress) else result
        if isinstance(view, dict):  # the Operation JSON
            bind(operation_id=view.get("id"), wallet=view.get("wallet"))
        return result
    finally:
        request_relay()


def run_locked_step(
    step: Callable[..., T], operation_id: str, *args: Any, lock_wait: float = 0.0, **kwargs: Any
) -> T:
    """`lock_wait`: how long to wait for the lock (a step handed on waits out a sweep that
    holds it for a moment); a redelivered message always waits out a dead holder's lease."""
    bind(operation_id=operation_id)
    with operation_lock(operation_id, wait=max(lock_wait, _lock_wait())):
        return run_step(step, operation_id, *args, **kwargs)


def hand_on(
    task: Task,
    kind: str,
    progress: Progress,
    *,
    wait: bool,
    until: tuple[str, ...] = (),
    attempt: int = 0,
) -> dict[str, Any]:
    """Run the operation's next step as a task of its own: in place of this one when the
    caller waits for the outcome (Task.replace gives the step this task's id, chain and
    callbacks, so `.get()` and a chain see the final Operation), beside it when the
    caller said it does not wait (it gets the operation as it stands; events follow)."""
    if progress.next_step is None or progress.next_step in until:
        return progress.view
    signature = step_signature(kind, progress.next_step, progress.view["id"], wait, attempt)
    if wait and replaceable(task):
        return task.replace(signature)  # raises Ignore: the step answers the caller
    signature.apply_async()
    return progress.view


def replaceable(task: Task) -> bool:
    """Whether `task` can hand its caller over to another task (Task.replace): not when it
    runs eagerly, in its caller's process."""
    return bool(task.request.id) and not task.request.is_eager


def step_signature(
    kind: str, step: str, operation_id: str, wait: bool, attempt: int = 0
) -> Signature:
    """`cashu.<kind>.step.<step>` for the operation. A poll waits a little longer each time."""
    kwargs: dict[str, Any] = {"operation_id": operation_id, "wait": wait}
    options: dict[str, Any] = {}
    if step == POLL_STEP:
        kwargs["attempt"] = attempt
        options["countdown"] = poll_delay(attempt)
    return app.signature(f"cashu.{kind}.step.{step}", kwargs=kwargs, **options)


def poll_delay(attempt: int) -> float:
    """0.1 s, doubling, at most 5 s: a fast payment is seen at once, a slow one costs little."""
    return min(5.0, 0.1 * 2 ** min(attempt, 10))


def polls_left(attempt: int) -> bool:
    """Whether poll `attempt` still falls within the melt timeout; after it, the beat's
    poller settles the operation."""
    return sum(poll_delay(n) for n in range(attempt)) < get_settings().melt_timeout


def step_lock_wait() -> float:
    """A step handed on may meet a sweep holding the lock for one request."""
    return get_settings().lock_lease_seconds + 1


def run_new_locked_step(
    step: Callable[..., T],
    resume: Callable[..., T],
    operation_id: uuid.UUID,
    *args: Any,
    **kwargs: Any,
) -> T:
    """A one-call step that creates the operation `operation_id` (new_operation_id), under
    its lock; `resume(ctx, operation_id)` carries on with it when an earlier delivery of
    this message created it already."""
    bind(operation_id=str(operation_id))
    with operation_lock(operation_id, wait=_lock_wait()):
        if operation_exists(saga_context(), operation_id):
            return run_step(resume, operation_id)
        return run_step(step, *args, operation_id=operation_id, **kwargs)


def new_operation_id(*arguments: object) -> uuid.UUID:
    """The id a one-call task gives the operation it creates: derived from the task's own id
    and its arguments, so a message delivered again after its worker died finds the
    operation its first delivery created, instead of sending or paying a second time. The
    wallet is among the arguments: reusing a task id never reaches another wallet's
    operation. Outside a task, a fresh id."""
    request = current_task.request if current_task else None
    if request is None or not request.id:
        return uuid.uuid4()
    name = json.dumps([request.id, request.task, *arguments], default=str)
    return uuid.uuid5(ONE_CALL_NAMESPACE, name)


def _lock_wait() -> float:
    """A redelivered message's first delivery may have died holding the lock: wait out
    that lease instead of answering OperationInProgressError to a caller still waiting."""
    request = current_task.request if current_task else None
    delivery = getattr(request, "delivery_info", None) or {}
    return get_settings().lock_lease_seconds + 1 if delivery.get("redelivered") else 0.0


def cancel_what_a_chain_prepared(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """A step that refused its own arguments was handed the Operation its predecessor in a
    chain prepared: the chain has failed, so a send or melt still prepared releases its
    inputs now instead of holding them until the stale-prepared sweep (a day). An id passed
    by hand is a caller's own to retry with better arguments, and is left alone."""
    handed = args[0] if args else kwargs.get("operation_id")
    if not (isinstance(handed, dict) and handed.get("state") == "prepared"):
        return
    cancel = CANCEL_PREPARED.get(handed.get("kind"))  # type: ignore[arg-type]
    try:
        operation_id = str(uuid.UUID(str(handed.get("id"))))
        if cancel is not None:
            with operation_lock(operation_id):
                cancel(saga_context(), operation_id)
    except (ValueError, CashuError):  # no such operation, it moved on, or someone holds it
        return
    finally:
        request_relay()
