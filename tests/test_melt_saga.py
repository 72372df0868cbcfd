"""The melt saga against a real Nutshell mint (FakeWallet, input fee 100 ppk).

docs/test-mint.md: FAKEWALLET_PAY_INVOICE_STATE makes melts PENDING or FAILED;
restarting the mint with FAKEWALLET_PAYMENT_STATE moves a pending one on.
Every test ends on balances, ours and where it matters the mint's.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest
from mint_harness import RunningMint, make_invoice, make_invoice_without_amount
from protocol_wallet import ProtocolWallet, swap_to
from saga_helpers import (
    CutOnce,
    assert_all_spendable,
    bal,
    execute_and_die_after,
    fund,
    losing,
    mint_says_unspent,
    no_lock,
    register_mint,
    state_and_error,
    with_transport,
)
from sqlalchemy import func, select

from models import Operation, ProofState, StoredProof
from nuts.client import MintClient
from nuts.errors import MintRejectedError, MintServerError, MintUnreachableError
from nuts.models import MeltQuote, MeltQuoteState, Proof
from sagas import melt as melt_saga
from sagas import registry
from sagas.engine import SagaContext
from sagas.errors import (
    DuplicatePaymentError,
    InsufficientBalanceError,
    InvalidInvoiceError,
    InvalidStateError,
    MeltCostError,
    UntrustedMintError,
)
from sagas.proofs import to_wire
from sagas.recovery import run_recovery

pytestmark = pytest.mark.mint
PENDING = {"FAKEWALLET_PAY_INVOICE_STATE": "PENDING"}


@pytest.fixture
def mint_url(saga_context: SagaContext, test_mint: RunningMint) -> str:
    return register_mint(saga_context, test_mint.url)


def recover(ctx: SagaContext) -> dict:
    return run_recovery(ctx, lock=no_lock, kinds={"melt"})


def wait_for_quote_state(client: MintClient, quote_id: str, state: MeltQuoteState) -> None:
    """Check until the restarted mint reports `state` (bounded: 20 tries)."""
    import time

    for _ in range(20):
        with contextlib.suppress(MintRejectedError):
            if client.check_melt_quote(quote_id).state == state:
                return
        time.sleep(0.2)
    raise AssertionError(f"melt quote never became {state}")


def recover_until_settled(ctx: SagaContext, op_id: str, sweeps: int = 20) -> Operation:
    """Sweep as the beat would, a bounded number of times, until the melt leaves pending.

    (A restarted Nutshell settles its pending melts itself at startup; a check that
    races with that is answered with an error, and the next tick succeeds.)
    """
    import time

    for _ in range(sweeps):
        recover(ctx)
        with ctx.uow() as session:
            op = session.get(Operation, op_id)
            assert op is not None
            if op.state not in ("pending", "executing"):
                return op
        time.sleep(0.2)
    return op


def change_stored(ctx: SagaContext, op_id: str) -> int:
    """The change proofs the melt stored (not the keep of a pre-swap, also created by it)."""
    with ctx.uow() as session:
        op = session.get(Operation, op_id)
        assert op is not None
        created = session.scalar(
            select(func.coalesce(func.sum(StoredProof.amount), 0)).where(
                StoredProof.created_by == op_id, StoredProof.state == ProofState.UNSPENT
            )
        )
        data = op.data
    keep = data["input_amount"] - data["swap_fee"] - data["melt_input"] if data["needs_swap"] else 0
    return int(created) - keep


def test_prepare_reports_every_fee_before_anything_moves(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 300)

    prepared = melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(100))

    assert prepared["state"] == "prepared" and prepared["amount"] == 100
    assert prepared["quote_id"] and prepared["fee_reserve"] >= 1
    assert {"swap_fee", "needs_swap", "input_amount", "expiry"} <= prepared.keys()
    assert bal(saga_context, wallet_id)["reserved"] == prepared["input_amount"]
    assert bal(saga_context, wallet_id)["total"] == 300


def test_a_melt_paid_at_once_returns_its_change(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 300)
    before = bal(saga_context, wallet_id)["total"]

    prepared = melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(100))
    paid = melt_saga.execute(saga_context, prepared["id"])

    assert paid["state"] == "finalized" and paid["preimage"]
    assert paid["change_amount"] == change_stored(saga_context, paid["id"])
    assert bal(saga_context, wallet_id)["total"] == before - 100 - paid["effective_fee"]
    assert bal(saga_context, wallet_id)["reserved"] == bal(saga_context, wallet_id)["pending"] == 0
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def test_pay_in_one_call_returns_its_change(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 300)

    paid = melt_saga.pay(saga_context, wallet_id, mint_url, make_invoice(100))

    assert (paid["state"], paid["amount"], paid["needs_swap"]) == ("finalized", 100, False)
    assert paid["change_amount"] == change_stored(saga_context, paid["id"])
    assert bal(saga_context, wallet_id)["total"] == 300 - 100 - paid["effective_fee"]
    assert bal(saga_context, wallet_id)["reserved"] == bal(saga_context, wallet_id)["pending"] == 0
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def test_pay_in_one_call_swaps_a_large_overshoot_first(
    saga_context: SagaContext, mint_url: str, wallet_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sagas.proofs.KEEP_TARGET", 0)  # no small change: one 512 proof
    fund(saga_context, wallet_id, mint_url, 512)

    paid = melt_saga.pay(saga_context, wallet_id, mint_url, make_invoice(100))

    assert (paid["state"], paid["needs_swap"], paid["swap_fee"]) == ("finalized", True, 1)
    assert bal(saga_context, wallet_id)["total"] == 512 - 100 - paid["effective_fee"]
    assert bal(saga_context, wallet_id)["reserved"] == bal(saga_context, wallet_id)["pending"] == 0
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def _melt_input(ctx: SagaContext, op_id: str) -> int:
    with ctx.uow() as session:
        op = session.get(Operation, op_id)
        assert op is not None
        return op.data["melt_input"]


def test_a_large_overshoot_is_swapped_to_an_exact_amount_first(
    saga_context: SagaContext, mint_url: str, wallet_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sagas.proofs.KEEP_TARGET", 0)  # no small change: one 512 proof
    fund(saga_context, wallet_id, mint_url, 512)  # far too much for 100

    prepared = melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(100))
    paid = melt_saga.execute(saga_context, prepared["id"])

    assert prepared["needs_swap"] and prepared["swap_fee"] == 1
    assert paid["state"] == "finalized"
    assert bal(saga_context, wallet_id)["total"] == 512 - 100 - paid["effective_fee"]
    assert paid["effective_fee"] <= prepared["swap_fee"] + prepared["fee_reserve"] + 1
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def test_pending_then_settled_finalizes_with_the_change(
    saga_context: SagaContext, fresh_mint: Callable[..., RunningMint], wallet_id: str
) -> None:
    mint = fresh_mint(env_overrides=PENDING)
    url = register_mint(saga_context, mint.url)
    fund(saga_context, wallet_id, url, 300)
    op = melt_saga.prepare(saga_context, wallet_id, url, make_invoice(100))

    assert melt_saga.execute(saga_context, op["id"])["state"] == "pending"
    assert bal(saga_context, wallet_id)["pending"] == _melt_input(saga_context, op["id"])
    mint.restart({**PENDING, "FAKEWALLET_PAYMENT_STATE": "SETTLED"})
    done = recover_until_settled(saga_context, op["id"])

    assert done.state == "finalized", done.error_message
    change = done.data["change_amount"]
    assert change > 0 and change == change_stored(saga_context, op["id"])
    assert bal(saga_context, wallet_id)["total"] == 300 - 100 - done.data["effective_fee"]
    assert bal(saga_context, wallet_id)["pending"] == 0
    assert mint_says_unspent(saga_context, wallet_id, url)


def test_pending_then_failed_rolls_back_and_restores_the_balance(
    saga_context: SagaContext, fresh_mint: Callable[..., RunningMint], wallet_id: str
) -> None:
    mint = fresh_mint(env_overrides=PENDING)
    url = register_mint(saga_context, mint.url)
    fund(saga_context, wallet_id, url, 300)
    op = melt_saga.prepare(saga_context, wallet_id, url, make_invoice(100))
    melt_saga.execute(saga_context, op["id"])

    mint.restart({**PENDING, "FAKEWALLET_PAYMENT_STATE": "FAILED"})

    assert recover_until_settled(saga_context, op["id"]).state == "rolled_back"
    restored = 300 - op["swap_fee"]  # a pre-swap, if there was one, was a real swap
    assert bal(saga_context, wallet_id) | {"by_mint": None} == {
        "spendable": restored,
        "reserved": 0,
        "pending": 0,
        "total": restored,
        "unit": "sat",
        "by_mint": None,
    }
    assert mint_says_unspent(saga_context, wallet_id, url)


def test_a_payment_that_fails_outright_rolls_back_with_nothing_reserved(
    saga_context: SagaContext, fresh_mint: Callable[..., RunningMint], wallet_id: str
) -> None:
    failing = {"FAKEWALLET_PAY_INVOICE_STATE": "FAILED", "FAKEWALLET_PAYMENT_STATE": "FAILED"}
    mint = fresh_mint(env_overrides=failing)
    url = register_mint(saga_context, mint.url)
    fund(saga_context, wallet_id, url, 300)
    op = melt_saga.prepare(saga_context, wallet_id, url, make_invoice(100))

    result = melt_saga.execute(saga_context, op["id"])

    assert result["state"] == "rolled_back"
    assert result["error"]["code"] == "LIGHTNING_PAYMENT_FAILED"
    assert bal(saga_context, wallet_id)["spendable"] == 300 - op["swap_fee"]
    assert bal(saga_context, wallet_id)["reserved"] == 0
    assert mint_says_unspent(saga_context, wallet_id, url)


def test_a_lost_melt_response_is_finalized_with_change_by_recovery(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 300)
    op = melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(100))

    stuck = melt_saga.execute(losing(saga_context, "/v1/melt/bolt11"), op["id"])
    recover(saga_context)

    assert stuck["state"] == "executing" and stuck["error"]["code"] == "MINT_TIMEOUT"
    with saga_context.uow() as session:
        done = session.get(Operation, op["id"])
        assert done is not None and done.state == "finalized"
        assert done.data["change_amount"] == change_stored(saga_context, op["id"])
        effective_fee = done.data["effective_fee"]
    assert bal(saga_context, wallet_id)["total"] == 300 - 100 - effective_fee
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def test_a_process_killed_after_the_melt_request_left_loses_no_change(
    saga_context: SagaContext, database_url: str, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 300)
    op = melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(100))

    execute_and_die_after(database_url, "sagas.melt", op["id"], "/v1/melt/bolt11")
    recover(saga_context)

    with saga_context.uow() as session:
        done = session.get(Operation, op["id"])
        assert done is not None and done.state == "finalized"
        effective_fee = done.data["effective_fee"]
    assert effective_fee <= done.data["fee_reserve"] + done.data["input_fee"] + 1
    assert bal(saga_context, wallet_id)["total"] == 300 - 100 - effective_fee
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def test_two_melts_of_one_invoice_pay_once_and_the_second_costs_nothing(
    saga_context: SagaContext, mint_url: str, wallet_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sagas.proofs.KEEP_TARGET", 0)  # two 1024 proofs: each melt must swap
    fund(saga_context, wallet_id, mint_url, 1024)
    fund(saga_context, wallet_id, mint_url, 1024)
    invoice = make_invoice(20)
    first = melt_saga.prepare(saga_context, wallet_id, mint_url, invoice)
    second = melt_saga.prepare(saga_context, wallet_id, f"{mint_url}/", invoice)

    paid = melt_saga.execute(saga_context, first["id"])
    with pytest.raises(DuplicatePaymentError):
        melt_saga.execute(saga_context, second["id"])

    assert paid["state"] == "finalized"
    assert state_and_error(saga_context, second["id"]) == ("rolled_back", "DUPLICATE_PAYMENT")
    assert bal(saga_context, wallet_id)["total"] == 2048 - 20 - paid["effective_fee"]
    assert bal(saga_context, wallet_id)["reserved"] == 0
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def test_a_paid_invoice_is_refused_before_any_quote_or_reservation(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 300)
    invoice = make_invoice(100)
    paid = melt_saga.pay(saga_context, wallet_id, mint_url, invoice)
    watch = CutOnce("/nowhere", "lost")

    with pytest.raises(DuplicatePaymentError):
        melt_saga.prepare(with_transport(saga_context, watch), wallet_id, mint_url, invoice)

    assert watch.seen == []
    assert bal(saga_context, wallet_id)["total"] == 300 - 100 - paid["effective_fee"]
    assert bal(saga_context, wallet_id)["reserved"] == 0


def test_insufficient_balance_is_refused_and_reserves_nothing(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 50)

    with pytest.raises(InsufficientBalanceError):
        melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(100))
    with pytest.raises(InsufficientBalanceError):
        melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(50))  # + fee reserve

    assert bal(saga_context, wallet_id)["spendable"] == 50
    assert bal(saga_context, wallet_id)["reserved"] == 0


def test_an_untrusted_mint_gets_no_request(
    saga_context: SagaContext, fresh_mint: Callable[..., RunningMint], wallet_id: str
) -> None:
    mint = fresh_mint()
    url = register_mint(saga_context, mint.url)
    fund(saga_context, wallet_id, url, 200)
    with saga_context.uow() as session:
        registry.set_trusted(session, url, False)
    mint.stop()  # a request would now be a connection error, not a trust error

    with pytest.raises(UntrustedMintError):
        melt_saga.prepare(saga_context, wallet_id, url, make_invoice(100))
    assert bal(saga_context, wallet_id)["spendable"] == 200


def _expired_invoice() -> str:
    import time

    real = time.time
    try:
        time.time = lambda: real() - 7200  # made two hours ago, valid for one
        return make_invoice(10, expiry=3600)
    finally:
        time.time = real


@pytest.mark.parametrize(
    "make",
    [
        lambda: "lnbc1garbage",
        make_invoice_without_amount,
        _expired_invoice,
        lambda: "",
        lambda: make_invoice(10, network="tb"),
        lambda: make_invoice(10, network="bcrt"),
    ],
    ids=["garbage", "no-amount", "expired", "empty", "testnet", "regtest"],
)
def test_an_unpayable_invoice_is_refused_and_changes_nothing(
    saga_context: SagaContext, mint_url: str, wallet_id: str, make: Callable[[], str]
) -> None:
    fund(saga_context, wallet_id, mint_url, 200)

    with pytest.raises(InvalidInvoiceError):
        melt_saga.prepare(saga_context, wallet_id, mint_url, make())
    assert bal(saga_context, wallet_id)["spendable"] == 200
    with saga_context.uow() as session:
        count = select(func.count()).where(Operation.wallet == wallet_id, Operation.kind == "melt")
        assert session.scalar(count) == 0


def test_cancel_releases_a_prepared_melt_and_refuses_a_later_one(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 300)
    op = melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(100))

    assert melt_saga.cancel(saga_context, op["id"])["state"] == "rolled_back"
    assert bal(saga_context, wallet_id)["spendable"] == 300
    other = melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(100))
    melt_saga.execute(saga_context, other["id"])
    with pytest.raises(InvalidStateError):
        melt_saga.cancel(saga_context, other["id"])


def test_reclaim_takes_back_a_pending_melt_whose_quote_is_unpaid(
    saga_context: SagaContext, fresh_mint: Callable[..., RunningMint], wallet_id: str
) -> None:
    mint = fresh_mint(env_overrides=PENDING)
    url = register_mint(saga_context, mint.url)
    fund(saga_context, wallet_id, url, 300)
    op = melt_saga.prepare(saga_context, wallet_id, url, make_invoice(100))
    melt_saga.execute(saga_context, op["id"])
    mint.restart({**PENDING, "FAKEWALLET_PAYMENT_STATE": "FAILED"})
    wait_for_quote_state(saga_context.mint_client(url), op["quote_id"], MeltQuoteState.UNPAID)

    result = melt_saga.reclaim(saga_context, op["id"])

    assert result["state"] == "rolled_back"
    with saga_context.uow() as session:
        reclaim_fee = session.get(Operation, op["id"]).data["reclaim_fee"]  # type: ignore[union-attr]
    assert bal(saga_context, wallet_id)["total"] == 300 - op["swap_fee"] - reclaim_fee
    assert mint_says_unspent(saga_context, wallet_id, url)


def test_preflight_marks_inputs_spent_elsewhere_and_stops_with_a_high_error(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 128)
    op = melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(100))
    with saga_context.uow() as session:
        rows = session.scalars(select(StoredProof).where(StoredProof.used_by == op["id"])).all()
        stolen = [to_wire(r) for r in rows]
    swap_to(ProtocolWallet(saga_context.mint_client(mint_url)), stolen)  # spent behind our back
    untouched = 128 - sum(p.amount for p in stolen)

    result = melt_saga.execute(saga_context, op["id"])

    assert result["state"] == "rolled_back"
    assert result["error"]["code"] == "PROOFS_SPENT_AT_MINT"
    assert result["error"]["severity"] == "HIGH"
    assert result["reconciliation"]["DB_RESERVED_MINT_SPENT"]["count"] == len(stolen)
    assert bal(saga_context, wallet_id)["total"] == untouched


def test_get_by_quote_finds_the_operation(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 300)
    op = melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(100))

    found = melt_saga.get_by_quote(saga_context, mint_url, op["quote_id"])

    assert found is not None and found["id"] == op["id"]
    assert melt_saga.get_by_quote(saga_context, mint_url, "no-such-quote") is None
    assert bal(saga_context, wallet_id)["total"] == 300


# --- a pre-swap whose request was cut -------------------------------------------------------


def _one_big_proof(
    ctx: SagaContext, wallet: str, url: str, monkeypatch: pytest.MonkeyPatch
) -> dict:
    """A wallet holding one 1024 sat proof, and a prepared 20 sat melt that must swap first."""
    monkeypatch.setattr("sagas.proofs.KEEP_TARGET", 0)
    fund(ctx, wallet, url, 1024)
    prepared = melt_saga.prepare(ctx, wallet, url, make_invoice(20))
    assert prepared["needs_swap"] and prepared["input_amount"] == 1024
    return prepared


def _worst_cost(op: dict) -> int:
    return op["fee_reserve"] + op["swap_fee"] + op["input_fee"]


@pytest.mark.parametrize("how", ["reset", "502", "lost"])
def test_a_melt_whose_swap_was_cut_never_melts_unswapped_inputs_and_pays_no_more_than_its_fees(
    saga_context: SagaContext,
    mint_url: str,
    wallet_id: str,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    prepared = _one_big_proof(saga_context, wallet_id, mint_url, monkeypatch)
    cut = CutOnce("/v1/swap", how)

    stuck = melt_saga.execute(with_transport(saga_context, cut), prepared["id"])
    assert stuck["state"] == "executing"
    assert "/v1/melt/bolt11" not in cut.seen  # the melt waits for a swap known to be done
    recover(saga_context)

    with saga_context.uow() as session:
        done = session.get(Operation, prepared["id"])
        assert done is not None and done.state == "finalized", done.error_message
        effective_fee = done.data["effective_fee"]
    cost = 1024 - bal(saga_context, wallet_id)["total"] - 20
    assert 0 <= cost <= _worst_cost(prepared)
    assert effective_fee == cost
    assert bal(saga_context, wallet_id)["reserved"] == bal(saga_context, wallet_id)["pending"] == 0
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def test_a_melt_whose_swap_connection_was_refused_rolls_back_at_once_and_costs_nothing(
    saga_context: SagaContext, mint_url: str, wallet_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared = _one_big_proof(saga_context, wallet_id, mint_url, monkeypatch)
    cut = CutOnce("/v1/swap", "refused")

    with pytest.raises(MintUnreachableError):
        melt_saga.execute(with_transport(saga_context, cut), prepared["id"])

    assert state_and_error(saga_context, prepared["id"]) == ("rolled_back", "MINT_UNREACHABLE")
    assert "/v1/melt/bolt11" not in cut.seen
    assert_all_spendable(saga_context, wallet_id, 1024)
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def test_a_melt_whose_preflight_check_failed_releases_its_inputs_with_a_typed_error(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 300)
    prepared = melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(100))
    cut = CutOnce("/v1/checkstate", "502")

    with pytest.raises(MintServerError):
        melt_saga.execute(with_transport(saga_context, cut), prepared["id"])

    assert state_and_error(saga_context, prepared["id"]) == ("rolled_back", "MINT_SERVER_ERROR")
    assert "/v1/melt/bolt11" not in cut.seen
    assert_all_spendable(saga_context, wallet_id, 300)


def test_a_melt_whose_inputs_are_not_what_its_blanks_were_planned_for_is_never_sent(
    saga_context: SagaContext, mint_url: str, wallet_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared = _one_big_proof(saga_context, wallet_id, mint_url, monkeypatch)
    melt_saga.execute(with_transport(saga_context, CutOnce("/v1/swap", "reset")), prepared["id"])
    with saga_context.uow() as session:  # a bug that skips the swap: phase melt, 1024 inputs
        op = session.get(Operation, prepared["id"])
        assert op is not None
        op.data = {**op.data, "phase": "melt"}
    watch = CutOnce("/nowhere", "lost")

    result = melt_saga.execute(with_transport(saga_context, watch), prepared["id"])

    assert result["state"] == "executing"
    assert result["error"]["code"] == "MELT_INPUTS_MISMATCH"
    assert result["error"]["severity"] == "CRITICAL"
    assert "/v1/melt/bolt11" not in watch.seen
    assert bal(saga_context, wallet_id)["total"] == 1024


def test_a_paid_melt_whose_fee_would_come_out_negative_is_not_finalized() -> None:
    op = Operation(
        kind="melt",
        amount=20,
        data={
            "input_amount": 1024,
            "melt_input": 24,
            "swap_fee": 1,
            "needs_swap": True,
            "fee_reserve": 2,
            "input_fee": 1,
        },
    )
    quote = MeltQuote(quote="q", amount=20, fee_reserve=2, state=MeltQuoteState.PAID)
    change = [Proof(id="00" * 8, amount=256, secret="s", C="02" + "11" * 32)] * 3

    with pytest.raises(MeltCostError):
        melt_saga._store_change_and_finalize(None, op, quote, change)  # type: ignore[arg-type]


# --- a step handed on whose message never arrived ------------------------------------------------


def test_a_pay_step_that_never_started_is_left_alone_within_the_grace_then_handed_on_again(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 300)
    prepared = melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(100))
    begun = melt_saga.begin(saga_context, prepared["id"])  # its pay step's message is lost
    assert begun.view["state"] == "executing" and begun.next_step == "pay"
    handed_on: list[tuple[str, str | None]] = []

    def hand_on(kind: str, progress) -> None:  # only this melt's: the database is shared
        if progress.view["id"] == prepared["id"]:
            handed_on.append((kind, progress.next_step))

    def sweep(ctx: SagaContext) -> dict:
        return run_recovery(ctx, lock=no_lock, kinds={"melt"}, hand_on=hand_on)

    sweep(saga_context)  # within the grace: the step may only be queued behind others
    assert handed_on == []
    assert melt_saga.get_by_quote(saga_context, mint_url, prepared["quote_id"])["state"] == (
        "executing"
    )

    no_grace = dataclasses.replace(saga_context, handoff_grace=timedelta(0))
    sweep(no_grace)
    sweep(saga_context)  # handed on, touched: the next sweep waits the grace again
    assert handed_on == [("melt", "pay")]

    paid = melt_saga.execute(saga_context, prepared["id"])  # the step, run at last
    assert paid["state"] == "finalized"
    assert 0 <= paid["effective_fee"] <= _worst_cost(prepared)
    assert_all_spendable(saga_context, wallet_id, 300 - 100 - paid["effective_fee"])


def test_a_pay_step_run_again_after_its_answer_was_lost_never_releases_on_a_refused_connection(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 300)
    prepared = melt_saga.prepare(saga_context, wallet_id, mint_url, make_invoice(100))
    melt_saga.begin(saga_context, prepared["id"])
    lost = CutOnce("/v1/melt/bolt11", "lost")  # the mint pays; its answer never arrives
    assert melt_saga.pay_step(with_transport(saga_context, lost), prepared["id"]).view["state"] == (
        "executing"
    )

    # The same step again (a duplicate message, a redelivery), the mint now unreachable: a
    # refused connection says nothing about the first request, which the mint acted on.
    refused = CutOnce("/v1/melt/bolt11", "refused")
    again = melt_saga.pay_step(with_transport(saga_context, refused), prepared["id"])

    assert again.view["state"] == "executing"
    assert again.view["error"]["code"] == "MINT_UNREACHABLE"
    done = recover_until_settled(saga_context, prepared["id"])
    assert done.state == "finalized"
    cost = 300 - 100 - bal(saga_context, wallet_id)["total"]
    assert 0 <= cost <= _worst_cost(prepared) and done.data["effective_fee"] == cost
    assert_all_spendable(saga_context, wallet_id, 300 - 100 - cost)
