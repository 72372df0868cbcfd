"""Send and receive through the Celery tasks: a real worker, a real mint (input fee 100 ppk),
Postgres and Redis.

Wallet A sends, wallet B receives, the beat's watcher finalizes A's send; reclaim, double
receive, malformed tokens, a worker SIGKILLed mid-swap (a slow proxy in front of the mint
holds the swap's answer back) and recovery. Tokens never reach the worker's log or its
task events. Every test ends on balances, exact to the sat.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from datetime import timedelta

import pytest
from celery import Celery
from slow_proxy import SlowProxy
from sqlalchemy import select, text
from task_helpers import (
    TIMEOUT,
    assert_balance,
    assert_mint_agrees,
    balance,
    call,
    db_state,
    fund,
    kill_worker_while_held,
    mint_states,
    op_state,
    op_view,
    raises,
    restart_killed_worker,
    wait_until,
)

from models import ProofState, StoredProof
from nuts.models import ProofSpentState
from nuts.secrets import wallet_p2pk_key
from nuts.tokens import decode_token
from sagas.engine import SagaContext
from sagas.proofs import balance as proofs_balance

pytestmark = pytest.mark.mint
TOKEN = re.compile(r"cashu[AB][A-Za-z0-9_\-+/=]+")
SWAP_PATH = "/v1/swap"


def finalized_by_the_watcher(client: Celery, operation_id: str) -> bool:
    """Run the beat's watcher task (as the beat would) until the send is finalized."""

    def tick() -> bool:
        counts = call(client, "cashu.beat.check_sends")
        assert set(counts) == {"checked", "finalized", "checkstate_calls"}
        return op_state(client, operation_id) == "finalized"

    return bool(wait_until(tick, timeout=30, every=1))


def assert_no_token_in_worker_log(worker) -> None:
    leaked = TOKEN.findall(worker.log_path.read_text(errors="replace"))
    assert not leaked, f"{len(leaked)} token(s) in {worker.log_path}"


# --- the flow --------------------------------------------------------------------------------


def test_a_send_received_by_another_wallet_then_finalized_by_the_watcher(
    celery_worker, celery_client: Celery, mint_url: str, alice: str, bob: str, saga_context
) -> None:
    client = celery_client
    fund(client, alice, mint_url, 1000)

    prepared = call(
        client, "cashu.send.prepare", wallet=alice, mint_url=mint_url, amount=100, memo="lunch"
    )
    assert (prepared["state"], prepared["amount"]) == ("prepared", 100)
    fee = prepared["fee"]
    assert fee == (1 if prepared["needs_swap"] else 0)
    assert prepared["input_amount"] >= 100 + fee
    assert_balance(
        client, alice, spendable=1000 - prepared["input_amount"], reserved=prepared["input_amount"]
    )

    sent = call(client, "cashu.send.execute", operation_id=prepared["id"])
    assert sent["state"] == "pending" and sent["token"].startswith("cashuB")
    token = decode_token(sent["token"])
    assert (token.amount, token.memo, token.mint) == (100, "lunch", mint_url)
    assert_balance(client, alice, spendable=1000 - 100 - fee, pending=100)

    incoming = call(client, "cashu.receive.prepare", wallet=bob, token=sent["token"])
    assert (incoming["state"], incoming["mint_url"]) == ("prepared", mint_url)
    receive_fee = incoming["fee"]
    assert receive_fee == 1 and incoming["amount"] == 100 - receive_fee
    assert_balance(client, bob, spendable=0)
    received = call(client, "cashu.receive.execute", operation_id=incoming["id"])
    assert received["state"] == "finalized" and received["amount"] == 100 - receive_fee
    assert_balance(client, bob, spendable=100 - receive_fee)

    # Nobody told A's send: the beat's watcher finds the token claimed, by itself.
    assert op_state(client, prepared["id"]) == "pending"
    assert finalized_by_the_watcher(client, prepared["id"])
    assert_balance(client, alice, spendable=1000 - 100 - fee)
    sent_proofs = mint_states(saga_context, mint_url, used_by=uuid.UUID(prepared["id"]))
    assert set(sent_proofs.values()) == {ProofSpentState.SPENT}
    assert_mint_agrees(saga_context, mint_url, alice)
    assert_mint_agrees(saga_context, mint_url, bob)

    # V3 (cashuA) on request; refresh finalizes it too.
    v3 = call(client, "cashu.send.prepare", wallet=bob, mint_url=mint_url, amount=10)
    v3_sent = call(client, "cashu.send.execute", operation_id=v3["id"], token_version=3)
    assert v3_sent["token"].startswith("cashuA")
    back = call(client, "cashu.receive.redeem", wallet=alice, token=v3_sent["token"])
    assert back["state"] == "finalized" and back["amount"] == 10 - back["fee"]
    assert call(client, "cashu.send.refresh", operation_id=v3["id"])["state"] == "finalized"
    assert_balance(client, bob, spendable=100 - receive_fee - 10 - v3["fee"])
    assert_balance(client, alice, spendable=1000 - 100 - fee + 10 - back["fee"])

    assert_no_token_in_worker_log(celery_worker)


