"""Wallet tasks: balances (more to come: info, check_proofs, restore)."""

from __future__ import annotations

from typing import Any

from nuts.client import normalize_mint_url
from sagas import proofs
from tasks.app import app
from tasks.context import saga_context


@app.task(name="cashu.wallet.balance")
def balance(wallet: str, mint_url: str | None = None, unit: str = "sat") -> dict[str, Any]:
    url = normalize_mint_url(mint_url) if mint_url else None
    with saga_context().uow() as session:
        return proofs.balance(session, wallet, mint_url=url, unit=unit)
