"""History: a wallet's operations as entries, newest first (sagas/history.py)."""

from __future__ import annotations

from typing import Any

from sagas.history import history
from tasks import arguments as valid
from tasks.app import app
from tasks.context import saga_context


@app.task(name="cashu.history.list")
def list_history(wallet: str, limit: int = 25, offset: int = 0) -> dict[str, Any]:
    """{"entries": [...]}: no tokens, outputs or secrets, only amounts, fees and states."""
    wallet, limit, offset = (
        valid.wallet(wallet),
        valid.count(limit, "limit"),
        valid.count(offset, "offset"),
    )
    with saga_context().uow() as session:
        return {"entries": history(session, wallet, limit=limit, offset=offset)}