def test_send_token_makes_the_token_in_one_call(
    celery_client: Celery, mint_url: str, alice: str, bob: str, saga_context
) -> None:
    client = celery_client
    fund(client, alice, mint_url, 500)

    sent = call(
        client, "cashu.send.token", wallet=alice, mint_url=mint_url, amount=123, memo="rent"
    )

    assert (sent["kind"], sent["state"], sent["amount"]) == ("send", "pending", 123)
    token = decode_token(sent["token"])
    assert (token.amount, token.memo, token.mint) == (123, "rent", mint_url)
    assert_balance(client, alice, spendable=500 - 123 - sent["fee"], pending=123)
    assert_mint_agrees(saga_context, mint_url, alice)  # the token's proofs unspent too
    v3 = call(
        client, "cashu.send.token", wallet=alice, mint_url=mint_url, amount=5, token_version=3
    )
    assert v3["token"].startswith("cashuA")
    received = call(client, "cashu.receive.redeem", wallet=bob, token=sent["token"])
    assert_balance(client, bob, spendable=123 - received["fee"])
    assert_balance(client, alice, spendable=500 - 123 - sent["fee"] - 5 - v3["fee"], pending=128)


def test_send_token_sent_again_with_its_task_id_gives_the_same_token_and_sends_once(
    celery_client: Celery, mint_url: str, alice: str, bob: str
) -> None:
    client = celery_client
    fund(client, alice, mint_url, 500)
    fund(client, bob, mint_url, 500)
    task_id = str(uuid.uuid4())  # a caller's idempotency key: it publishes the call again

    def send(wallet: str) -> dict:
        client.AsyncResult(task_id).forget()  # so .get() waits for this call's own answer
        kwargs = {"wallet": wallet, "mint_url": mint_url, "amount": 123}
        return client.send_task("cashu.send.token", kwargs=kwargs, task_id=task_id).get(
            timeout=TIMEOUT
        )

    first, again = send(alice), send(alice)
    assert (again["id"], again["token"]) == (first["id"], first["token"])
    assert_balance(client, alice, spendable=500 - 123 - first["fee"], pending=123)
    other = send(bob)  # the same task id for another wallet: a send of its own
    assert other["id"] != first["id"] and other["wallet"] == bob
    assert_balance(client, bob, spendable=500 - 123 - other["fee"], pending=123)


def test_send_token_without_funds_or_with_a_bad_version_changes_nothing(
    celery_client: Celery, mint_url: str, alice: str
) -> None:
    fund(celery_client, alice, mint_url, 20)
    short = raises(celery_client, "cashu.send.token", wallet=alice, mint_url=mint_url, amount=50)
    assert type(short).__name__ == "InsufficientBalanceError"
    bad = raises(
        celery_client,
        "cashu.send.token",
        wallet=alice,
        mint_url=mint_url,
        amount=5,
        token_version=5,
    )
    assert type(bad).__name__ == "InvalidRequestError"
    ops = call(celery_client, "cashu.ops.list", wallet=alice, kind="send")["operations"]
    assert ops == []
    assert_balance(celery_client, alice, spendable=20)


