"""Units other than sat, end to end: a usd wallet mints, sends, receives and pays an invoice
in usd, every balance exact in usd, the sat books untouched; a unit the mint does not offer
is UnsupportedUnitError and reserves nothing.

The mint offers sat and usd (docs/test-mint.md): it quotes a sat invoice
in usd cents, and its fees and change are in usd.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mint_harness import USD_SETTINGS, RunningMint, make_invoice
from saga_helpers import register_mint
from task_helpers import new_wallet_name

from sagas import melt as melt_saga
from sagas import mint as mint_saga
from sagas import receive as receive_saga
from sagas import send as send_saga
from sagas.engine import SagaContext
from sagas.errors import UnsupportedUnitError
from sagas.proofs import balance

pytestmark = pytest.mark.mint
USD = "usd"


@pytest.fixture
def usd_mint_url(saga_context: SagaContext, fresh_mint: Callable[..., RunningMint]) -> str:
    mint = fresh_mint(env_overrides=USD_SETTINGS)
    return register_mint(saga_context, mint.url)


def usd_balance(ctx: SagaContext, wallet: str) -> dict:
    with ctx.uow() as session:
        found = balance(session, wallet, unit=USD)
    return {k: found[k] for k in ("spendable", "reserved", "pending")}


def sat_total(ctx: SagaContext, wallet: str) -> int:
    with ctx.uow() as session:
        return balance(session, wallet)["total"]


def fund_usd(ctx: SagaContext, wallet: str, url: str, cents: int) -> None:
    op = mint_saga.prepare(ctx, wallet, url, cents, unit=USD)
    done = mint_saga.execute(ctx, op["id"])
    assert done["state"] == "finalized" and done["unit"] == USD


def test_a_usd_wallet_mints_sends_and_receives_in_usd(
    saga_context: SagaContext, usd_mint_url: str
) -> None:
    alice, bob = new_wallet_name("usd-a"), new_wallet_name("usd-b")
    fund_usd(saga_context, alice, usd_mint_url, 500)
    assert usd_balance(saga_context, alice) == {"spendable": 500, "reserved": 0, "pending": 0}

    sent = send_saga.token(saga_context, alice, usd_mint_url, 120, USD)
    received = receive_saga.redeem(saga_context, bob, sent["token"])

    assert sent["unit"] == received["unit"] == USD
    assert received["state"] == "finalized"
    assert usd_balance(saga_context, alice) == {
        "spendable": 500 - 120 - sent["fee"],
        "reserved": 0,
        "pending": 120,
    }
    assert usd_balance(saga_context, bob)["spendable"] == 120 - received["fee"]
    assert sat_total(saga_context, alice) == sat_total(saga_context, bob) == 0


def test_a_usd_wallet_pays_an_invoice_in_usd_within_its_fees(
    saga_context: SagaContext, usd_mint_url: str
) -> None:
    wallet = new_wallet_name("usd-melt")
    fund_usd(saga_context, wallet, usd_mint_url, 500)

    prepared = melt_saga.prepare(saga_context, wallet, usd_mint_url, make_invoice(100), unit=USD)
    paid = melt_saga.execute(saga_context, prepared["id"])

    assert prepared["unit"] == paid["unit"] == USD
    assert paid["state"] == "finalized", paid
    worst = prepared["fee_reserve"] + prepared["swap_fee"] + prepared["input_fee"]
    cost = 500 - prepared["amount"] - usd_balance(saga_context, wallet)["spendable"]
    assert 0 <= cost <= worst and paid["effective_fee"] == cost
    assert usd_balance(saga_context, wallet) == {
        "spendable": 500 - prepared["amount"] - cost,
        "reserved": 0,
        "pending": 0,
    }
    assert sat_total(saga_context, wallet) == 0


def test_a_melt_in_a_unit_the_mint_does_not_offer_is_refused_and_reserves_nothing(
    saga_context: SagaContext, usd_mint_url: str
) -> None:
    wallet = new_wallet_name("usd-eur")
    fund_usd(saga_context, wallet, usd_mint_url, 200)

    with pytest.raises(UnsupportedUnitError):
        melt_saga.prepare(saga_context, wallet, usd_mint_url, make_invoice(50), unit="eur")

    assert usd_balance(saga_context, wallet) == {"spendable": 200, "reserved": 0, "pending": 0}
