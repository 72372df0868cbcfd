"""Operation queries: one by id, a wallet's list (newest first)."""

from __future__ import annotations

import uuid
from typing import Any

from models import Operation
from sagas.engine import list_operations, operation_view
from sagas.errors import OperationNotFoundError
from sagas.history import audit_trail
from tasks import arguments as valid
from tasks.app import app
from tasks.context import saga_context


@app.task(name="cashu.ops.get")
def get(operation_id: str) -> dict[str, Any] | None:
    """The Operation JSON, or None: no such operation (an id that is no UUID is none)."""
    try:
        op_id = valid.operation_id(operation_id)
    except OperationNotFoundError:
        return None
    with saga_context().uow() as session:
        op = session.get(Operation, uuid.UUID(op_id))
        return operation_view(op) if op is not None else None


@app.task(name="cashu.ops.audit")
def audit(operation_id: str) -> dict[str, Any]:
    """{"operation_id", "transitions": [{from, to, version, proofs, fee, error, at}]}: every
    transition, oldest first; proofs counts the operation's inputs ("in:<state>") and what
    it brought in ("out:<state>") as [count, sum]. Never a secret."""
    op_id = valid.operation_id(operation_id)
    with saga_context().uow() as session:
        if session.get(Operation, uuid.UUID(op_id)) is None:
            raise OperationNotFoundError(f"no operation {op_id}")
        return {"operation_id": op_id, "transitions": audit_trail(session, uuid.UUID(op_id))}


@app.task(name="cashu.ops.list")
def list_ops(
    wallet: str,
    kind: str | None = None,
    states: list[str] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> dict[str, Any]:
    wallet, kind, states = valid.wallet(wallet), valid.kind(kind), valid.states(states)
    limit, offset = valid.count(limit, "limit"), valid.count(offset, "offset")
    with saga_context().uow() as session:
        ops = list_operations(session, wallet, kind=kind, states=states, limit=limit, offset=offset)
        return {"operations": [operation_view(op) for op in ops]}
