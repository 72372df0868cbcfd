"""History derived from operations (sagas/history.py), on operations made by the sagas
against a real mint (input fee 100 ppk). Every test ends on balances."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from mint_harness import RunningMint
from nutshell_wallet import nutshell_receive

from models import Operation
from sagas import mint as mint_saga
from sagas import receive as receive_saga
from sagas import registry
from sagas import send as send_saga
from sagas.engine import SagaContext
from sagas.errors import InvalidRequestError
from sagas.history import history, history_entry
from sagas.proofs import balance

pytestmark = pytest.mark.mint

ENTRY_KEYS = {
    "operation_id",
    "kind",
    "type",
    "state",
    "amount",
    "unit",
    "mint_url",
    "fee",
    "direction",
    "created_at",
    "updated_at",
    "finalized_at",
    "error",
}
TOKEN = re.compile(r"cashu[AB][A-Za-z0-9_\-+/=]+")


@pytest.fixture
def mint_url(saga_context: SagaContext, test_mint: RunningMint) -> str:
    return registry.add_mint(saga_context, test_mint.url)["url"]


def fund(ctx: SagaContext, wallet: str, url: str, amount: int) -> dict:
    op = mint_saga.prepare(ctx, wallet, url, amount)
    done = mint_saga.execute(ctx, op["id"])
    assert done["state"] == "finalized"
    return done


def entries(ctx: SagaContext, wallet: str, **kwargs: int) -> list[dict]:
    with ctx.uow() as session:
        return history(session, wallet, **kwargs)


def total(ctx: SagaContext, wallet: str) -> int:
    with ctx.uow() as session:
        bal = balance(session, wallet)
    assert bal["reserved"] == 0 and bal["pending"] == 0, bal
    return bal["total"]


def assert_no_secrets(items: list[dict]) -> None:
    text = json.dumps(items)
    assert not TOKEN.search(text)
    for entry in items:
        melt_only = {"change_amount"} if entry["kind"] == "melt" else set()
        assert set(entry) == ENTRY_KEYS | melt_only


def test_history_tells_each_operation_newest_first_and_adds_up_to_the_balance(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    ctx, alice, bob = saga_context, wallet_id, f"{wallet_id}-bob"
    minted = fund(ctx, alice, mint_url, 1000)
    sent = send_saga.prepare(ctx, alice, mint_url, 100, memo="lunch")
    token = send_saga.execute(ctx, sent["id"])["token"]
    received = receive_saga.redeem(ctx, bob, token)
    assert send_saga.refresh(ctx, sent["id"])["state"] == "finalized"
    cancelled = send_saga.prepare(ctx, alice, mint_url, 20)
    send_saga.rollback(ctx, cancelled["id"])
    reclaimed = send_saga.prepare(ctx, alice, mint_url, 21)
    send_saga.execute(ctx, reclaimed["id"])
    reclaim = send_saga.rollback(ctx, reclaimed["id"])
    assert reclaim["state"] == "rolled_back"

    items = entries(ctx, alice)

    assert_no_secrets(items)
    assert [(e["operation_id"], e["kind"], e["state"], e["direction"]) for e in items] == [
        (reclaimed["id"], "send", "rolled_back", "out"),
        (cancelled["id"], "send", "rolled_back", "out"),
        (sent["id"], "send", "finalized", "out"),
        (minted["id"], "mint", "finalized", "in"),
    ]
    by_id = {e["operation_id"]: e for e in items}
    assert by_id[minted["id"]] | {"created_at": None, "updated_at": None} == {
        "operation_id": minted["id"],
        "kind": "mint",
        "type": "minted",
        "state": "finalized",
        "amount": 1000,
        "unit": "sat",
        "mint_url": mint_url,
        "fee": 0,
        "direction": "in",
        "created_at": None,
        "updated_at": None,
        "finalized_at": minted["finalized_at"],
        "error": None,
    }
    assert (by_id[sent["id"]]["amount"], by_id[sent["id"]]["fee"]) == (100, sent["fee"])
    assert by_id[sent["id"]]["finalized_at"] is not None
    assert (by_id[cancelled["id"]]["amount"], by_id[cancelled["id"]]["fee"]) == (20, 0)
    assert by_id[reclaimed["id"]]["fee"] == reclaimed["fee"] + reclaim["reclaim_fee"]
    assert all(e["unit"] == "sat" and e["mint_url"] == mint_url for e in items)
    assert all(e["created_at"] <= e["updated_at"] for e in items)
    # settled in - out - fees is the balance, to the sat
    moved = sum(
        e["amount"] if e["direction"] == "in" else -e["amount"]
        for e in items
        if e["state"] == "finalized"
    )
    assert (
        moved - sum(e["fee"] for e in items)
        == total(ctx, alice)
        == 1000 - 100 - sent["fee"] - (reclaimed["fee"] + reclaim["reclaim_fee"])
    )

    bob_items = entries(ctx, bob)
    assert_no_secrets(bob_items)
    assert [(e["operation_id"], e["kind"], e["direction"]) for e in bob_items] == [
        (received["id"], "receive", "in")
    ]
    assert bob_items[0]["amount"] == 100  # what the token was worth; its fee apart
    assert bob_items[0]["fee"] == received["fee"] == 1
    assert bob_items[0]["state"] == "finalized" and bob_items[0]["error"] is None
    assert bob_items[0]["amount"] - bob_items[0]["fee"] == total(ctx, bob) == 99


def test_history_pages_and_keeps_wallets_apart(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    ctx = saga_context
    ops = [fund(ctx, wallet_id, mint_url, amount) for amount in (1, 2, 4)]
    fund(ctx, f"{wallet_id}-other", mint_url, 8)

    assert [e["amount"] for e in entries(ctx, wallet_id)] == [4, 2, 1]
    assert [e["operation_id"] for e in entries(ctx, wallet_id, limit=1, offset=1)] == [ops[1]["id"]]
    assert entries(ctx, wallet_id, offset=3) == []
    assert entries(ctx, f"{wallet_id}-nobody") == []
    with pytest.raises(InvalidRequestError):
        entries(ctx, wallet_id, limit=-1)
    assert total(ctx, wallet_id) == 7
    assert total(ctx, f"{wallet_id}-other") == 8


def test_a_failed_receive_shows_its_error_and_costs_nothing(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    ctx, bob = saga_context, f"{wallet_id}-bob"
    fund(ctx, wallet_id, mint_url, 64)
    sent = send_saga.prepare(ctx, wallet_id, mint_url, 30)
    token = send_saga.execute(ctx, sent["id"])["token"]
    prepared_bob = receive_saga.prepare(ctx, bob, token)
    assert nutshell_receive(mint_url, token) == 30 - 1  # claimed elsewhere first

    with pytest.raises(Exception) as caught:
        receive_saga.execute(ctx, prepared_bob["id"])

    assert type(caught.value).__name__ == "TokenAlreadySpentError"
    [entry] = entries(ctx, bob)
    assert (entry["state"], entry["error"], entry["fee"]) == ("failed", "TOKEN_ALREADY_SPENT", 0)
    assert entry["finalized_at"] is not None
    assert total(ctx, bob) == 0
    assert send_saga.refresh(ctx, sent["id"])["state"] == "finalized"
    assert total(ctx, wallet_id) == 64 - 30 - sent["fee"]


def test_an_open_receive_reports_no_fee_it_has_not_paid(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    ctx, bob = saga_context, f"{wallet_id}-bob"
    fund(ctx, wallet_id, mint_url, 64)
    token = send_saga.token(ctx, wallet_id, mint_url, 30)["token"]

    prepared = receive_saga.prepare(ctx, bob, token)

    [entry] = entries(ctx, bob)
    assert (entry["state"], entry["amount"], entry["fee"]) == ("prepared", 30, 0)
    assert prepared["fee"] == 1  # what receiving it will cost, reported by prepare


@pytest.mark.parametrize(
    ("state", "data", "fee"),
    [
        ("prepared", {"fee_reserve": 2, "swap_fee": 1, "input_fee": 1}, 4),
        ("pending", {"fee_reserve": 2, "swap_fee": 0, "input_fee": 1}, 3),
        ("finalized", {"fee_reserve": 2, "swap_fee": 1, "effective_fee": 1}, 1),
        ("rolled_back", {"fee_reserve": 2, "swap_fee": 1}, 0),
    ],
)
def test_a_melts_fee_is_its_reserve_while_open_then_what_it_cost(
    state: str, data: dict, fee: int
) -> None:
    op = Operation(
        id=uuid.uuid4(),
        wallet="w",
        kind="melt",
        state=state,
        mint_url="http://mint",
        unit="sat",
        amount=100,
        data={**data, "outputs": [{"B_": "02" + "ab" * 32}], "invoice": "lnbc1..."},
    )
    entry = history_entry(op)
    assert (entry["fee"], entry["direction"], entry["amount"]) == (fee, "out", 100)
    assert set(entry) == ENTRY_KEYS | {"change_amount"}  # a melt's entry