def test_wallet_info_gives_the_wallets_own_stable_p2pk_key(
    celery_client: Celery, mint_url: str, alice: str, bob: str, saga_context
) -> None:
    info = call(celery_client, "cashu.wallet.info", wallet=alice)
    expected = wallet_p2pk_key(saga_context.wallet_seed(alice)).public_key.format().hex()
    assert info == {"wallet": alice, "pubkey": expected}
    assert call(celery_client, "cashu.wallet.info", wallet=alice) == info
    assert call(celery_client, "cashu.wallet.info", wallet=bob)["pubkey"] != expected
    assert len(expected) == 66 and expected[:2] in ("02", "03")

    # A token locked to B's key: A cannot reclaim it, B receives it.
    fund(celery_client, alice, mint_url, 64)
    bob_key = call(celery_client, "cashu.wallet.info", wallet=bob)["pubkey"]
    op = call(
        celery_client,
        "cashu.send.prepare",
        wallet=alice,
        mint_url=mint_url,
        amount=20,
        p2pk_pubkey=bob_key,
    )
    token = call(celery_client, "cashu.send.execute", operation_id=op["id"])["token"]
    err = raises(celery_client, "cashu.send.rollback", operation_id=op["id"])
    assert type(err).__name__ == "TokenLockedError"
    received = call(celery_client, "cashu.receive.redeem", wallet=bob, token=token)
    assert received["amount"] == 20 - received["fee"]
    assert call(celery_client, "cashu.send.refresh", operation_id=op["id"])["state"] == "finalized"
    assert_balance(celery_client, alice, spendable=64 - 20 - op["fee"])
    assert_balance(celery_client, bob, spendable=20 - received["fee"])


def test_reclaiming_an_unclaimed_token_returns_it_minus_the_swap_fee(
    celery_client: Celery, mint_url: str, alice: str, bob: str, saga_context
) -> None:
    client = celery_client
    fund(client, alice, mint_url, 100)
    op = call(client, "cashu.send.prepare", wallet=alice, mint_url=mint_url, amount=21)
    token = call(client, "cashu.send.execute", operation_id=op["id"])["token"]
    assert_balance(client, alice, spendable=100 - 21 - op["fee"], pending=21)

    reclaimed = call(client, "cashu.send.rollback", operation_id=op["id"])

    assert reclaimed["state"] == "rolled_back"
    assert reclaimed["reclaimed_amount"] == 21 - reclaimed["reclaim_fee"]
    assert reclaimed["reclaim_fee"] >= 1
    assert_balance(client, alice, spendable=100 - op["fee"] - reclaimed["reclaim_fee"])
    assert_mint_agrees(saga_context, mint_url, alice)
    # the token is worthless now
    err = raises(client, "cashu.receive.redeem", wallet=bob, token=token)
    assert type(err).__name__ == "TokenAlreadySpentError"
    assert_balance(client, bob, spendable=0)

    # a prepared send cancels for free; rolling back twice changes nothing
    prepared = call(client, "cashu.send.prepare", wallet=alice, mint_url=mint_url, amount=30)
    assert balance(client, alice)["reserved"] > 0
    assert call(client, "cashu.send.rollback", operation_id=prepared["id"])["state"] == (
        "rolled_back"
    )
    assert call(client, "cashu.send.rollback", operation_id=prepared["id"])["state"] == (
        "rolled_back"
    )
    assert call(client, "cashu.send.rollback", operation_id=op["id"])["state"] == "rolled_back"
    assert_balance(client, alice, spendable=100 - op["fee"] - reclaimed["reclaim_fee"])


