"""The rule every saga keeps: no transaction is open while the mint is asked (a database
connection is never held across a network round trip, and a row lock never waits on a
mint). Each test walks one saga against the real mint with a context that records every
request made while one of its units of work is open."""

from __future__ import annotations

import pytest
from mint_harness import RunningMint, make_invoice
from saga_helpers import asking_outside_transactions, bal, register_mint

from sagas import melt as melt_saga
from sagas import mint as mint_saga
from sagas import receive as receive_saga
from sagas import restore as restore_saga
from sagas import send as send_saga
from sagas.engine import SagaContext, drive

pytestmark = pytest.mark.mint


@pytest.fixture
def watched(saga_context: SagaContext, test_mint: RunningMint):
    """(context, what it asked the mint and when, the mint's URL)."""
    url = register_mint(saga_context, test_mint.url)
    return (*asking_outside_transactions(saga_context), url)


def _funded(ctx: SagaContext, wallet: str, url: str, amount: int) -> None:
    op = mint_saga.prepare(ctx, wallet, url, amount)
    assert mint_saga.execute(ctx, op["id"])["state"] == "finalized"


def test_a_mint_asks_with_no_transaction_open(watched, wallet_id: str) -> None:
    ctx, watch, url = watched
    _funded(ctx, wallet_id, url, 64)
    assert watch.asked and watch.asked_inside == []
    assert bal(ctx, wallet_id)["spendable"] == 64


def test_a_send_and_its_receive_ask_with_no_transaction_open(watched, wallet_id: str) -> None:
    ctx, watch, url = watched
    _funded(ctx, wallet_id, url, 64)
    watch.clear()
    sent = send_saga.execute(ctx, send_saga.prepare(ctx, wallet_id, url, 10)["id"])
    received = receive_saga.redeem(ctx, wallet_id + "-b", sent["token"])
    assert received["state"] == "finalized"
    assert watch.asked and watch.asked_inside == []


def test_a_send_taken_back_asks_with_no_transaction_open(watched, wallet_id: str) -> None:
    ctx, watch, url = watched
    _funded(ctx, wallet_id, url, 64)
    sent = send_saga.execute(ctx, send_saga.prepare(ctx, wallet_id, url, 10)["id"])
    watch.clear()
    assert send_saga.rollback(ctx, sent["id"])["state"] == "rolled_back"
    assert watch.asked and watch.asked_inside == []


def test_a_melt_with_its_pre_swap_asks_with_no_transaction_open(watched, wallet_id: str) -> None:
    ctx, watch, url = watched
    _funded(ctx, wallet_id, url, 300)
    watch.clear()
    prepared = melt_saga.prepare(ctx, wallet_id, url, make_invoice(100))
    paid = drive(ctx, melt_saga.KIND, melt_saga.begin(ctx, prepared["id"]))
    assert paid["state"] == "finalized"
    assert watch.asked and watch.asked_inside == []


def test_a_restore_asks_with_no_transaction_open(watched, wallet_id: str) -> None:
    ctx, watch, url = watched
    _funded(ctx, wallet_id, url, 64)
    watch.clear()
    restore_saga.restore_wallet(ctx, wallet_id, url)
    assert watch.asked and watch.asked_inside == []
