"""How a task runs a saga step: the one shape every public task shares.

`run_step` for a step that creates an operation; `run_locked_step` for a step on an
existing one, under its lock; `run_new_locked_step` for a one-call step that creates an
operation and carries on with it (the task picks the id, and the lock is held before
the operation exists). Either way its events are relayed afterwards, when everything the
step wrote is committed (docs/design.md section 6), and after the task's result went out
(tasks/events.py: request_relay). The task's log context (tasks/log_format.py) learns
the operation's id, and its wallet once the step returns it, for the task's remaining
log lines.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from celery import current_task

from tasks.config import get_settings
from tasks.context import saga_context
from tasks.events import request_relay
from tasks.locks import operation_lock
from tasks.log_format import bind

T = TypeVar("T")


def run_step(step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        result = step(saga_context(), *args, **kwargs)
        if isinstance(result, dict):  # the Operation JSON
            bind(operation_id=result.get("id"), wallet=result.get("wallet"))
        return result
    finally:
        request_relay()


def run_locked_step(step: Callable[..., T], operation_id: str, *args: Any, **kwargs: Any) -> T:
    bind(operation_id=operation_id)
    with operation_lock(operation_id, wait=_lock_wait()):
        return run_step(step, operation_id, *args, **kwargs)


def run_new_locked_step(
    step: Callable[..., T], operation_id: uuid.UUID, *args: Any, **kwargs: Any
) -> T:
    bind(operation_id=str(operation_id))
    with operation_lock(operation_id):
        return run_step(step, *args, operation_id=operation_id, **kwargs)


def _lock_wait() -> float:
    """A redelivered message's first delivery may have died holding the lock: wait out
    that lease instead of answering OperationInProgressError to a caller still waiting."""
    request = current_task.request if current_task else None
    delivery = getattr(request, "delivery_info", None) or {}
    return get_settings().lock_lease_seconds + 1 if delivery.get("redelivered") else 0.0
