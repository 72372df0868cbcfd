"""Recovery, proved end to end against a real worker and a real Nutshell mint.

1. A worker that starts settles what a dead worker left `executing`, with no task called:
   the start-up run (tasks/lifecycle.py `_recover_at_start` sends cashu.recovery.run). Those
   tests run a worker of their own on a Redis database of its own (as tests/test_clock_skew.py
   does), so the session's worker cannot help; the operation is driven into `executing` at
   saga level first, and shown to sit there before the worker starts.
2. `rolling_back` resumes after a worker is SIGKILLed while the mint holds the answer to
   the reclaim swap: a send's rollback, a pending melt's reclaim (quote UNPAID).
3. An operation left open at a mint set untrusted is not touched by a sweep; once the mint
   is trusted again, the next sweep settles it.
4. A mint quote that expires unpaid ends `failed` with its outbox event (table and stream)
   and its history entry.

Every test ends on exact balances, ours and the mint's (checkstate of our proofs).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest
import redis
from celery import Celery
from mint_harness import RunningMint, make_invoice
from saga_helpers import CutOnce, bal, register_mint, with_transport
from saga_helpers import fund as fund_from_here
from slow_proxy import SlowProxy
from sqlalchemy import select
from task_helpers import (
    TIMEOUT,
    assert_balance,
    assert_mint_agrees,
    call,
    db_state,
    execute_until_pending,
    fund,
    keep_of,
    kill_worker_while_held,
    mint_states,
    new_wallet_name,
    op_data,
    op_view,
    restart_killed_worker,
    wait_until,
)
from worker_harness import RunningWorker

from models import Event, Operation, ProofState
from nuts.client import MintClient
from nuts.errors import MintRejectedError
from nuts.models import MeltQuoteState, MintQuoteState, ProofSpentState
from sagas import melt as melt_saga
from sagas import send as send_saga
from sagas.engine import SagaContext

pytestmark = pytest.mark.mint
SWAP_PATH = "/v1/swap"
MELT_PATH = "/v1/melt/bolt11"
ROUTING_FEE = 1  # the FakeWallet pays every invoice with a 1 sat routing fee (docs/test-mint.md)
# melts come back PENDING, and stay so when checked until a restart says otherwise
PENDING = {"FAKEWALLET_PAY_INVOICE_STATE": "PENDING", "FAKEWALLET_PAYMENT_STATE": "PENDING"}
STREAM = "cashu:events"


# --- a worker of the test's own -----------------------------------------------------------------


@pytest.fixture
def own_worker(own_workers: Callable[..., RunningWorker]) -> Callable[[], RunningWorker]:
    """own_worker(): one worker of the test's own (conftest own_workers); only what it does
    itself can settle anything."""
    return own_workers


def recovery_runs(worker: RunningWorker) -> list[dict]:
    """The results of cashu.recovery.run in the worker's result backend (result_extended
    keeps each task's name next to its result)."""
    conn = redis.Redis.from_url(worker.redis_url)
    runs = []
    for key in conn.scan_iter("celery-task-meta-*"):
        meta = json.loads(conn.get(key) or "{}")
        if meta.get("name") == "cashu.recovery.run" and meta.get("status") == "SUCCESS":
            runs.append(meta["result"])
    return runs


def settled_by_itself(ctx: SagaContext, op_id: str, state: str) -> bool:
    """Wait (bounded) for the operation to reach `state` in the database, calling nothing."""
    return bool(wait_until(lambda: db_state(ctx, op_id) == state, timeout=TIMEOUT, every=0.25))


def sweep_until(client: Celery, op_id: str, state: str, task: str = "cashu.recovery.run") -> dict:
    """Sweep as the beat would (bounded: 30 sweeps) until the operation is in `state`."""
    view = op_view(client, op_id)
    for _ in range(30):
        if view["state"] == state:
            break
        call(client, task)
        view = op_view(client, op_id)
        if view["state"] != state:
            time.sleep(0.5)
    return view


def wait_for_melt_quote(url: str, quote_id: str, state: MeltQuoteState) -> None:
    """Check until the (restarted) mint reports `state` (bounded: 50 tries). A restarted
    Nutshell settles its pending melts itself at startup; a check racing with it may fail."""
    with MintClient(url) as mint:
        for _ in range(50):
            try:
                if mint.check_melt_quote(quote_id).state == state:
                    return
            except MintRejectedError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"melt quote {quote_id} never became {state}")


def version_and_stamp(ctx: SagaContext, op_id: str) -> tuple[int, object, str]:
    with ctx.uow() as session:
        op = session.get(Operation, uuid.UUID(op_id))
        assert op is not None
        return op.version, op.updated_at, op.state


