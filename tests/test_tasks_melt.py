"""The melt saga through the Celery tasks: a real worker, a real Nutshell mint (FakeWallet,
input fee 100 ppk), Postgres and Redis.

The shared test mint for melts paid at once; a test's own mint (registered through
cashu.mints.add) for PENDING / FAILED payments: FAKEWALLET_PAY_INVOICE_STATE shapes the
melt's answer, a restart with FAKEWALLET_PAYMENT_STATE moves a pending one on (docs/test-mint.md).
A slow proxy in front of the mint makes a melt last (concurrent executes) or holds its PAID
answer back while the worker is SIGKILLed. Every test ends on exact balances
(cashu.wallet.balance) and, where proofs moved, on the mint's checkstate of our proofs.
"""

from __future__ import annotations

import time
import uuid

import pytest
from celery import Celery
from mint_harness import MINT_VERSIONS, RunningMint, make_invoice
from saga_helpers import fund as fund_from_here
from slow_proxy import Cut, SlowProxy
from sqlalchemy import func, select
from task_helpers import (
    assert_balance,
    assert_mint_agrees,
    balance,
    call,
    db_state,
    execute_until_pending,
    fund,
    keep_of,
    kill_worker_while_held,
    mint_states,
    op_data,
    op_view,
    outcomes_at_once,
    raises,
    restart_killed_worker,
    wait_until,
)

from models import ProofState, StoredProof
from nuts.client import MintClient
from nuts.models import MeltQuoteState, ProofSpentState
from sagas.engine import SagaContext

pytestmark = pytest.mark.mint
ROUTING_FEE = 1  # the FakeWallet pays every invoice with a 1 sat routing fee (docs/test-mint.md)
# melts come back PENDING, and stay so when checked until a restart says otherwise
PENDING = {"FAKEWALLET_PAY_INVOICE_STATE": "PENDING", "FAKEWALLET_PAYMENT_STATE": "PENDING"}
FAILING = {"FAKEWALLET_PAY_INVOICE_STATE": "FAILED", "FAKEWALLET_PAYMENT_STATE": "FAILED"}
MELT_PATH = "/v1/melt/bolt11"


# --- calling the worker ----------------------------------------------------------------------


def prepare(client: Celery, wallet: str, mint_url: str, invoice: str) -> dict:
    return call(client, "cashu.melt.prepare", wallet=wallet, mint_url=mint_url, invoice=invoice)


def poll_until_settled(client: Celery, op_id: str, task: str = "cashu.beat.poll_melts") -> dict:
    """Run the poller as the beat would (every tick, bounded: 30 tries) until the melt
    leaves pending / executing. A restarted Nutshell settles its pending melts itself at
    startup; a check racing with that is answered with an error and the next tick succeeds.
    """
    view = op_view(client, op_id)
    for _ in range(30):
        counts = call(client, task)
        assert set(counts) == {"recovered", "rolled_back", "still_pending", "failed", "skipped"}
        view = op_view(client, op_id)
        if view["state"] not in ("pending", "executing"):
            return view
        time.sleep(0.5)
    return view


# --- reading our database and the mint -------------------------------------------------------


def change_stored(ctx: SagaContext, op_id: str) -> int:
    """The change proofs the melt stored: proofs it created, minus a pre-swap's keep."""
    with ctx.uow() as session:
        created = session.scalar(
            select(func.coalesce(func.sum(StoredProof.amount), 0)).where(
                StoredProof.created_by == uuid.UUID(op_id), StoredProof.state == ProofState.UNSPENT
            )
        )
    return int(created) - keep_of(op_data(ctx, op_id))


def quote_state(mint_url: str, quote_id: str) -> MeltQuoteState:
    with MintClient(mint_url) as mint:
        return mint.check_melt_quote(quote_id).state