def test_a_token_received_twice_fails_clearly_the_second_time(
    celery_client: Celery, mint_url: str, alice: str, bob: str
) -> None:
    client, carol = celery_client, f"{bob}-carol"
    fund(client, alice, mint_url, 100)
    op = call(client, "cashu.send.prepare", wallet=alice, mint_url=mint_url, amount=30)
    token = call(client, "cashu.send.execute", operation_id=op["id"])["token"]
    received = call(client, "cashu.receive.redeem", wallet=bob, token=token)
    assert received["state"] == "finalized"

    for wallet, name in ((carol, "cashu.receive.redeem"), (carol, "cashu.receive.prepare")):
        err = raises(client, name, wallet=wallet, token=token)
        assert type(err).__name__ == "TokenAlreadySpentError", repr(err)
        assert err.code == "TOKEN_ALREADY_SPENT"  # type: ignore[attr-defined]
    err = raises(client, "cashu.receive.redeem", wallet=bob, token=token)
    assert type(err).__name__ == "TokenAlreadySpentError"

    assert call(client, "cashu.ops.list", wallet=carol)["operations"] == []
    assert_balance(client, carol, spendable=0)
    assert_balance(client, bob, spendable=30 - received["fee"])
    assert finalized_by_the_watcher(client, op["id"])
    assert_balance(client, alice, spendable=100 - 30 - op["fee"])


def test_redeem_of_a_prepared_token_executes_that_operation(
    celery_client: Celery, mint_url: str, alice: str, bob: str, saga_context
) -> None:
    client = celery_client
    fund(client, alice, mint_url, 100)
    token = call(client, "cashu.send.token", wallet=alice, mint_url=mint_url, amount=30)["token"]
    prepared = call(client, "cashu.receive.prepare", wallet=bob, token=token)

    received = call(client, "cashu.receive.redeem", wallet=bob, token=token)

    assert (received["id"], received["state"]) == (prepared["id"], "finalized")
    assert [op["id"] for op in call(client, "cashu.ops.list", wallet=bob)["operations"]] == [
        prepared["id"]
    ]
    assert_balance(client, bob, spendable=30 - received["fee"])
    assert_mint_agrees(saga_context, mint_url, bob)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "cashuC" + "A" * 40,
        "cashuBo2F0gaJhaUgArSaMTR9YJmFwgaNhYQFhc3hAOWE2ZGJiODQ3YmQy",  # truncated
        "cashuB" + "////",  # not CBOR
        "cashuAeyJ0b2tlbiI6W3s",  # truncated JSON
        "cashuAWyJub3QiLCAiYSB0b2tlbiJd",  # JSON of the wrong shape
        12345,
    ],
    ids=["empty", "wrong-prefix", "truncated-v4", "bad-cbor", "bad-json", "wrong-shape", "int"],
)
def test_a_malformed_token_is_an_invalid_token_error_and_changes_nothing(
    celery_client: Celery, alice: str, token: object
) -> None:
    for name in ("cashu.receive.prepare", "cashu.receive.redeem"):
        err = raises(celery_client, name, wallet=alice, token=token)
        assert type(err).__name__ == "InvalidTokenError", repr(err)
        assert err.code == "INVALID_TOKEN"  # type: ignore[attr-defined]
    assert call(celery_client, "cashu.ops.list", wallet=alice)["operations"] == []
    assert call(celery_client, "cashu.history.list", wallet=alice) == {"entries": []}
    assert_balance(celery_client, alice, spendable=0)