# --- 1. start-up recovery -------------------------------------------------------------------------


def test_a_worker_that_starts_settles_a_send_a_dead_worker_left_executing(
    own_worker: Callable[[], RunningWorker], saga_context: SagaContext, test_mint: RunningMint
) -> None:
    ctx = saga_context
    url = register_mint(ctx, test_mint.url)
    wallet = new_wallet_name("boot")
    fund_from_here(ctx, wallet, url, 100)
    prepared = send_saga.prepare(ctx, wallet, url, 30, include_receiver_fee=True)
    assert prepared["needs_swap"]
    # The mint swaps; its answer is lost: what a worker that died mid-request leaves.
    cut = CutOnce(SWAP_PATH, "lost")
    assert send_saga.execute(with_transport(ctx, cut), prepared["id"])["state"] == "executing"
    assert cut.seen == [SWAP_PATH]
    inputs = mint_states(ctx, url, used_by=uuid.UUID(prepared["id"]), state=ProofState.RESERVED)
    assert set(inputs.values()) == {ProofSpentState.SPENT}  # the mint did swap them
    # Before any worker starts: executing, its inputs reserved, nothing of the swap stored.
    time.sleep(2)
    assert db_state(ctx, prepared["id"]) == "executing"
    assert bal(ctx, wallet) | {"by_mint": None} == {
        "spendable": 100 - prepared["input_amount"],
        "reserved": prepared["input_amount"],
        "pending": 0,
        "total": 100,
        "unit": "sat",
        "by_mint": None,
    }

    worker = own_worker()  # nothing else: no task is sent by this test

    assert settled_by_itself(ctx, prepared["id"], "pending"), db_state(ctx, prepared["id"])
    assert any(run["still_pending"] >= 1 for run in recovery_runs(worker))
    data = op_data(ctx, prepared["id"])
    assert data["token"]
    out, fee = prepared["send_amount"], prepared["fee"]
    assert bal(ctx, wallet) | {"by_mint": None} == {
        "spendable": 100 - out - fee,
        "reserved": 0,
        "pending": out,
        "total": 100 - fee,
        "unit": "sat",
        "by_mint": None,
    }
    assert_mint_agrees(ctx, url, wallet)


def test_a_worker_that_starts_settles_a_melt_a_dead_worker_left_executing(
    own_worker: Callable[[], RunningWorker], saga_context: SagaContext, test_mint: RunningMint
) -> None:
    ctx = saga_context
    url = register_mint(ctx, test_mint.url)
    wallet = new_wallet_name("boot")
    fund_from_here(ctx, wallet, url, 300)
    prepared = melt_saga.prepare(ctx, wallet, url, make_invoice(100))
    # The mint pays; its PAID answer is lost.
    cut = CutOnce(MELT_PATH, "lost")
    assert melt_saga.execute(with_transport(ctx, cut), prepared["id"])["state"] == "executing"
    data = op_data(ctx, prepared["id"])
    assert data["phase"] == "melt" and data["melt_sent"]  # settled from the quote, at once
    with MintClient(url) as mint:
        assert mint.check_melt_quote(prepared["quote_id"]).state == MeltQuoteState.PAID
    time.sleep(2)
    assert db_state(ctx, prepared["id"]) == "executing"
    assert bal(ctx, wallet)["total"] == 300 - prepared["swap_fee"]  # no change stored yet
    assert bal(ctx, wallet)["reserved"] == data["melt_input"]

    worker = own_worker()  # nothing else: no task is sent by this test

    assert settled_by_itself(ctx, prepared["id"], "finalized"), db_state(ctx, prepared["id"])
    assert any(run["recovered"] >= 1 for run in recovery_runs(worker))
    done = op_data(ctx, prepared["id"])
    assert done["change_amount"] > 0
    # no change lost: the melt cost exactly what one paid at once costs
    assert done["effective_fee"] == prepared["swap_fee"] + prepared["input_fee"] + ROUTING_FEE
    spendable = 300 - 100 - done["effective_fee"]
    assert bal(ctx, wallet) | {"by_mint": None} == {
        "spendable": spendable,
        "reserved": 0,
        "pending": 0,
        "total": spendable,
        "unit": "sat",
        "by_mint": None,
    }
    assert_mint_agrees(ctx, url, wallet)


# --- 2. rolling_back resumes after a kill during the reclaim swap ------------------------------


