"""The SagaContext the tasks run saga steps with."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache, partial

from models.db import unit_of_work
from nuts.client import MintClient, get_mint_client
from nuts.secrets import derive_wallet_seed, mnemonic_to_seed
from sagas.engine import SagaContext
from sagas.seed import check_seed, seed_fingerprint
from tasks.config import Settings, get_settings, master_mnemonic


@lru_cache(maxsize=1)
def get_master_mnemonic() -> str:
    return master_mnemonic(get_settings())


@lru_cache(maxsize=4096)
def wallet_seed(wallet: str) -> bytes:
    """The wallet's NUT-13 seed (derived once per process and wallet: PBKDF2 is slow)."""
    return derive_wallet_seed(get_master_mnemonic(), wallet)


def mint_client(url: str) -> MintClient:
    settings = get_settings()
    return get_mint_client(url, timeout=settings.mint_timeout, melt_timeout=settings.melt_timeout)


def check_master_seed() -> None:
    """SeedMismatchError unless this process holds the master seed the database's wallets
    derive from (the first process to ask stores its fingerprint)."""
    fingerprint = seed_fingerprint(mnemonic_to_seed(get_master_mnemonic()))
    with unit_of_work(get_settings().database_url) as session:
        check_seed(session, fingerprint)


@lru_cache(maxsize=1)
def saga_context() -> SagaContext:
    """The context of this process's steps, built once, after its seed was checked."""
    check_master_seed()
    return make_saga_context(get_settings())


def make_saga_context(settings: Settings) -> SagaContext:
    return SagaContext(
        uow=partial(unit_of_work, settings.database_url),
        mint_client=mint_client,
        wallet_seed=wallet_seed,
        network=settings.lightning_network,
        async_melts=settings.async_melts,
        handoff_grace=timedelta(seconds=settings.handoff_grace_seconds),
        prepared_max_age=timedelta(seconds=settings.prepared_max_age_seconds),
    )
