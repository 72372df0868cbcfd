"""How a task runs a saga step: the one shape every public task shares.

`run_step` for a step that creates an operation; `run_locked_step` for a step
on an existing one, under its lock. Either way the relay is sent afterwards,
when everything the step wrote is committed (DESIGN.md section 6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from tasks.context import saga_context
from tasks.events import send_relay
from tasks.locks import operation_lock

T = TypeVar("T")


def run_step(step: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return step(saga_context(), *args, **kwargs)
    finally:
        send_relay()


def run_locked_step(step: Callable[..., T], operation_id: str, *args: Any, **kwargs: Any) -> T:
    with operation_lock(operation_id):
        return run_step(step, operation_id, *args, **kwargs)
