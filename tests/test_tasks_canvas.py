"""The public step tasks in Celery's canvas: a chain hands each step the Operation the step
before it returned; a group runs steps side by side; a link callback gets the Operation, a
link_error callback the failed task's id. A chain whose second step fails leaves the
operation settled (rolled back, nothing reserved) or, when the step refused its arguments,
prepared for the caller to roll back. Every test ends on exact balances."""

from __future__ import annotations

import uuid

import pytest
from celery import Celery, chain, group
from celery.canvas import Signature
from mint_harness import make_invoice
from task_helpers import (
    TIMEOUT,
    assert_balance,
    assert_mint_agrees,
    call,
    fund,
    mint_states,
    op_view,
    wait_until,
)

from models import ProofState
from nuts.models import ProofSpentState
from nuts.tokens import decode_token
from sagas.engine import SagaContext

pytestmark = pytest.mark.mint
# melts the mint's FakeWallet fails outright (tests/test_tasks_melt.py, docs/test-mint.md)
FAILING = {"FAKEWALLET_PAY_INVOICE_STATE": "FAILED", "FAKEWALLET_PAYMENT_STATE": "FAILED"}


# --- helpers and fixtures ---------------------------------------------------------------------


def step(client: Celery, name: str, **kwargs: object) -> Signature:
    """A signature of one of our public tasks on the public queue."""
    return client.signature(name, kwargs=kwargs, queue="cashu")


# --- chains of a saga's steps -----------------------------------------------------------------


def test_a_chain_of_send_prepare_and_execute_makes_the_token(
    celery_client: Celery, mint_url: str, wallet: str
) -> None:
    fund(celery_client, wallet, mint_url, 100)
    steps = chain(
        celery_client.signature(
            "cashu.send.prepare",
            kwargs={"wallet": wallet, "mint_url": mint_url, "amount": 30},
            queue="cashu",
        ),
        celery_client.signature("cashu.send.execute", queue="cashu"),
    )

    sent = steps.apply_async().get(timeout=TIMEOUT)

    assert sent["state"] == "pending" and sent["token"]
    assert_balance(celery_client, wallet, spendable=100 - 30 - sent["fee"], pending=30)


def test_a_chain_of_melt_prepare_and_execute_pays_the_invoice(
    celery_client: Celery, mint_url: str, wallet: str
) -> None:
    fund(celery_client, wallet, mint_url, 300)
    steps = chain(
        celery_client.signature(
            "cashu.melt.prepare",
            kwargs={"wallet": wallet, "mint_url": mint_url, "invoice": make_invoice(100)},
            queue="cashu",
        ),
        celery_client.signature("cashu.melt.execute", queue="cashu"),
    )

    paid = steps.apply_async().get(timeout=TIMEOUT)

    assert paid["state"] == "finalized"
    assert paid["effective_fee"] <= paid["fee_reserve"] + paid["swap_fee"] + paid["input_fee"]
    assert_balance(celery_client, wallet, spendable=300 - 100 - paid["effective_fee"])


def test_a_chain_of_mint_prepare_and_execute_mints_the_amount(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext
) -> None:
    steps = chain(
        step(celery_client, "cashu.mint.prepare", wallet=wallet, mint_url=mint_url, amount=200),
        step(celery_client, "cashu.mint.execute"),
    )

    minted = steps.apply_async().get(timeout=TIMEOUT)

    assert (minted["kind"], minted["state"], minted["amount"]) == ("mint", "finalized", 200)
    assert minted["wallet"] == wallet
    assert_balance(celery_client, wallet, spendable=200, mint_url=mint_url)
    assert_mint_agrees(saga_context, mint_url, wallet)


