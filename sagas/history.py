"""History: a wallet's operations as entries, derived from the operations table.

No table of its own: each operation is one entry, newest first. An entry carries what a
user's statement would show and nothing that spends money: no token, proofs, outputs or
secrets (only the fields below are ever read from Operation.data).

    {operation_id, kind, type, state, amount, unit, mint_url, fee, direction,
     change_amount (melt), created_at, updated_at, finalized_at, error}

type is the entry's transaction type: minted, melted, sent, received. A melt's change
comes back inside its own entry (change_amount; its fee is net of it), not as an entry of
its own, so the sum rule below holds per entry.

amount is what moved before fees (send: the amount asked for; receive: what the token was
worth, its fee not yet taken; mint/melt: the quote's amount). Once every operation of a
wallet has settled, the amounts of its finalized ones (in minus out) minus all fees is
its balance, for wallets that send and receive alike (tests/test_history.py checks this
to the sat).
fee is what the operation costs the wallet in fees:
    mint     0
    receive  "fee" (the swap fee) once finalized; 0 before (nothing paid yet) and once
             failed or rolled back (nothing moved)
    send     "fee" (the swap fee, 0 when proofs went out as they were) + "receiver_fee"
             (the receiver's swap fee, when the sender pays it); rolled back: 0 when
             cancelled before anything moved, "fee" + "reclaim_fee" once reclaimed
    melt     "effective_fee" once known; while open "fee_reserve" + "swap_fee" +
             "input_fee" (the most it can cost); terminal without "effective_fee": 0
direction is "in" for mint and receive, "out" for send and melt. error is the error code
or null.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import AuditRecord, Operation
from sagas.engine import SPECS, list_operations

if TYPE_CHECKING:  # the sagas' data records, for types only: importing a saga registers it
    from sagas.melt import MeltData
    from sagas.receive import ReceiveData
    from sagas.send import SendData

DIRECTION = {"mint": "in", "receive": "in", "send": "out", "melt": "out"}
TRANSACTION_TYPE = {"mint": "minted", "receive": "received", "send": "sent", "melt": "melted"}
TERMINAL = frozenset({"finalized", "rolled_back", "failed"})  # kinds not registered here


def history(session: Session, wallet: str, limit: int = 25, offset: int = 0) -> list[dict]:
    """The wallet's history entries, newest first (limit capped like cashu.ops.list)."""
    return [
        history_entry(op) for op in list_operations(session, wallet, limit=limit, offset=offset)
    ]


def history_entry(op: Operation) -> dict[str, Any]:
    data = op.data or {}
    entry = {
        "operation_id": str(op.id),
        "kind": op.kind,
        "type": TRANSACTION_TYPE.get(op.kind),
        "state": op.state,
        "amount": (
            _int(cast("ReceiveData", data).get("token_amount"))
            if op.kind == "receive"
            else op.amount
        ),
        "unit": op.unit,
        "mint_url": op.mint_url,
        "fee": operation_fee(op),
        "direction": DIRECTION.get(op.kind),
        "created_at": _iso(op.created_at),
        "updated_at": _iso(op.updated_at),
        "finalized_at": _iso(op.finalized_at),
        "error": op.error_code,
    }
    if op.kind == "melt":
        entry["change_amount"] = _int(cast("MeltData", data).get("change_amount"))
    return entry


def audit_trail(session: Session, operation_id: uuid.UUID) -> list[dict[str, Any]]:
    """Every transition of the operation, oldest first (the append-only audit records)."""
    rows = session.scalars(
        select(AuditRecord).where(AuditRecord.operation_id == operation_id).order_by(AuditRecord.id)
    )
    return [
        {
            "from": row.from_state,
            "to": row.to_state,
            "version": row.version,
            "proofs": row.proofs,
            "fee": row.fee,
            "error": row.error_code,
            "at": _iso(row.at),
        }
        for row in rows
    ]


def operation_fee(op: Operation) -> int:
    data = op.data or {}
    if op.kind == "send":
        send = cast("SendData", data)
        if op.state != "rolled_back":
            return _int(send.get("fee")) + _int(send.get("receiver_fee"))
        if "reclaim_fee" in send:
            return _int(send.get("fee")) + _int(send.get("reclaim_fee"))
        return 0  # cancelled while prepared, or the mint refused the swap: nothing paid
    if op.kind == "receive":
        return _int(cast("ReceiveData", data).get("fee")) if op.state == "finalized" else 0
    if op.kind == "melt":
        melt = cast("MeltData", data)
        if "effective_fee" in melt:
            return _int(melt.get("effective_fee"))
        if op.state in _terminal(op.kind):
            return 0
        return (
            _int(melt.get("fee_reserve")) + _int(melt.get("swap_fee")) + _int(melt.get("input_fee"))
        )
    return 0  # mint: the invoice is the amount


def _terminal(kind: str) -> frozenset[str]:
    spec = SPECS.get(kind)
    return spec.terminal if spec is not None else TERMINAL


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