def test_bad_send_arguments_are_typed_errors(
    celery_client: Celery, mint_url: str, alice: str
) -> None:
    fund(celery_client, alice, mint_url, 16)
    cases = [
        ("cashu.send.prepare", {"mint_url": mint_url, "amount": 17}, "InsufficientBalanceError"),
        ("cashu.send.prepare", {"mint_url": mint_url, "amount": 0}, "InvalidAmountError"),
        ("cashu.send.prepare", {"mint_url": mint_url, "amount": 1, "p2pk_pubkey": "02ab"}, None),
    ]
    for name, kwargs, expected in cases:
        err = raises(celery_client, name, wallet=alice, **kwargs)
        assert type(err).__name__ == (expected or "InvalidRequestError"), repr(err)
    op = call(celery_client, "cashu.send.prepare", wallet=alice, mint_url=mint_url, amount=8)
    err = raises(celery_client, "cashu.send.execute", operation_id=op["id"], token_version=2)
    assert type(err).__name__ == "InvalidRequestError"
    err = raises(celery_client, "cashu.send.execute", operation_id=str(uuid.uuid4()))
    assert type(err).__name__ == "OperationNotFoundError"
    assert call(celery_client, "cashu.send.rollback", operation_id=op["id"])["state"] == (
        "rolled_back"
    )
    assert_balance(celery_client, alice, spendable=16)


# --- the beat: watcher and stale prepared sends -----------------------------------------------


def test_the_watcher_sees_a_token_claimed_after_an_earlier_tick(
    celery_client: Celery, mint_url: str, alice: str, bob: str
) -> None:
    """A tick that found the token unclaimed must not hide the send from the next ticks."""
    client = celery_client
    fund(client, alice, mint_url, 100)
    op = call(client, "cashu.send.prepare", wallet=alice, mint_url=mint_url, amount=10)
    token = call(client, "cashu.send.execute", operation_id=op["id"])["token"]
    assert call(client, "cashu.beat.check_sends")["checked"] >= 1  # not claimed yet
    assert op_state(client, op["id"]) == "pending"

    received = call(client, "cashu.receive.redeem", wallet=bob, token=token)
    call(client, "cashu.beat.check_sends")  # the next tick, 5 s later in production

    assert op_state(client, op["id"]) == "finalized"
    assert_balance(client, alice, spendable=100 - 10 - op["fee"])
    assert_balance(client, bob, spendable=10 - received["fee"])


def test_cancel_stale_cancels_prepared_sends_older_than_the_configured_age(
    celery_client: Celery, mint_url: str, alice: str, saga_context: SagaContext
) -> None:
    client = celery_client
    fund(client, alice, mint_url, 56)
    fresh = call(client, "cashu.send.prepare", wallet=alice, mint_url=mint_url, amount=8)
    stale = call(client, "cashu.send.prepare", wallet=alice, mint_url=mint_url, amount=16)
    with saga_context.uow() as session:  # untouched for 25 h (default age: 24 h)
        session.execute(
            text("UPDATE operations SET updated_at = now() - interval '25 hours' WHERE id = :id"),
            {"id": uuid.UUID(stale["id"])},
        )

    def cancelled() -> bool:
        counts = call(client, "cashu.beat.cancel_stale")
        assert set(counts) >= {"recovered", "rolled_back", "still_pending", "failed", "skipped"}
        return op_state(client, stale["id"]) == "rolled_back"

    assert wait_until(cancelled, timeout=30, every=1)
    assert op_state(client, fresh["id"]) == "prepared"
    assert fresh["input_amount"] == 8 and not fresh["needs_swap"]
    assert_balance(client, alice, spendable=56 - 8, reserved=8)
    call(client, "cashu.send.rollback", operation_id=fresh["id"])
    assert_balance(client, alice, spendable=56)


def test_the_prepared_age_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.config import Settings
    from tasks.context import make_saga_context

    monkeypatch.setenv("CASHU_PREPARED_MAX_AGE_SECONDS", "120")
    assert make_saga_context(Settings()).prepared_max_age == timedelta(seconds=120)
    monkeypatch.delenv("CASHU_PREPARED_MAX_AGE_SECONDS")
    assert make_saga_context(Settings()).prepared_max_age == timedelta(hours=24)


# --- a worker killed mid-swap -----------------------------------------------------------------