def test_a_chain_of_receive_prepare_and_execute_receives_another_wallets_token(
    celery_client: Celery, mint_url: str, alice: str, bob: str, saga_context: SagaContext
) -> None:
    client = celery_client
    fund(client, alice, mint_url, 200)
    sent = call(client, "cashu.send.token", wallet=alice, mint_url=mint_url, amount=50)
    steps = chain(
        step(client, "cashu.receive.prepare", wallet=bob, token=sent["token"]),
        step(client, "cashu.receive.execute"),
    )

    received = steps.apply_async().get(timeout=TIMEOUT)

    assert (received["kind"], received["state"], received["wallet"]) == (
        "receive",
        "finalized",
        bob,
    )
    assert received["fee"] >= 1 and received["amount"] == 50 - received["fee"]
    assert_balance(client, bob, spendable=50 - received["fee"], mint_url=mint_url)
    assert_balance(client, alice, spendable=200 - 50 - sent["fee"], pending=50)
    assert_mint_agrees(saga_context, mint_url, bob)
    # A's send stays pending until the beat's watcher sees what the mint already says:
    # the token's proofs are spent (claimed by B), and A's own proofs are unspent.
    claimed = mint_states(saga_context, mint_url, used_by=uuid.UUID(sent["id"]))
    assert set(claimed.values()) == {ProofSpentState.SPENT}
    kept = mint_states(saga_context, mint_url, wallet=alice, state=ProofState.UNSPENT)
    assert set(kept.values()) == {ProofSpentState.UNSPENT}


# --- a group ----------------------------------------------------------------------------------