def melt_ops(client: Celery, wallet: str) -> list[dict]:
    return call(client, "cashu.ops.list", wallet=wallet, kind="melt")["operations"]


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(params=MINT_VERSIONS)
def test_mint(
    request: pytest.FixtureRequest, test_mint: RunningMint, test_mint21: RunningMint
) -> RunningMint:
    """Every melt test runs against each pinned Nutshell version (both serve asynchronous
    melts; 0.21.0 checks the inputs before it answers PENDING, 0.20.2 after)."""
    return test_mint if request.param == test_mint.version else test_mint21


# --- 1. paid at once -------------------------------------------------------------------------


def test_prepare_reports_every_fee_then_execute_pays_at_once_with_change(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 300)
    invoice = make_invoice(100)

    prepared = prepare(client, wallet, mint_url, invoice)

    assert prepared["state"] == "prepared" and prepared["kind"] == "melt"
    assert prepared["quote_id"] and prepared["amount"] == 100 and prepared["request"] == invoice
    assert prepared["fee_reserve"] >= 1
    assert {"swap_fee", "needs_swap", "input_amount", "input_fee"} <= prepared.keys()
    inputs = prepared["input_amount"]
    assert inputs >= 100 + prepared["fee_reserve"] + prepared["input_fee"] + prepared["swap_fee"]
    assert prepared["swap_fee"] == (1 if prepared["needs_swap"] else 0)
    # nothing moved: the same total, the inputs only reserved
    assert_balance(client, wallet, spendable=300 - inputs, reserved=inputs)
    assert quote_state(mint_url, prepared["quote_id"]) == MeltQuoteState.UNPAID

    paid = call(client, "cashu.melt.execute", operation_id=prepared["id"])

    assert paid["state"] == "finalized" and paid["id"] == prepared["id"] and paid["error"] is None
    assert paid["preimage"] and paid["finalized_at"]
    assert paid["change_amount"] > 0
    assert paid["change_amount"] == change_stored(saga_context, paid["id"])
    assert paid["effective_fee"] == prepared["swap_fee"] + prepared["input_fee"] + ROUTING_FEE
    assert balance(client, wallet)["total"] == 300 - 100 - paid["effective_fee"]
    assert_balance(client, wallet, spendable=300 - 100 - paid["effective_fee"])
    assert quote_state(mint_url, prepared["quote_id"]) == MeltQuoteState.PAID
    assert_mint_agrees(saga_context, mint_url, wallet)


def test_pay_prepares_and_executes_in_one_call_with_change(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 300)

    paid = call(
        client, "cashu.melt.pay", wallet=wallet, mint_url=mint_url, invoice=make_invoice(100)
    )

    assert paid["state"] == "finalized" and paid["kind"] == "melt" and paid["preimage"]
    assert paid["change_amount"] == change_stored(saga_context, paid["id"]) > 0
    assert paid["effective_fee"] == paid["swap_fee"] + paid["input_fee"] + ROUTING_FEE
    assert quote_state(mint_url, paid["quote_id"]) == MeltQuoteState.PAID
    assert_balance(client, wallet, spendable=300 - 100 - paid["effective_fee"])
    assert_mint_agrees(saga_context, mint_url, wallet)


def test_pay_whose_fees_could_pass_max_fee_is_refused_and_changes_nothing(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 300)
    invoice = make_invoice(100)

    error = raises(
        client, "cashu.melt.pay", wallet=wallet, mint_url=mint_url, invoice=invoice, max_fee=0
    )

    assert type(error).__name__ == "FeeLimitExceededError"
    assert "max_fee 0" in str(error)
    assert melt_ops(client, wallet) == []  # no operation, nothing reserved
    assert_balance(client, wallet, spendable=300)
    assert_mint_agrees(saga_context, mint_url, wallet)
    # within the limit the same invoice pays
    prepared = call(
        client, "cashu.melt.prepare", wallet=wallet, mint_url=mint_url, invoice=invoice, max_fee=50
    )
    worst = prepared["fee_reserve"] + prepared["swap_fee"] + prepared["input_fee"]
    assert worst <= 50
    assert call(client, "cashu.melt.execute", operation_id=prepared["id"])["state"] == "finalized"


