"""Operation queries: one by id, a wallet's list (newest first)."""

from __future__ import annotations

import uuid
from typing import Any

from models import Operation
from sagas.engine import list_operations, operation_view
from tasks.app import app
from tasks.context import saga_context


@app.task(name="cashu.ops.get")
def get(operation_id: str) -> dict[str, Any] | None:
    try:
        op_uuid = uuid.UUID(str(operation_id))
    except ValueError:
        return None
    with saga_context().uow() as session:
        op = session.get(Operation, op_uuid)
        return operation_view(op) if op is not None else None


@app.task(name="cashu.ops.list")
def list_ops(
    wallet: str,
    kind: str | None = None,
    states: list[str] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    if isinstance(states, str):
        states = [states]
    with saga_context().uow() as session:
        ops = list_operations(session, wallet, kind=kind, states=states, limit=limit, offset=offset)
        return {"operations": [operation_view(op) for op in ops]}