def test_a_group_of_send_tokens_for_one_wallet_makes_distinct_tokens_that_add_up(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    amounts = [11, 12, 13, 14, 15]
    funded = fund(client, wallet, mint_url, 500)["amount"]
    sends = group(
        step(client, "cashu.send.token", wallet=wallet, mint_url=mint_url, amount=amount)
        for amount in amounts
    )

    sent = sends.apply_async().get(timeout=TIMEOUT)

    assert [s["amount"] for s in sent] == amounts
    assert {s["state"] for s in sent} == {"pending"}
    assert len({s["id"] for s in sent}) == len({s["token"] for s in sent}) == len(amounts)
    tokens = [decode_token(s["token"]) for s in sent]
    assert [t.amount for t in tokens] == amounts
    secrets = [p.secret for t in tokens for p in t.proofs]
    assert len(set(secrets)) == len(secrets)  # no proof in two tokens
    fees = sum(s["fee"] for s in sent)
    assert_balance(client, wallet, spendable=funded - sum(amounts) - fees, pending=sum(amounts))
    assert_mint_agrees(saga_context, mint_url, wallet)


# --- link and link_error ----------------------------------------------------------------------


def test_a_link_callback_gets_the_operation_the_task_returned(
    celery_client: Celery, mint_url: str, wallet: str
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 100)
    callback = step(client, "cashu.ops.get")
    callback.freeze()  # its id, to read its result by

    sent = (
        step(client, "cashu.send.token", wallet=wallet, mint_url=mint_url, amount=30)
        .apply_async(link=callback)
        .get(timeout=TIMEOUT)
    )
    got = client.AsyncResult(callback.id).get(timeout=TIMEOUT)

    assert (got["id"], got["kind"], got["state"]) == (sent["id"], "send", "pending")
    assert got["token"] == sent["token"]
    assert_balance(client, wallet, spendable=100 - 30 - sent["fee"], pending=30)


def test_a_melt_execute_linked_to_its_prepare_answers_the_final_operation_under_its_id(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 300)
    execute = step(client, "cashu.melt.execute")
    execute.freeze()

    prepared = (
        step(
            client,
            "cashu.melt.prepare",
            wallet=wallet,
            mint_url=mint_url,
            invoice=make_invoice(100),
        )
        .apply_async(link=execute)
        .get(timeout=TIMEOUT)
    )
    paid = client.AsyncResult(execute.id).get(timeout=TIMEOUT)

    assert prepared["state"] == "prepared"
    assert (paid["id"], paid["state"]) == (prepared["id"], "finalized")
    assert_balance(client, wallet, spendable=300 - 100 - paid["effective_fee"])
    assert_mint_agrees(saga_context, mint_url, wallet)


def test_a_link_callback_of_melt_execute_gets_the_final_operation_of_its_last_step(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 300)
    op = call(
        client, "cashu.melt.prepare", wallet=wallet, mint_url=mint_url, invoice=make_invoice(100)
    )
    callback = step(client, "cashu.ops.get")
    callback.freeze()

    paid = (
        step(client, "cashu.melt.execute", operation_id=op["id"])
        .apply_async(link=callback)
        .get(timeout=TIMEOUT)
    )
    called = client.AsyncResult(callback.id)

    assert paid["state"] == "finalized"
    assert called.get(timeout=TIMEOUT)["state"] == "finalized"
    # what the callback was given: the Operation the last step (cashu.melt.step.*)
    # returned, not the executing one execute saw when it handed on
    (given,) = called.args
    assert (given["id"], given["state"]) == (op["id"], "finalized")
    assert_balance(client, wallet, spendable=300 - 100 - paid["effective_fee"])
    assert_mint_agrees(saga_context, mint_url, wallet)


def test_a_link_error_callback_gets_the_failed_tasks_id_whose_result_is_the_typed_error(
    celery_client: Celery, mint_url: str, wallet: str
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 50)
    errback = step(client, "cashu.ops.get")
    errback.freeze()

    failed = step(
        client, "cashu.send.token", wallet=wallet, mint_url=mint_url, amount=80
    ).apply_async(link_error=errback)
    with pytest.raises(Exception) as caught:
        failed.get(timeout=TIMEOUT)
    called = client.AsyncResult(errback.id)

    assert type(caught.value).__name__ == "InsufficientBalanceError", repr(caught.value)
    # Celery sends an errback that takes one argument as a task, with the failed task's id
    # (one taking more it calls inside the failing worker, with (request, exc, traceback),
    # which no task of ours accepts). No task of ours reads a task id: cashu.ops.get finds
    # no operation by it. The id leads the caller to the typed error.
    assert called.get(timeout=TIMEOUT) is None
    assert called.args == [failed.id]
    assert type(client.AsyncResult(called.args[0]).result).__name__ == "InsufficientBalanceError"
    assert call(client, "cashu.ops.list", wallet=wallet, kind="send")["operations"] == []
    assert_balance(client, wallet, spendable=50)


# --- a step of a chain that fails -------------------------------------------------------------


def test_a_chain_whose_send_execute_cannot_reach_the_mint_rolls_back_in_full(
    celery_client: Celery, own_mint, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    mint, url = own_mint()
    fund(client, wallet, url, 100)
    mint.stop(remove_db=False)  # prepare reads only our database; the swap is refused
    steps = chain(
        # the receiver's fee on top: the inputs never go out as they are, the mint must swap
        step(
            client,
            "cashu.send.prepare",
            wallet=wallet,
            mint_url=url,
            amount=30,
            include_receiver_fee=True,
        ),
        step(client, "cashu.send.execute"),
    )

    result = steps.apply_async()
    with pytest.raises(Exception) as caught:
        result.get(timeout=TIMEOUT)

    assert type(caught.value).__name__ == "MintUnreachableError", repr(caught.value)
    prepared = result.parent.get(timeout=TIMEOUT)
    assert prepared["needs_swap"] is True  # the send had to ask the mint
    failed = op_view(client, prepared["id"])
    assert failed["state"] == "rolled_back"
    assert failed["error"]["code"] == "MINT_UNREACHABLE"
    assert_balance(client, wallet, spendable=100, mint_url=url)  # nothing reserved
    mint.restart()
    assert_mint_agrees(saga_context, url, wallet)


def test_a_chain_whose_melt_payment_fails_rolls_back_with_nothing_reserved(
    celery_client: Celery, own_mint, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    _, url = own_mint(FAILING)
    fund(client, wallet, url, 300)
    steps = chain(
        step(client, "cashu.melt.prepare", wallet=wallet, mint_url=url, invoice=make_invoice(100)),
        step(client, "cashu.melt.execute"),
    )

    result = steps.apply_async()
    failed = result.get(timeout=TIMEOUT)

    prepared = result.parent.get(timeout=TIMEOUT)
    assert failed["id"] == prepared["id"]
    assert failed["state"] == "rolled_back"
    assert failed["error"]["code"] == "LIGHTNING_PAYMENT_FAILED"
    assert failed["effective_fee"] == prepared["swap_fee"]
    assert op_view(client, failed["id"])["state"] == "rolled_back"
    assert_balance(client, wallet, spendable=300 - prepared["swap_fee"], mint_url=url)
    assert_mint_agrees(saga_context, url, wallet)


def test_a_chain_whose_execute_refuses_its_arguments_releases_the_prepared_send(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 100)
    steps = chain(
        step(client, "cashu.send.prepare", wallet=wallet, mint_url=mint_url, amount=30),
        step(client, "cashu.send.execute", token_version=5),
    )

    result = steps.apply_async()
    with pytest.raises(Exception) as caught:
        result.get(timeout=TIMEOUT)

    assert type(caught.value).__name__ == "InvalidRequestError", repr(caught.value)
    assert "token_version" in str(caught.value)
    # The chain failed: the send its first step prepared does not hold its inputs for the
    # day the stale-prepared sweep waits.
    prepared = result.parent.get(timeout=TIMEOUT)
    assert op_view(client, prepared["id"])["state"] == "rolled_back"
    assert_balance(client, wallet, spendable=100, mint_url=mint_url)
    assert_mint_agrees(saga_context, mint_url, wallet)


def test_a_step_given_an_operation_id_by_hand_that_refuses_its_arguments_changes_nothing(
    celery_client: Celery, mint_url: str, wallet: str
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 100)
    prepared = call(client, "cashu.send.prepare", wallet=wallet, mint_url=mint_url, amount=30)

    with pytest.raises(Exception) as caught:
        call(client, "cashu.send.execute", operation_id=prepared["id"], token_version=5)

    assert type(caught.value).__name__ == "InvalidRequestError", repr(caught.value)
    assert op_view(client, prepared["id"])["state"] == "prepared"  # the caller may retry
    assert_balance(
        client,
        wallet,
        spendable=100 - prepared["input_amount"],
        reserved=prepared["input_amount"],
    )


def test_a_chain_step_given_something_that_is_no_operation_refuses_it_by_name(
    celery_client: Celery, mint_url: str, wallet: str
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 100)
    steps = chain(
        step(client, "cashu.wallet.balance", wallet=wallet),
        step(client, "cashu.send.execute"),
    )

    with pytest.raises(Exception) as caught:
        steps.apply_async().get(timeout=TIMEOUT)

    assert type(caught.value).__name__ == "InvalidRequestError", repr(caught.value)
    assert "operation_id must be a string" in str(caught.value)
    assert_balance(client, wallet, spendable=100, mint_url=mint_url)


# --- a caller that does not wait --------------------------------------------------------------


def test_a_chain_to_melt_execute_without_waiting_answers_executing_then_it_finalizes(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext
) -> None:
    client = celery_client
    fund(client, wallet, mint_url, 300)
    steps = chain(
        step(
            client,
            "cashu.melt.prepare",
            wallet=wallet,
            mint_url=mint_url,
            invoice=make_invoice(100),
        ),
        step(client, "cashu.melt.execute", wait=False),
    )

    started = steps.apply_async().get(timeout=TIMEOUT)

    assert (started["kind"], started["state"]) == ("melt", "executing")
    settled = wait_until(
        lambda: (view := op_view(client, started["id"]))["state"] != "executing" and view,
        timeout=TIMEOUT,
        every=0.2,
    )
    assert settled and settled["state"] == "finalized", settled
    assert_balance(client, wallet, spendable=300 - 100 - settled["effective_fee"])
    assert_mint_agrees(saga_context, mint_url, wallet)
