"""Mint registry tasks: add (the one time an unregistered mint is contacted), trust, remove,
list."""

from __future__ import annotations

from typing import Any

from sagas import registry
from tasks import arguments as valid
from tasks.app import app
from tasks.context import saga_context


@app.task(name="cashu.mints.add")
def add(url: str, trusted: bool = True) -> dict[str, Any]:
    url, trusted = valid.mint_url(url, "url"), valid.flag(trusted, "trusted")
    return registry.add_mint(saga_context(), url, trusted)


@app.task(name="cashu.mints.set_trusted")
def set_trusted(url: str, trusted: bool) -> dict[str, Any]:
    url, trusted = valid.mint_url(url, "url"), valid.flag(trusted, "trusted")
    with saga_context().uow() as session:
        return registry.set_trusted(session, url, trusted)


@app.task(name="cashu.mints.remove")
def remove(url: str) -> dict[str, Any]:
    """Forget a mint that holds nothing of ours and has nothing open (MintInUseError
    otherwise: untrust it instead). Returns the mint as it was."""
    url = valid.mint_url(url, "url")
    with saga_context().uow() as session:
        return registry.remove_mint(session, url)


@app.task(name="cashu.mints.list")
def list_mints() -> dict[str, Any]:
    with saga_context().uow() as session:
        return {"mints": registry.list_mints(session)}


@app.task(name="cashu.beat.refresh_keysets")
def refresh_keysets() -> dict[str, Any]:
    """Keysets of every trusted mint, re-fetched and re-verified: {"refreshed", "failed"}."""
    return registry.refresh_all_keysets(saga_context())