def recover(celery_worker, client: Celery, redis_url: str, op_id: str, until: str) -> None:
    restart_killed_worker(celery_worker, client, redis_url, op_id)

    def settled() -> bool:
        call(client, "cashu.recovery.run")
        return op_state(client, op_id) == until

    assert wait_until(settled, timeout=TIMEOUT, every=1), op_state(client, op_id)


def test_a_worker_killed_after_the_mint_signed_loses_nothing(
    celery_worker,
    celery_client: Celery,
    proxy: SlowProxy,
    alice: str,
    saga_context: SagaContext,
    redis_url: str,
) -> None:
    client, url = celery_client, proxy.url
    op = call(client, "cashu.mint.prepare", wallet=alice, mint_url=url, amount=300)

    kill_worker_while_held(
        celery_worker, client, proxy, "cashu.mint.execute", op["id"], "/v1/mint/bolt11"
    )

    # The mint signed; we wrote the outputs ahead and never stored a proof.
    assert db_state(saga_context, op["id"]) == "executing"
    with saga_context.uow() as session:  # the worker is dead: ask the database itself
        assert proofs_balance(session, alice)["total"] == 0
    recover(celery_worker, client, redis_url, op["id"], until="finalized")
    assert_balance(client, alice, spendable=300)
    assert_mint_agrees(saga_context, url, alice)


def test_a_worker_killed_mid_swap_on_send_loses_nothing(
    celery_worker,
    celery_client: Celery,
    proxy: SlowProxy,
    alice: str,
    bob: str,
    saga_context: SagaContext,
    redis_url: str,
) -> None:
    client, url = celery_client, proxy.url
    fund(client, alice, url, 200)
    # include_receiver_fee: the token is split anew, so the send swaps
    op = call(
        client,
        "cashu.send.prepare",
        wallet=alice,
        mint_url=url,
        amount=50,
        include_receiver_fee=True,
    )
    inputs, out = op["input_amount"], op["send_amount"]

    kill_worker_while_held(celery_worker, client, proxy, "cashu.send.execute", op["id"], SWAP_PATH)

    # The mint swapped; we wrote ahead and never heard back.
    assert db_state(saga_context, op["id"]) == "executing"
    spent = mint_states(saga_context, url, used_by=uuid.UUID(op["id"]), state=ProofState.RESERVED)
    assert set(spent.values()) == {ProofSpentState.SPENT}

    recover(celery_worker, client, redis_url, op["id"], until="pending")

    sent = op_view(client, op["id"])
    assert decode_token(sent["token"]).amount == out
    assert_balance(client, alice, spendable=200 - out - op["fee"], pending=out)
    assert inputs - out - op["fee"] == sent["keep_amount"]
    assert_mint_agrees(saga_context, url, alice)
    received = call(client, "cashu.receive.redeem", wallet=bob, token=sent["token"])
    assert finalized_by_the_watcher(client, op["id"])
    assert_balance(client, alice, spendable=200 - out - op["fee"])
    assert_balance(client, bob, spendable=out - received["fee"])
    assert received["amount"] == 50  # the sender covered the receiver's fee
    assert_mint_agrees(saga_context, url, bob)
    assert_no_token_in_worker_log(celery_worker)


def test_a_worker_killed_mid_swap_on_receive_loses_nothing(
    celery_worker,
    celery_client: Celery,
    proxy: SlowProxy,
    alice: str,
    bob: str,
    saga_context: SagaContext,
    redis_url: str,
) -> None:
    client, url = celery_client, proxy.url
    fund(client, alice, url, 100)
    op = call(client, "cashu.send.prepare", wallet=alice, mint_url=url, amount=40)
    token = call(client, "cashu.send.execute", operation_id=op["id"])["token"]
    incoming = call(client, "cashu.receive.prepare", wallet=bob, token=token)

    kill_worker_while_held(
        celery_worker, client, proxy, "cashu.receive.execute", incoming["id"], SWAP_PATH
    )

    assert db_state(saga_context, incoming["id"]) == "executing"
    with saga_context.uow() as session:  # nothing of it is ours yet
        assert session.scalar(select(StoredProof.id).where(StoredProof.wallet == bob)) is None
    token_ys = mint_states(saga_context, url, used_by=uuid.UUID(op["id"]), state=ProofState.PENDING)
    assert set(token_ys.values()) == {ProofSpentState.SPENT}  # the mint took the token

    recover(celery_worker, client, redis_url, incoming["id"], until="finalized")

    assert_balance(client, bob, spendable=40 - incoming["fee"])
    assert_mint_agrees(saga_context, url, bob)
    assert finalized_by_the_watcher(client, op["id"])
    assert_balance(client, alice, spendable=100 - 40 - op["fee"])
    assert_no_token_in_worker_log(celery_worker)


