"""Wallet tasks: balances, the wallet's public key, restore from the seed, reconciliation."""

from __future__ import annotations

from typing import Any

from nuts.secrets import wallet_p2pk_key
from sagas import proofs
from sagas import restore as restore_saga
from tasks import arguments as valid
from tasks.app import app
from tasks.context import saga_context, wallet_seed
from tasks.events import request_relay
from tasks.locks import operation_lock


@app.task(name="cashu.wallet.balance")
def balance(wallet: str, mint_url: str | None = None, unit: str = "sat") -> dict[str, Any]:
    wallet, url, unit = (
        valid.wallet(wallet),
        valid.mint_url(mint_url, optional=True),
        valid.unit(unit),
    )
    with saga_context().uow() as session:
        return proofs.balance(session, wallet, mint_url=url, unit=unit)


@app.task(name="cashu.wallet.info")
def info(wallet: str) -> dict[str, Any]:
    """{"wallet", "pubkey"}: the wallet's P2PK public key (compressed, hex), for senders to
    lock tokens to. Derived from the wallet's seed, so it never changes."""
    key = wallet_p2pk_key(wallet_seed(valid.wallet(wallet)))
    return {"wallet": wallet, "pubkey": key.public_key.format().hex()}


@app.task(name="cashu.wallet.restore")
def restore(mint_url: str, wallet: str = "default") -> dict[str, Any]:
    """NUT-09/13: every proof of the wallet at the mint, from its seed alone."""
    mint_url, wallet = valid.mint_url(mint_url), valid.wallet(wallet)
    return restore_saga.restore_wallet(saga_context(), wallet, mint_url)


@app.task(name="cashu.wallet.check_proofs")
def check_proofs(wallet: str, mint_url: str, token: str | None = None) -> dict[str, Any]:
    """NUT-07: our stored proof states against the mint's, discrepancies classified and the
    safe ones corrected (sagas/reconcile.py); `token`: proofs from outside (a backup, a
    token) to check as well, those we do not hold reported as PROOF_NOT_IN_DB. An operation
    it settles (a claimed send, a paid melt) is settled under that operation's lock."""
    wallet, mint_url = valid.wallet(wallet), valid.mint_url(mint_url)
    token = None if token is None else valid.token(token)
    report = restore_saga.check_proofs(
        saga_context(), wallet, mint_url, token=token, lock=operation_lock
    )
    if report["settled"]:
        request_relay()  # the settled operations' events: published once this task returns
    return report
