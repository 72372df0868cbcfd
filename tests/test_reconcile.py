"""Reconciliation against a real mint: each discrepancy created for real, then reported and
corrected (or left alone) by check_proofs and the melt pre-flight, as sagas/reconcile.py's
one table says. Balances are compared before and after every correction."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from mint_harness import RunningMint, make_invoice
from protocol_wallet import ProtocolWallet, swap_to
from saga_helpers import bal, fund, losing, mint_says_unspent, register_mint
from sqlalchemy import func, select, update

from models import Operation, ProofState, StoredProof
from nuts.amounts import input_fee
from nuts.client import MintClient
from nuts.errors import InvalidTokenError, MintRejectedError
from nuts.models import MeltQuoteState
from nuts.tokens import decode_token, encode_token_v4
from sagas import melt as melt_saga
from sagas import receive as receive_saga
from sagas import restore as restore_saga
from sagas import send as send_saga
from sagas.engine import SagaContext
from sagas.errors import Severity
from sagas.proofs import to_wire
from sagas.reconcile import DISCREPANCIES, WRITE_UP

pytestmark = pytest.mark.mint

PENDING = {"FAKEWALLET_PAY_INVOICE_STATE": "PENDING"}


@pytest.fixture
def mint_url(saga_context: SagaContext, test_mint: RunningMint) -> str:
    return register_mint(saga_context, test_mint.url)


def rows_of(ctx: SagaContext, wallet: str, **where: object) -> list[StoredProof]:
    with ctx.uow() as session:
        stmt = (
            select(StoredProof)
            .where(StoredProof.wallet == wallet)
            .order_by(StoredProof.amount.desc())
        )
        for column, value in where.items():
            stmt = stmt.where(getattr(StoredProof, column) == value)
        rows = list(session.scalars(stmt))
        session.expunge_all()
        return rows


def mark_spent_in_our_books(ctx: SagaContext, row_ids: list[int], *, ago: timedelta) -> None:
    """The discrepancy by hand: spent here, while the mint still has them unspent."""
    with ctx.uow() as session:
        session.execute(
            update(StoredProof)
            .where(StoredProof.id.in_(row_ids))
            .values(state=ProofState.SPENT, updated_at=func.now() - ago)
        )


def op_state(ctx: SagaContext, op_id: object) -> str:
    with ctx.uow() as session:
        op = session.get(Operation, op_id)
        assert op is not None
        return op.state


def wait_for_quote_state(client: MintClient, quote_id: str, state: MeltQuoteState) -> None:
    for _ in range(20):
        with contextlib.suppress(MintRejectedError):
            if client.check_melt_quote(quote_id).state == state:
                return
        time.sleep(0.2)
    raise AssertionError(f"melt quote never became {state}")


# --- the table ------------------------------------------------------------------------------


def test_one_table_gives_each_discrepancy_one_severity() -> None:
    assert {code: d.severity for code, d in WRITE_UP.items()} == {
        "DB_UNSPENT_MINT_SPENT": Severity.HIGH,
        "DB_SPENT_MINT_UNSPENT": Severity.MEDIUM,
        "DB_PENDING_MINT_SPENT": Severity.MEDIUM,
        "DB_UNSPENT_MINT_PENDING": Severity.LOW,
        "PROOF_NOT_IN_DB": Severity.LOW,
    }
    # the pre-flight's codes for reserved inputs are these discrepancies, held by an operation
    for code in ("DB_RESERVED_MINT_SPENT", "DB_RESERVED_MINT_PENDING"):
        variant = DISCREPANCIES[code]
        assert variant.variant_of in WRITE_UP
        assert variant.severity == WRITE_UP[variant.variant_of].severity


# --- DB_UNSPENT_MINT_SPENT, held by a prepared melt: HIGH in both places --------------------


def test_inputs_spent_elsewhere_are_high_in_check_proofs_and_in_the_preflight(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 128)
    op = melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(100))
    stolen = [to_wire(r) for r in rows_of(saga_context, wallet_id, used_by=op["id"])]
    swap_to(ProtocolWallet(saga_context.mint_client(mint_url)), stolen)
    amount = sum(p.amount for p in stolen)
    before = bal(saga_context, wallet_id)

    report = restore_saga.check_proofs(saga_context, wallet_id, mint_url)

    assert report["discrepancies"] == {
        "DB_RESERVED_MINT_SPENT": {"severity": "HIGH", "count": len(stolen), "amount": amount}
    }
    assert report["corrected"] == 0  # the melt holding them settles them: its pre-flight
    assert bal(saga_context, wallet_id) == before
    result = melt_saga.execute(saga_context, op["id"])
    assert result["state"] == "rolled_back"
    assert result["reconciliation"]["DB_RESERVED_MINT_SPENT"] == {
        "severity": "HIGH",
        "count": len(stolen),
    }
    assert bal(saga_context, wallet_id)["total"] == 128 - amount
    assert bal(saga_context, wallet_id)["reserved"] == 0


def test_inputs_an_executing_melt_has_at_the_mint_are_no_discrepancy(
    saga_context: SagaContext, mint_url: str, wallet_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sagas.proofs.KEEP_TARGET", 0)
    fund(saga_context, wallet_id, mint_url, 1024)
    op = melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(20))
    assert op["needs_swap"]
    stuck = melt_saga.execute(losing(saga_context, "/v1/swap"), op["id"])
    assert stuck["state"] == "executing"  # swapped at the mint, the answer lost
    before = bal(saga_context, wallet_id)

    report = restore_saga.check_proofs(saga_context, wallet_id, mint_url)

    assert report["discrepancies"] == {} and report["corrected"] == 0
    assert bal(saga_context, wallet_id) == before
    assert melt_saga.refresh(saga_context, op["id"])["state"] == "finalized"  # its recovery
    assert restore_saga.check_proofs(saga_context, wallet_id, mint_url)["discrepancies"] == {}


# --- DB_SPENT_MINT_UNSPENT ------------------------------------------------------------------


def test_a_proof_spent_only_in_our_books_is_spendable_again(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    row = rows_of(saga_context, wallet_id)[0]
    mark_spent_in_our_books(saga_context, [row.id], ago=timedelta(0))
    assert bal(saga_context, wallet_id)["spendable"] == 100 - row.amount

    report = restore_saga.check_proofs(saga_context, wallet_id, mint_url)

    assert report["discrepancies"] == {
        "DB_SPENT_MINT_UNSPENT": {"severity": "MEDIUM", "count": 1, "amount": row.amount}
    }
    assert report["corrections"] == {"DB_SPENT_MINT_UNSPENT": 1} and report["corrected"] == 1
    assert report["spent_checked"] == 1
    assert bal(saga_context, wallet_id)["spendable"] == 100
    assert mint_says_unspent(saga_context, wallet_id, mint_url)
    again = restore_saga.check_proofs(saga_context, wallet_id, mint_url)
    assert again["discrepancies"] == {} and again["corrected"] == 0
    fund(saga_context, wallet_id, mint_url, 1)
    send = send_saga.prepare(saga_context, wallet_id, mint_url, 101)  # it spends again
    assert send["input_amount"] >= 101


def test_a_spent_proof_an_open_operation_holds_is_reported_and_left_alone(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 40)  # its inputs reserved
    held = rows_of(saga_context, wallet_id, used_by=op["id"])[0]
    mark_spent_in_our_books(saga_context, [held.id], ago=timedelta(0))
    before = bal(saga_context, wallet_id)

    report = restore_saga.check_proofs(saga_context, wallet_id, mint_url)

    assert report["discrepancies"]["DB_SPENT_MINT_UNSPENT"]["count"] == 1
    assert report["corrected"] == 0  # the prepared send may still act on it
    assert bal(saga_context, wallet_id) == before
    # once its operation is over, nothing explains it any more: it comes back
    send_saga.cancel(saga_context, op["id"])
    after = restore_saga.check_proofs(saga_context, wallet_id, mint_url)
    assert after["corrections"] == {"DB_SPENT_MINT_UNSPENT": 1}
    assert bal(saga_context, wallet_id)["spendable"] == 100


def test_spent_proofs_are_checked_newest_first_within_the_window(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    older, newer = rows_of(saga_context, wallet_id)[:2]
    mark_spent_in_our_books(saga_context, [older.id], ago=timedelta(days=3))
    mark_spent_in_our_books(saga_context, [newer.id], ago=timedelta(minutes=1))

    report = restore_saga.check_proofs(saga_context, wallet_id, mint_url, spent_window=1)

    assert report["spent_checked"] == 1 and report["spent_window_full"] is True
    assert report["corrections"] == {"DB_SPENT_MINT_UNSPENT": 1}
    assert bal(saga_context, wallet_id)["spendable"] == 100 - older.amount
    rest = restore_saga.check_proofs(saga_context, wallet_id, mint_url)
    assert rest["corrections"] == {"DB_SPENT_MINT_UNSPENT": 1}
    assert rest["spent_window_full"] is False
    assert bal(saga_context, wallet_id)["spendable"] == 100


# --- DB_PENDING_MINT_SPENT ------------------------------------------------------------------


def test_a_claimed_send_is_finalized_by_check_proofs(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 21)
    token = send_saga.execute(saga_context, op["id"])["token"]
    receive_saga.redeem(saga_context, f"{wallet_id}-bob", token)  # claimed: spent at the mint
    before = bal(saga_context, wallet_id)
    sent = rows_of(saga_context, wallet_id, used_by=op["id"], state=ProofState.PENDING)
    assert before["pending"] == sum(r.amount for r in sent) > 0

    report = restore_saga.check_proofs(saga_context, wallet_id, mint_url)

    assert report["discrepancies"] == {
        "DB_PENDING_MINT_SPENT": {
            "severity": "MEDIUM",
            "count": len(sent),
            "amount": before["pending"],
        }
    }
    assert report["corrections"] == {"DB_PENDING_MINT_SPENT": len(sent)}
    assert report["settled"] == [op["id"]]
    assert op_state(saga_context, op["id"]) == "finalized"
    after = bal(saga_context, wallet_id)
    assert after["pending"] == 0 and after["total"] == before["total"] - before["pending"]
    assert restore_saga.check_proofs(saga_context, wallet_id, mint_url)["discrepancies"] == {}


def test_a_melt_paid_while_we_did_not_look_is_finalized_by_check_proofs(
    saga_context: SagaContext, fresh_mint: Callable[..., RunningMint], wallet_id: str
) -> None:
    mint = fresh_mint(env_overrides=PENDING)
    url = register_mint(saga_context, mint.url)
    fund(saga_context, wallet_id, url, 300)
    op = melt_saga.prepare(saga_context, wallet_id, url, make_invoice(100))
    assert melt_saga.execute(saga_context, op["id"])["state"] == "pending"
    mint.restart({**PENDING, "FAKEWALLET_PAYMENT_STATE": "SETTLED"})
    wait_for_quote_state(saga_context.mint_client(url), op["quote_id"], MeltQuoteState.PAID)
    before = bal(saga_context, wallet_id)
    assert before["pending"] > 0

    report = restore_saga.check_proofs(saga_context, wallet_id, url)

    entry = report["discrepancies"]["DB_PENDING_MINT_SPENT"]
    assert entry["severity"] == "MEDIUM" and entry["amount"] == before["pending"]
    assert report["corrections"] == {"DB_PENDING_MINT_SPENT": entry["count"]}
    assert report["settled"] == [op["id"]]
    with saga_context.uow() as session:
        done = session.get(Operation, op["id"])
        assert done is not None and done.state == "finalized"
        fee, change = done.data["effective_fee"], done.data["change_amount"]
    after = bal(saga_context, wallet_id)
    assert after["pending"] == 0 and change > 0
    assert after["total"] == 300 - 100 - fee == before["total"] - before["pending"] + change
    assert mint_says_unspent(saga_context, wallet_id, url)


# --- DB_UNSPENT_MINT_PENDING (and the reserved variant the pre-flight sees) ---------------


def test_proofs_pending_at_the_mint_are_low_in_check_proofs_and_in_the_preflight(
    saga_context: SagaContext, fresh_mint: Callable[..., RunningMint], wallet_id: str
) -> None:
    mint = fresh_mint(env_overrides=PENDING)
    url = register_mint(saga_context, mint.url)
    fund(saga_context, wallet_id, url, 300)
    op = melt_saga.prepare(saga_context, wallet_id, url, make_invoice(100))
    reserved = [to_wire(r) for r in rows_of(saga_context, wallet_id, used_by=op["id"])]
    loose = to_wire(rows_of(saga_context, wallet_id, state=ProofState.UNSPENT)[-1])
    # someone else, holding copies of these proofs, is melting them right now
    client = saga_context.mint_client(url)
    outsider = ProtocolWallet(client)
    inputs = [*reserved, loose]
    quote = client.create_melt_quote(make_invoice(8))
    assert sum(p.amount for p in inputs) >= (
        quote.amount + quote.fee_reserve + input_fee(inputs, outsider.fees)
    )
    assert client.melt(quote.quote, inputs).state == MeltQuoteState.PENDING
    before = bal(saga_context, wallet_id)

    report = restore_saga.check_proofs(saga_context, wallet_id, url)

    assert report["discrepancies"] == {
        "DB_UNSPENT_MINT_PENDING": {"severity": "LOW", "count": 1, "amount": loose.amount},
        "DB_RESERVED_MINT_PENDING": {
            "severity": "LOW",
            "count": len(reserved),
            "amount": sum(p.amount for p in reserved),
        },
    }
    assert report["corrected"] == 0 and bal(saga_context, wallet_id) == before
    result = melt_saga.execute(saga_context, op["id"])
    assert result["state"] == "prepared" and result["error"]["code"] == "PROOFS_SPENT_AT_MINT"
    assert result["reconciliation"]["DB_RESERVED_MINT_PENDING"] == {
        "severity": "LOW",
        "count": len(reserved),
    }
    assert bal(saga_context, wallet_id) == before


# --- PROOF_NOT_IN_DB ------------------------------------------------------------------------


def test_proofs_of_a_token_we_do_not_hold_are_reported_with_their_state(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    donor = f"{wallet_id}-donor"
    fund(saga_context, donor, mint_url, 64)
    fund(saga_context, wallet_id, mint_url, 10)
    op = send_saga.prepare(saga_context, donor, mint_url, 21)
    token = send_saga.execute(saga_context, op["id"])["token"]
    proofs = decode_token(token).proofs
    ours, theirs = bal(saga_context, wallet_id), bal(saga_context, donor)

    report = restore_saga.check_proofs(saga_context, wallet_id, mint_url, token=token)

    assert report["discrepancies"] == {
        "PROOF_NOT_IN_DB": {"severity": "LOW", "count": len(proofs), "amount": 21}
    }
    assert report["outside_checked"] == len(proofs) and report["corrected"] == 0
    assert sorted(p["amount"] for p in report["not_in_db"]) == sorted(p.amount for p in proofs)
    assert {p["state"] for p in report["not_in_db"]} == {"UNSPENT"}
    assert bal(saga_context, wallet_id) == ours and bal(saga_context, donor) == theirs
    # the wallet that sent it holds these proofs (pending): nothing to report there
    sender = restore_saga.check_proofs(saga_context, donor, mint_url, token=token)
    assert sender["discrepancies"] == {} and sender["not_in_db"] == []
    assert bal(saga_context, donor) == theirs


def test_a_token_that_is_no_token_or_of_another_mint_is_refused(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 8)
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 4)
    parsed = decode_token(send_saga.execute(saga_context, op["id"])["token"])
    parsed.mint = "http://another-mint.example"
    before = bal(saga_context, wallet_id)

    for token in ("cashuBgarbage", encode_token_v4(parsed)):
        with pytest.raises(InvalidTokenError):
            restore_saga.check_proofs(saga_context, wallet_id, mint_url, token=token)

    assert bal(saga_context, wallet_id) == before


# --- through the worker ---------------------------------------------------------------------


def test_the_task_takes_a_token_and_settles_a_claimed_send_under_its_lock(
    celery_client, test_mint: RunningMint
) -> None:
    from task_helpers import balance, call, new_wallet_name
    from task_helpers import fund as fund_task

    url = call(celery_client, "cashu.mints.add", url=test_mint.url)["url"]
    alice, bob = new_wallet_name("rc-a"), new_wallet_name("rc-b")
    fund_task(celery_client, alice, url, 64)
    sent = call(celery_client, "cashu.send.token", wallet=alice, mint_url=url, amount=13)
    outside = call(
        celery_client, "cashu.wallet.check_proofs", wallet=bob, mint_url=url, token=sent["token"]
    )
    assert outside["discrepancies"]["PROOF_NOT_IN_DB"]["amount"] == 13
    call(celery_client, "cashu.receive.redeem", wallet=bob, token=sent["token"])
    before = balance(celery_client, alice)

    report = call(celery_client, "cashu.wallet.check_proofs", wallet=alice, mint_url=url)

    assert report["settled"] == [sent["id"]]
    assert call(celery_client, "cashu.ops.get", operation_id=sent["id"])["state"] == "finalized"
    after = balance(celery_client, alice)
    assert after["pending"] == 0 and after["total"] == before["total"] - before["pending"]