@pytest.mark.parametrize("max_fee", [-1, 1.5, "10", True])
def test_max_fee_must_be_a_whole_number_of_sat(
    celery_client: Celery, mint_url: str, wallet: str, max_fee: object
) -> None:
    fund(celery_client, wallet, mint_url, 50)
    error = raises(
        celery_client,
        "cashu.melt.pay",
        wallet=wallet,
        mint_url=mint_url,
        invoice=make_invoice(10),
        max_fee=max_fee,
    )
    assert type(error).__name__ == "InvalidAmountError"
    assert melt_ops(celery_client, wallet) == []
    assert_balance(celery_client, wallet, spendable=50)


# --- 2. / 3. pending, settled or failed later, found by the poller ------------------------------


def test_a_pending_melt_is_finalized_by_the_poller_once_settled(
    celery_client: Celery, own_mint, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    mint, url = own_mint(PENDING)
    fund(client, wallet, url, 300)
    op = prepare(client, wallet, url, make_invoice(100))

    pending = execute_until_pending(client, operation_id=op["id"])

    assert pending["state"] == "pending"
    data = op_data(saga_context, op["id"])
    assert_balance(
        client,
        wallet,
        spendable=300 - op["input_amount"] + keep_of(data),
        pending=data["melt_input"],
    )
    counts = call(client, "cashu.beat.poll_melts")
    # seen and left pending (or skipped: the step polling the quote held the lock)
    assert counts["still_pending"] + counts["skipped"] >= 1, (counts, op_view(client, op["id"]))
    assert op_view(client, op["id"])["state"] == "pending"

    mint.restart({**PENDING, "FAKEWALLET_PAYMENT_STATE": "SETTLED"})
    done = poll_until_settled(client, op["id"])

    assert done["state"] == "finalized", done
    assert done["change_amount"] > 0
    assert done["change_amount"] == change_stored(saga_context, op["id"])
    # A FakeWallet payment settled by a later status check reports neither a preimage nor
    # a routing fee: the mint returns the whole fee reserve as change.
    assert done["effective_fee"] == op["swap_fee"] + op["input_fee"]
    assert_balance(client, wallet, spendable=300 - 100 - done["effective_fee"])
    assert_mint_agrees(saga_context, url, wallet)


def test_a_pending_melt_that_fails_later_is_rolled_back_by_the_poller(
    celery_client: Celery, own_mint, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    mint, url = own_mint(PENDING)
    fund(client, wallet, url, 300)
    op = prepare(client, wallet, url, make_invoice(100))
    assert execute_until_pending(client, operation_id=op["id"])["state"] == "pending"

    mint.restart({**PENDING, "FAKEWALLET_PAYMENT_STATE": "FAILED"})
    done = poll_until_settled(client, op["id"])

    assert done["state"] == "rolled_back", done
    assert done["effective_fee"] == op["swap_fee"]  # a pre-swap, if one happened, was real
    assert_balance(client, wallet, spendable=300 - op["swap_fee"])
    assert_mint_agrees(saga_context, url, wallet)


# --- 4. failed outright ----------------------------------------------------------------------


def test_a_payment_that_fails_outright_rolls_back_with_nothing_reserved(
    celery_client: Celery, own_mint, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    _, url = own_mint(FAILING)
    fund(client, wallet, url, 300)
    op = prepare(client, wallet, url, make_invoice(100))

    result = call(client, "cashu.melt.execute", operation_id=op["id"])

    assert result["state"] == "rolled_back"
    assert result["error"]["code"] == "LIGHTNING_PAYMENT_FAILED"
    assert result["effective_fee"] == op["swap_fee"]
    assert "preimage" not in result and "change_amount" not in result
    assert_balance(client, wallet, spendable=300 - op["swap_fee"])
    assert quote_state(url, op["quote_id"]) == MeltQuoteState.UNPAID
    assert_mint_agrees(saga_context, url, wallet)


# --- 5. two executes of one operation at once ------------------------------------------------


def test_two_concurrent_executes_of_one_melt_pay_once(
    celery_client: Celery, proxy: SlowProxy, wallet: str, saga_context: SagaContext
) -> None:
    client, url = celery_client, proxy.url
    fund(client, wallet, url, 300)
    op = prepare(client, wallet, url, make_invoice(100))
    proxy.hold(MELT_PATH, 2.0)  # the melt lasts 2 s: the executes overlap

    outcomes = outcomes_at_once(client, "cashu.melt.execute", op["id"])
    proxy.release()

    assert sorted(outcomes) == ["OperationInProgressError", "finalized"], outcomes
    assert proxy.held == [MELT_PATH]  # one melt request reached the mint
    done = op_view(client, op["id"])
    assert done["state"] == "finalized"
    assert done["change_amount"] == change_stored(saga_context, op["id"])
    assert done["effective_fee"] == op["swap_fee"] + op["input_fee"] + ROUTING_FEE
    assert_balance(client, wallet, spendable=300 - 100 - done["effective_fee"])
    assert_mint_agrees(saga_context, url, wallet)


# --- 6. one invoice, two melts ---------------------------------------------------------------


def test_two_melts_of_one_invoice_pay_it_once(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 1000)
    invoice = make_invoice(100)
    first = prepare(client, wallet, mint_url, invoice)
    second = prepare(client, wallet, mint_url, invoice)
    assert first["quote_id"] != second["quote_id"]

    paid = call(client, "cashu.melt.execute", operation_id=first["id"])
    err = raises(client, "cashu.melt.execute", operation_id=second["id"])

    assert paid["state"] == "finalized"
    assert type(err).__name__ == "DuplicatePaymentError", repr(err)
    refused = op_view(client, second["id"])
    assert (refused["state"], refused["effective_fee"]) == ("rolled_back", 0)
    assert "preimage" not in refused
    assert_balance(
        client, wallet, spendable=1000 - 100 - paid["effective_fee"] - refused["effective_fee"]
    )
    assert quote_state(mint_url, paid["quote_id"]) == MeltQuoteState.PAID
    assert quote_state(mint_url, refused["quote_id"]) != MeltQuoteState.PAID
    assert_mint_agrees(saga_context, mint_url, wallet)


# --- 7. refused before anything moves --------------------------------------------------------


def test_insufficient_balance_is_a_typed_error_and_reserves_nothing(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 50)

    for amount in (100, 50):  # 50: the fee reserve and input fee do not fit either
        err = raises(
            client,
            "cashu.melt.prepare",
            wallet=wallet,
            mint_url=mint_url,
            invoice=make_invoice(amount),
        )
        assert type(err).__name__ == "InsufficientBalanceError", repr(err)
        assert err.code == "INSUFFICIENT_BALANCE"  # type: ignore[attr-defined]

    assert melt_ops(client, wallet) == []
    assert_balance(client, wallet, spendable=50)
    assert_mint_agrees(saga_context, mint_url, wallet)


def test_an_untrusted_mint_is_a_typed_error_and_reserves_nothing(
    celery_client: Celery, own_mint, wallet: str
) -> None:
    client = celery_client
    mint, url = own_mint()
    fund(client, wallet, url, 200)
    assert call(client, "cashu.mints.set_trusted", url=url, trusted=False)["trusted"] is False
    mint.stop()  # any request would now be a connection error, not a trust error

    err = raises(
        client, "cashu.melt.prepare", wallet=wallet, mint_url=url, invoice=make_invoice(100)
    )

    assert type(err).__name__ == "UntrustedMintError", repr(err)
    assert err.code == "UNTRUSTED_MINT"  # type: ignore[attr-defined]
    assert melt_ops(client, wallet) == []
    assert_balance(client, wallet, spendable=200)


# --- 8. by (mint_url, quote_id) --------------------------------------------------------------


def test_execute_and_refresh_by_mint_url_and_quote_id(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 300)
    op = prepare(client, wallet, mint_url, make_invoice(100))

    paid = call(client, "cashu.melt.execute", mint_url=mint_url, quote_id=op["quote_id"])

    assert paid["state"] == "finalized" and paid["id"] == op["id"]
    assert paid["change_amount"] == change_stored(saga_context, op["id"])
    by_quote = call(client, "cashu.melt.refresh", mint_url=mint_url + "/", quote_id=op["quote_id"])
    by_id = call(client, "cashu.melt.refresh", operation_id=op["id"])
    assert by_quote == by_id == op_view(client, op["id"])
    assert by_quote["state"] == "finalized"
    for task in ("cashu.melt.execute", "cashu.melt.refresh"):
        err = raises(client, task, mint_url=mint_url, quote_id="no-such-quote")
        assert type(err).__name__ == "OperationNotFoundError", repr(err)
        err = raises(client, task, quote_id=op["quote_id"])  # a quote alone is not enough
        assert type(err).__name__ == "OperationNotFoundError", repr(err)
    assert_balance(client, wallet, spendable=300 - 100 - paid["effective_fee"])
    assert_mint_agrees(saga_context, mint_url, wallet)


def test_refresh_by_mint_url_and_quote_id_settles_a_pending_melt(
    celery_client: Celery, own_mint, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    mint, url = own_mint(PENDING)
    fund(client, wallet, url, 300)
    op = prepare(client, wallet, url, make_invoice(100))
    pending = execute_until_pending(client, mint_url=url, quote_id=op["quote_id"])
    assert pending["state"] == "pending" and pending["id"] == op["id"]
    assert refresh_by_quote(client, url, op["quote_id"], pending)["state"] == "pending"

    mint.restart({**PENDING, "FAKEWALLET_PAYMENT_STATE": "SETTLED"})
    done = pending
    for _ in range(30):  # bounded: the restarted mint settles its pending melts at startup
        done = refresh_by_quote(client, url, op["quote_id"], done)
        if done["state"] not in ("pending", "executing"):
            break
        time.sleep(0.5)

    assert done["state"] == "finalized" and done["id"] == op["id"], done
    assert done["change_amount"] == change_stored(saga_context, op["id"])
    assert_balance(client, wallet, spendable=300 - 100 - done["effective_fee"])
    assert_mint_agrees(saga_context, url, wallet)


def refresh_by_quote(client: Celery, url: str, quote_id: str, before: dict) -> dict:
    """cashu.melt.refresh by (mint_url, quote_id); `before` when a sweep or the step polling
    the quote holds the lock right then (OperationInProgressError)."""
    try:
        return call(client, "cashu.melt.refresh", mint_url=url, quote_id=quote_id)
    except Exception as exc:  # noqa: BLE001 - only the lock being held is expected
        assert type(exc).__name__ == "OperationInProgressError", repr(exc)
        return before


# --- 9. cancel, get_by_quote ------------------------------------------------------------------


def test_cancel_releases_a_prepared_melt_and_get_by_quote_finds_it(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 300)
    op = prepare(client, wallet, mint_url, make_invoice(100))
    assert_balance(client, wallet, spendable=300 - op["input_amount"], reserved=op["input_amount"])

    found = call(client, "cashu.melt.get_by_quote", mint_url=mint_url, quote_id=op["quote_id"])
    assert found == op_view(client, op["id"]) and found["state"] == "prepared"

    cancelled = call(client, "cashu.melt.cancel", operation_id=op["id"])

    assert cancelled["state"] == "rolled_back" and cancelled["effective_fee"] == 0
    assert call(client, "cashu.melt.cancel", operation_id=op["id"])["state"] == "rolled_back"
    found = call(client, "cashu.melt.get_by_quote", mint_url=mint_url, quote_id=op["quote_id"])
    assert found["id"] == op["id"] and found["state"] == "rolled_back"
    assert call(client, "cashu.melt.get_by_quote", mint_url=mint_url, quote_id="nope") is None
    assert quote_state(mint_url, op["quote_id"]) == MeltQuoteState.UNPAID
    assert_balance(client, wallet, spendable=300)
    assert_mint_agrees(saga_context, mint_url, wallet)


# --- 10. a worker SIGKILLed after the melt request left -----------------------------------------


def test_a_worker_killed_after_the_melt_request_left_loses_no_change(
    celery_worker,
    celery_client: Celery,
    proxy: SlowProxy,
    wallet: str,
    saga_context: SagaContext,
    redis_url: str,
) -> None:
    client, url = celery_client, proxy.url
    fund(client, wallet, url, 300)
    op = prepare(client, wallet, url, make_invoice(100))

    # the mint pays; its PAID answer is still in the proxy when the worker dies
    kill_worker_while_held(celery_worker, client, proxy, "cashu.melt.execute", op["id"], MELT_PATH)

    # We wrote ahead and never heard back: executing, the melt inputs spent at the mint.
    assert op_data(saga_context, op["id"])["phase"] == "melt"
    assert db_state(saga_context, op["id"]) == "executing"  # no worker to ask: the database

    def paid_at_the_mint() -> bool:  # a mint paying in the background (0.21.0) may lag
        melt_inputs = mint_states(
            saga_context, url, used_by=uuid.UUID(op["id"]), state=ProofState.RESERVED
        )
        return set(melt_inputs.values()) == {ProofSpentState.SPENT}

    assert wait_until(paid_at_the_mint, timeout=10, every=0.2)
    assert quote_state(url, op["quote_id"]) == MeltQuoteState.PAID

    restart_killed_worker(celery_worker, client, redis_url, op["id"])
    done = poll_until_settled(client, op["id"], task="cashu.recovery.run")

    assert done["state"] == "finalized", done
    assert done["preimage"]
    assert done["change_amount"] > 0
    assert done["change_amount"] == change_stored(saga_context, op["id"])
    # no change lost: the melt cost exactly what one paid at once costs
    assert done["effective_fee"] == op["swap_fee"] + op["input_fee"] + ROUTING_FEE
    assert_balance(client, wallet, spendable=300 - 100 - done["effective_fee"])
    assert_mint_agrees(saga_context, url, wallet)


# --- a pre-swap whose request was cut on the wire ------------------------------------------


@pytest.mark.parametrize("how", [Cut.BEFORE, Cut.AFTER, Cut.BAD_GATEWAY])
def test_a_payment_whose_swap_was_cut_on_the_wire_costs_exactly_its_fees(
    celery_client: Celery,
    proxy: SlowProxy,
    wallet: str,
    saga_context: SagaContext,
    monkeypatch: pytest.MonkeyPatch,
    how: Cut,
) -> None:
    client, url = celery_client, proxy.url
    monkeypatch.setattr("sagas.proofs.KEEP_TARGET", 0)  # one 1024 sat proof, minted here
    fund_from_here(saga_context, wallet, url, 1024)
    proxy.cut("/v1/swap", how)

    paid = call(client, "cashu.melt.pay", wallet=wallet, mint_url=url, invoice=make_invoice(20))
    assert paid["needs_swap"] and paid["state"] == "executing", paid
    assert MELT_PATH not in proxy.seen  # the melt waits for a swap known to be done
    done = poll_until_settled(client, paid["id"], task="cashu.beat.retry_in_flight")

    assert done["state"] == "finalized", done
    cost = 1024 - balance(client, wallet)["total"] - 20
    assert cost == done["effective_fee"] == paid["swap_fee"] + paid["input_fee"] + ROUTING_FEE
    assert cost <= paid["fee_reserve"] + paid["swap_fee"] + paid["input_fee"]
    assert_balance(client, wallet, spendable=1024 - 20 - cost)
    assert_mint_agrees(saga_context, url, wallet)