def test_a_send_rollback_killed_during_its_reclaim_swap_resumes_to_rolled_back(
    celery_worker,
    celery_client: Celery,
    proxy: SlowProxy,
    wallet: str,
    saga_context: SagaContext,
    redis_url: str,
) -> None:
    client, url, ctx = celery_client, proxy.url, saga_context
    fund(client, wallet, url, 200)
    op = call(client, "cashu.send.prepare", wallet=wallet, mint_url=url, amount=50)
    sent = call(client, "cashu.send.execute", operation_id=op["id"])
    assert sent["state"] == "pending"
    out, fee = op["send_amount"], op["fee"]
    assert_balance(client, wallet, spendable=200 - out - fee, pending=out)

    # The mint swaps the token back into our reclaim outputs; the worker dies unanswered.
    kill_worker_while_held(celery_worker, client, proxy, "cashu.send.rollback", op["id"], SWAP_PATH)

    assert db_state(ctx, op["id"]) == "rolling_back"  # no worker to ask: the database
    token = mint_states(ctx, url, used_by=uuid.UUID(op["id"]), state=ProofState.PENDING)
    assert set(token.values()) == {ProofSpentState.SPENT}
    reclaim_fee = op_data(ctx, op["id"])["reclaim_fee"]
    assert bal(ctx, wallet)["spendable"] == 200 - out - fee  # the reclaim not stored yet

    restart_killed_worker(celery_worker, client, redis_url, op["id"])
    done = sweep_until(client, op["id"], "rolled_back")

    assert done["state"] == "rolled_back", done
    assert done["reclaim_fee"] == reclaim_fee
    assert done["reclaimed_amount"] == out - reclaim_fee
    assert_balance(client, wallet, spendable=200 - fee - reclaim_fee, mint_url=url)
    assert_mint_agrees(ctx, url, wallet)
    [entry] = call(client, "cashu.history.list", wallet=wallet, limit=1)["entries"]
    assert (entry["state"], entry["fee"]) == ("rolled_back", fee + reclaim_fee)


def test_a_melt_reclaim_killed_during_its_swap_resumes_to_rolled_back(
    celery_worker,
    celery_client: Celery,
    fresh_mint: Callable[..., RunningMint],
    test_mint: RunningMint,
    wallet: str,
    saga_context: SagaContext,
    redis_url: str,
) -> None:
    client, ctx = celery_client, saga_context
    mint = fresh_mint(env_overrides=PENDING, version=test_mint.version)
    proxy = SlowProxy(mint.url).start()
    url = call(client, "cashu.mints.add", url=proxy.url)["url"]
    try:
        fund(client, wallet, url, 300)
        op = call(
            client, "cashu.melt.prepare", wallet=wallet, mint_url=url, invoice=make_invoice(100)
        )
        assert execute_until_pending(client, operation_id=op["id"])["state"] == "pending"
        data = op_data(ctx, op["id"])
        # The payment fails: the quote is UNPAID, the inputs unspent again at the mint.
        mint.restart({**PENDING, "FAKEWALLET_PAYMENT_STATE": "FAILED"})
        wait_for_melt_quote(mint.url, op["quote_id"], MeltQuoteState.UNPAID)
        inputs = mint_states(ctx, mint.url, used_by=uuid.UUID(op["id"]), state=ProofState.PENDING)
        assert set(inputs.values()) == {ProofSpentState.UNSPENT}
        assert db_state(ctx, op["id"]) == "pending"

        # The mint swaps the inputs into our reclaim outputs; the worker dies unanswered.
        kill_worker_while_held(
            celery_worker, client, proxy, "cashu.melt.reclaim", op["id"], SWAP_PATH
        )

        assert db_state(ctx, op["id"]) == "rolling_back"
        inputs = mint_states(ctx, mint.url, used_by=uuid.UUID(op["id"]), state=ProofState.PENDING)
        assert set(inputs.values()) == {ProofSpentState.SPENT}
        reclaim_fee = op_data(ctx, op["id"])["reclaim_fee"]
        assert reclaim_fee >= 1
        assert bal(ctx, wallet)["spendable"] == 300 - op["input_amount"] + keep_of(data)

        restart_killed_worker(celery_worker, client, redis_url, op["id"])
        done = sweep_until(client, op["id"], "rolled_back")

        assert done["state"] == "rolled_back", done
        # what it cost: a pre-swap, if one happened, and the reclaim swap
        assert done["effective_fee"] == op["swap_fee"] + reclaim_fee
        assert_balance(client, wallet, spendable=300 - done["effective_fee"], mint_url=url)
        assert_mint_agrees(ctx, mint.url, wallet)
        with MintClient(mint.url) as direct:
            assert direct.check_melt_quote(op["quote_id"]).state == MeltQuoteState.UNPAID
    finally:
        proxy.release()
        call(client, "cashu.mints.set_trusted", url=url, trusted=False)
        proxy.stop()