# --- tokens stay out of logs, events and stored arguments --------------------------------------


class EventRecorder:
    """Every Celery event on the broker while the block runs (what Flower would see)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.events: list[dict] = []
        self._receiver = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.app.connection_for_read() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers={"*": self.events.append})
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> EventRecorder:
        self._thread.start()
        # Workers send no task events by default (CASHU_TASK_EVENTS); Flower turns them on
        # by broadcasting enable_events, and so does this recorder. Listening once an event
        # of a task sent now comes back.
        probe_ids: set[str] = set()

        def listening() -> bool:
            self.app.control.enable_events()
            probe_ids.add(self.app.send_task("cashu.mints.list").id)
            return any(e.get("uuid") in probe_ids for e in self.events)

        assert wait_until(listening, timeout=30, every=0.5), "no Celery events seen"
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(1.0)  # the last task-succeeded events
        self.app.control.disable_events()
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(timeout=10)


def test_task_events_are_off_until_a_monitor_turns_them_on(celery_worker, celery_client) -> None:
    """CASHU_TASK_EVENTS is off by default (each event is a Redis publish on the task's
    path); Flower's enable_events broadcast turns them on, disable_events off again."""
    quiet = EventRecorder(celery_client)
    quiet._thread.start()
    time.sleep(0.5)  # the receiver is consuming
    task_id = celery_client.send_task("cashu.mints.list").id
    celery_client.AsyncResult(task_id).get(timeout=TIMEOUT)
    time.sleep(1.0)
    assert not [e for e in quiet.events if e.get("uuid") == task_id]
    quiet.__exit__(None, None, None)
    with EventRecorder(celery_client) as recorder:  # enables them, as Flower does
        task_id = celery_client.send_task("cashu.mints.list").id
        celery_client.AsyncResult(task_id).get(timeout=TIMEOUT)
    assert {"task-received", "task-succeeded"} <= {
        e["type"] for e in recorder.events if e.get("uuid") == task_id
    }


