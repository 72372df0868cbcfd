"""The audit trail: every transition of every operation leaves an append-only record in its
own transaction (from and to state, version, what its proofs are, its fee), never a
secret; history names each entry's transaction type; a melt's result says what it kept,
what came back as change, what it cost and how long it took."""

from __future__ import annotations

import json

import pytest
from mint_harness import RunningMint, make_invoice
from saga_helpers import bal, fund, register_mint
from sqlalchemy import select
from task_helpers import new_wallet_name

from models import StoredProof
from sagas import melt as melt_saga
from sagas import send as send_saga
from sagas.engine import SagaContext
from sagas.history import audit_trail, history

pytestmark = pytest.mark.mint


@pytest.fixture
def mint_url(saga_context: SagaContext, test_mint: RunningMint) -> str:
    return register_mint(saga_context, test_mint.url)


def trail(ctx: SagaContext, operation_id: str) -> list[dict]:
    import uuid

    with ctx.uow() as session:
        return audit_trail(session, uuid.UUID(operation_id))


def secrets_of(ctx: SagaContext, wallet: str) -> set[str]:
    with ctx.uow() as session:
        rows = session.execute(
            select(StoredProof.secret, StoredProof.C).where(StoredProof.wallet == wallet)
        )
        return {value for row in rows for value in row}


def assert_chained(records: list[dict], final_state: str) -> None:
    """Each record starts where the one before it ended, versions rising, ending where the
    operation is."""
    assert records, "no audit record"
    for before, after in zip(records, records[1:], strict=False):
        assert before["to"] == after["from"]
        assert before["version"] < after["version"]
    assert records[-1]["to"] == final_state


def test_a_melt_with_a_pre_swap_records_each_transition_and_what_moved(
    saga_context: SagaContext, mint_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sagas.proofs.KEEP_TARGET", 0)
    wallet = new_wallet_name("audit")
    fund(saga_context, wallet, mint_url, 1024)  # one 1024 sat proof: the melt swaps first
    prepared = melt_saga.prepare(saga_context, wallet, mint_url, make_invoice(20))
    assert prepared["needs_swap"]

    paid = melt_saga.execute(saga_context, prepared["id"])

    assert paid["state"] == "finalized"
    records = trail(saga_context, prepared["id"])
    assert [(r["from"], r["to"]) for r in records] == [
        ("prepared", "executing"),
        ("executing", "finalized"),
    ]
    assert_chained(records, "finalized")
    moved = records[-1]["proofs"]
    # in: the 1024 proof the swap spent, and the exact melt inputs it made, which the melt
    # spent; out: what the swap kept and the change, unspent
    melt_input = 1024 - paid["swap_fee"] - paid["keep_amount"]
    assert moved["in:spent"][1] == 1024 + melt_input
    assert moved["out:unspent"][1] == paid["keep_amount"] + paid["change_amount"]
    assert records[-1]["fee"] == paid["effective_fee"]
    assert bal(saga_context, wallet)["spendable"] == moved["out:unspent"][1]
    assert 1024 - 20 - paid["effective_fee"] == paid["keep_amount"] + paid["change_amount"]
    assert paid["duration_ms"] >= 0
    text = json.dumps(records)
    assert not any(secret in text for secret in secrets_of(saga_context, wallet))


def test_a_cancelled_send_records_its_roll_back_and_what_it_released(
    saga_context: SagaContext, mint_url: str
) -> None:
    wallet = new_wallet_name("audit")
    fund(saga_context, wallet, mint_url, 100)
    prepared = send_saga.prepare(saga_context, wallet, mint_url, 30)

    send_saga.rollback(saga_context, prepared["id"])

    records = trail(saga_context, prepared["id"])
    assert [(r["from"], r["to"]) for r in records] == [
        ("prepared", "rolling_back"),
        ("rolling_back", "rolled_back"),
    ]
    assert_chained(records, "rolled_back")
    assert records[-1]["proofs"] == {}  # released: no proof is its input any more
    assert records[-1]["fee"] == 0


def test_history_names_each_entrys_transaction_type_and_a_melts_change(
    saga_context: SagaContext, mint_url: str
) -> None:
    wallet = new_wallet_name("audit")
    fund(saga_context, wallet, mint_url, 300)
    sent = send_saga.token(saga_context, wallet, mint_url, 10)
    melt = melt_saga.pay(saga_context, wallet, mint_url, make_invoice(50))

    with saga_context.uow() as session:
        entries = {e["operation_id"]: e for e in history(session, wallet)}

    assert entries[sent["id"]]["type"] == "sent"
    assert entries[melt["id"]]["type"] == "melted"
    assert entries[melt["id"]]["change_amount"] == melt["change_amount"]
    assert {e["type"] for e in entries.values()} == {"minted", "sent", "melted"}