# --- 3. a mint trusted again is reconciled by the next sweep ------------------------------------


def test_an_operation_at_a_mint_trusted_again_is_settled_by_the_next_sweep(
    celery_client: Celery, proxy: SlowProxy, wallet: str, saga_context: SagaContext
) -> None:
    client, url, ctx = celery_client, proxy.url, saga_context
    fund(client, wallet, url, 100)
    prepared = send_saga.prepare(ctx, wallet, url, 30, include_receiver_fee=True)
    cut = CutOnce(SWAP_PATH, "lost")
    assert send_saga.execute(with_transport(ctx, cut), prepared["id"])["state"] == "executing"
    before = version_and_stamp(ctx, prepared["id"])

    call(client, "cashu.mints.set_trusted", url=url, trusted=False)
    proxy.seen.clear()
    call(client, "cashu.beat.retry_in_flight")
    call(client, "cashu.recovery.run")
    call(client, "cashu.beat.retry_in_flight")

    assert proxy.seen == []  # the untrusted mint was not asked anything
    assert version_and_stamp(ctx, prepared["id"]) == before  # the operation did not move
    assert_balance(
        client,
        wallet,
        spendable=100 - prepared["input_amount"],
        reserved=prepared["input_amount"],
    )

    call(client, "cashu.mints.set_trusted", url=url, trusted=True)
    counts = call(client, "cashu.beat.retry_in_flight")

    assert counts["still_pending"] >= 1, counts
    assert db_state(ctx, prepared["id"]) == "pending"
    assert SWAP_PATH in proxy.seen  # the swap replayed with the stored outputs
    out, fee = prepared["send_amount"], prepared["fee"]
    assert_balance(client, wallet, spendable=100 - out - fee, pending=out)
    assert_mint_agrees(ctx, url, wallet)


# --- 4. a failed mint operation has its event and its history entry ---------------------------


def test_a_mint_quote_that_expires_unpaid_fails_with_its_event_and_history_entry(
    celery_client: Celery, own_mint, wallet: str, saga_context: SagaContext, redis_url: str
) -> None:
    client, ctx = celery_client, saga_context
    _, url = own_mint({"FAKEWALLET_BRR": "FALSE", "MINT_QUOTE_TTL": "2"})
    op = call(client, "cashu.mint.prepare", wallet=wallet, mint_url=url, amount=64)
    assert op["state"] == "pending" and op["expiry"]

    def event_types() -> list[str]:
        with ctx.uow() as session:
            rows = session.scalars(
                select(Event.type)
                .where(Event.operation_id == uuid.UUID(op["id"]))
                .order_by(Event.id)
            )
            return list(rows)

    assert event_types() == ["mint-op:pending"]  # not failed before the quote expired
    wait_until(lambda: time.time() > op["expiry"] + 0.5, timeout=10, every=0.2)

    failed = call(client, "cashu.mint.refresh", operation_id=op["id"])

    assert failed["state"] == "failed", failed
    assert failed["error"]["code"] == "QUOTE_EXPIRED"
    assert event_types() == ["mint-op:pending", "mint-op:failed"]
    with ctx.uow() as session:
        payload = session.scalar(
            select(Event.payload).where(
                Event.operation_id == uuid.UUID(op["id"]), Event.type == "mint-op:failed"
            )
        )
    assert payload["state"] == "failed" and payload["error"]["code"] == "QUOTE_EXPIRED"

    call(client, "cashu.events.relay")
    stream = redis.Redis.from_url(redis_url, decode_responses=True)

    def on_the_stream() -> list[str]:
        return [
            fields["type"]
            for _, fields in stream.xrange(STREAM)
            if fields.get("operation_id") == op["id"]
        ]

    assert wait_until(lambda: "mint-op:failed" in on_the_stream(), timeout=30)
    assert on_the_stream() == ["mint-op:pending", "mint-op:failed"]

    entries = call(client, "cashu.history.list", wallet=wallet)["entries"]
    assert len(entries) == 1, entries
    [entry] = entries
    # sagas/history.py: a mint's amount is the quote's, its fee 0, direction "in"
    assert entry["operation_id"] == op["id"]
    assert (entry["kind"], entry["state"], entry["direction"]) == ("mint", "failed", "in")
    assert (entry["amount"], entry["fee"], entry["unit"]) == (64, 0, "sat")
    assert entry["error"] == "QUOTE_EXPIRED"
    assert entry["finalized_at"] is not None

    assert_balance(client, wallet, spendable=0)
    with MintClient(url) as mint:  # the mint issued nothing for it
        assert mint.check_mint_quote(op["quote_id"]).state == MintQuoteState.UNPAID
    assert_mint_agrees(ctx, url, wallet)