def test_tokens_never_reach_the_worker_log_events_or_stored_arguments(
    celery_worker, celery_client: Celery, mint_url: str, alice: str, bob: str, redis_url: str
) -> None:
    client = celery_client
    fund(client, alice, mint_url, 300)
    notify = f"test.notify.{uuid.uuid4().hex[:8]}"  # the relay sends it each event
    with EventRecorder(client) as recorder:
        sent_by_us: set[str] = set()

        def run(name: str, **kwargs: object):
            result = client.send_task(name, kwargs=kwargs)
            sent_by_us.add(result.id)
            return result, result.get(timeout=TIMEOUT)

        _, op = run(
            "cashu.send.prepare", wallet=alice, mint_url=mint_url, amount=50, notify_task=notify
        )
        _, sent = run("cashu.send.execute", operation_id=op["id"])
        v4 = sent["token"]
        assert TOKEN.fullmatch(v4)  # the caller gets the real token
        assert run("cashu.ops.get", operation_id=op["id"])[1]["token"] == v4
        listed = run("cashu.ops.list", wallet=alice)[1]["operations"]
        assert v4 in [o.get("token") for o in listed]
        assert run("cashu.send.refresh", operation_id=op["id"])[1]["token"] == v4
        prepared_result, incoming = run("cashu.receive.prepare", wallet=bob, token=v4)
        run("cashu.receive.execute", operation_id=incoming["id"])
        op3 = run("cashu.send.prepare", wallet=alice, mint_url=mint_url, amount=20)[1]
        v3 = run("cashu.send.execute", operation_id=op3["id"], token_version=3)[1]["token"]
        redeem_result, redeemed = run("cashu.receive.redeem", wallet=bob, token=v3)
        twice = client.send_task("cashu.receive.redeem", kwargs={"wallet": bob, "token": v3})
        sent_by_us.add(twice.id)
        with pytest.raises(Exception) as caught:  # a failure's events, too
            twice.get(timeout=TIMEOUT)
        assert type(caught.value).__name__ == "TokenAlreadySpentError"
        history = run("cashu.history.list", wallet=alice)[1]
        assert run("cashu.send.rollback", operation_id=op3["id"])[1]["state"] == "finalized"
        assert finalized_by_the_watcher(client, op["id"])

    assert not TOKEN.search(json.dumps(history))
    assert [e["kind"] for e in history["entries"]] == ["send", "send", "mint"]
    # result_extended keeps a task's arguments next to its result: redacted there
    assert prepared_result.kwargs["wallet"] == bob
    assert not TOKEN.search(json.dumps(prepared_result.kwargs))
    assert not TOKEN.search(json.dumps(redeem_result.kwargs))
    # What Flower shows. The only exception: this test's own client announcing its tasks
    # (task-sent, argsrepr computed by the client; see tasks.app.RedactingAMQP). Tasks the
    # worker sends itself (relay, notify task) carry redacted headers the same way
    # (tests/test_client.py), seen here in their task-received events.
    seen = [
        e for e in recorder.events if not (e["type"] == "task-sent" and e["uuid"] in sent_by_us)
    ]
    types = {e["type"] for e in seen}
    assert {"task-received", "task-started", "task-succeeded", "task-failed"} <= types
    leaks = [e for e in seen if TOKEN.search(json.dumps(e, default=str))]
    assert not leaks, [(e["type"], e.get("name"), e["hostname"], os.getpid()) for e in leaks]
    redeem_events = [e for e in seen if e.get("uuid") == redeem_result.id]
    assert any(e["type"] == "task-received" and "redacted" in e["kwargs"] for e in redeem_events)
    assert_no_token_in_worker_log(celery_worker)
    assert_balance(client, alice, spendable=300 - 50 - op["fee"] - 20 - op3["fee"])
    assert_balance(client, bob, spendable=50 - incoming["fee"] + 20 - redeemed["fee"])


def test_inspect_active_shows_a_running_tasks_arguments_redacted(
    celery_worker, celery_client: Celery, proxy: SlowProxy, alice: str, bob: str
) -> None:
    client, url = celery_client, proxy.url
    fund(client, alice, url, 32)
    op = call(client, "cashu.send.prepare", wallet=alice, mint_url=url, amount=10)
    token = call(client, "cashu.send.execute", operation_id=op["id"])["token"]
    proxy.hold(SWAP_PATH, 3.0)
    redeeming = client.send_task("cashu.receive.redeem", kwargs={"wallet": bob, "token": token})
    assert proxy.answered.wait(TIMEOUT)

    active = client.control.inspect(destination=[celery_worker.nodename]).active()
    proxy.release()

    [running] = [t for t in active[celery_worker.nodename] if t["id"] == redeeming.id]
    assert running["kwargs"]["wallet"] == bob
    assert running["kwargs"]["token"].startswith("<redacted")
    assert not TOKEN.search(json.dumps(active))
    received = redeeming.get(timeout=TIMEOUT)
    assert_balance(client, bob, spendable=10 - received["fee"])
    assert finalized_by_the_watcher(client, op["id"])
    assert_balance(client, alice, spendable=32 - 10 - op["fee"])
