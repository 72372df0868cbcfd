"""Keysets follow the mint: one it no longer lists (a rotation, or another mint now at the
same URL) stays on record for the proofs of it we hold, but no new output is made for it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mint_harness import RunningMint, free_port
from saga_helpers import asking_outside_transactions, bal, fund, register_mint
from sqlalchemy import select
from task_helpers import new_wallet_name

from models import StoredKeyset
from sagas import registry
from sagas.engine import SagaContext

pytestmark = pytest.mark.mint


def keysets_at(ctx: SagaContext, url: str) -> dict[str, bool]:
    with ctx.uow() as session:
        rows = session.execute(
            select(StoredKeyset.id, StoredKeyset.active).where(StoredKeyset.mint_url == url)
        )
        return {row.id: row.active for row in rows}


def test_a_keyset_the_mint_no_longer_lists_is_made_inactive_and_minting_goes_on(
    saga_context: SagaContext, fresh_mint: Callable[..., RunningMint]
) -> None:
    port = free_port()
    first = fresh_mint(port=port, private_key="keyset-sync-first")
    url = register_mint(saga_context, first.url)
    wallet = new_wallet_name("rotated")
    fund(saga_context, wallet, url, 64)
    (old,) = keysets_at(saga_context, url)
    first.stop()

    fresh_mint(port=port, private_key="keyset-sync-second")  # another mint, the same URL
    register_mint(saga_context, url)
    fund(saga_context, wallet, url, 32)

    keysets = keysets_at(saga_context, url)
    assert keysets[old] is False  # kept, for the proofs of it we hold
    assert [active for kid, active in keysets.items() if kid != old] == [True]
    assert bal(saga_context, wallet)["spendable"] == 64 + 32


def test_adding_a_mint_asks_it_with_no_transaction_open(
    saga_context: SagaContext, test_mint: RunningMint
) -> None:
    watched, watch = asking_outside_transactions(saga_context)
    view = registry.add_mint(watched, test_mint.url)
    assert view["keysets"] and "/v1/keysets" in watch.asked
    assert watch.asked_inside == []


def test_syncing_keysets_asks_the_mint_with_no_transaction_open(
    saga_context: SagaContext, test_mint: RunningMint
) -> None:
    url = register_mint(saga_context, test_mint.url)
    watched, watch = asking_outside_transactions(saga_context)
    assert registry.sync_keysets(watched, url) and "/v1/keysets" in watch.asked
    assert watch.asked_inside == []
