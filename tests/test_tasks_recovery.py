"""Background reconciliation through a real worker: overlapping pollers, the redelivery cap."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from celery import Celery
from coincurve import PrivateKey
from mint_harness import make_invoice
from slow_proxy import SlowProxy
from task_helpers import (
    TIMEOUT,
    assert_balance,
    assert_mint_agrees,
    call,
    db_read,
    fund,
    raises,
    wait_until,
)

pytestmark = pytest.mark.mint


def test_two_beats_polling_at_once_send_one_mint_request_per_quote(
    celery_client: Celery, proxy: SlowProxy, wallet: str, saga_context
) -> None:
    ops = [
        call(celery_client, "cashu.mint.prepare", wallet=wallet, mint_url=proxy.url, amount=16)
        for _ in range(4)
    ]  # FakeWallet pays each quote at once; nobody executes them but the pollers
    proxy.seen.clear()

    ticks = [
        celery_client.send_task("cashu.beat.poll_mint_quotes", queue="cashu.beat") for _ in "ab"
    ]
    ticks.append(celery_client.send_task("cashu.recovery.run", queue="cashu.beat"))
    for tick in ticks:
        tick.get(timeout=TIMEOUT)

    def all_finalized() -> bool:
        states = {db_read(saga_context, op["id"], lambda o: o.state) for op in ops}
        if states != {"finalized"}:
            call(celery_client, "cashu.beat.poll_mint_quotes")
        return states == {"finalized"}

    assert wait_until(all_finalized, timeout=TIMEOUT)
    assert proxy.seen.count("/v1/mint/bolt11") == len(ops)
    assert_balance(celery_client, wallet, spendable=16 * len(ops))


@pytest.mark.redis_broker
def test_a_step_delivered_too_often_fails_and_marks_its_operation(
    celery_client: Celery, mint_url: str, wallet: str, redis_url: str, saga_context
) -> None:
    import redis

    from tasks.deliveries import DELIVERY_KEY

    op = call(celery_client, "cashu.mint.prepare", wallet=wallet, mint_url=mint_url, amount=32)
    task_id = str(uuid.uuid4())
    conn = redis.Redis.from_url(redis_url)
    # As if the worker had died with this message five times already: four redeliveries
    # counted, and the message back in the queue marked as kombu marks what it puts back.
    conn.set(DELIVERY_KEY + task_id, 4)
    parking = f"parked-{uuid.uuid4().hex[:8]}"  # nobody consumes it
    result = celery_client.send_task(
        "cashu.mint.execute", kwargs={"operation_id": op["id"]}, task_id=task_id, queue=parking
    )
    message = json.loads(conn.rpop(parking))
    conn.delete(f"_kombu.binding.{parking}")
    message["headers"]["redelivered"] = True
    message["properties"]["delivery_info"].update(
        {"redelivered": True, "exchange": "cashu", "routing_key": "cashu"}
    )
    conn.lpush("cashu", json.dumps(message))
    with pytest.raises(Exception) as caught:
        result.get(timeout=TIMEOUT)

    assert type(caught.value).__name__ == "TooManyDeliveriesError"
    error = db_read(saga_context, op["id"], lambda o: (o.state, o.error_code, o.error_severity))
    assert error == ("pending", "TOO_MANY_DELIVERIES", "CRITICAL")
    assert_balance(celery_client, wallet, spendable=0)
    # The operation is not lost: a later step still issues it.
    assert call(celery_client, "cashu.mint.execute", operation_id=op["id"])["state"] == "finalized"
    assert_balance(celery_client, wallet, spendable=32)


def test_a_step_that_outlives_the_lock_lease_keeps_its_lock_while_it_runs(
    celery_client: Celery, proxy: SlowProxy, wallet: str, redis_url: str
) -> None:
    import redis

    from tasks.config import get_settings

    lease = get_settings().lock_lease_seconds
    fund(celery_client, wallet, proxy.url, 300)
    op = call(
        celery_client,
        "cashu.melt.prepare",
        wallet=wallet,
        mint_url=proxy.url,
        invoice=make_invoice(100),
    )
    proxy.hold("/v1/melt/bolt11", lease + 8)  # paid, but the answer comes after a lease
    slow = celery_client.send_task("cashu.melt.execute", kwargs={"operation_id": op["id"]})
    assert proxy.answered.wait(TIMEOUT)
    time.sleep(lease + 1)

    key = f"cashu:lock:op:{op['id']}"
    assert redis.Redis.from_url(redis_url).exists(key)  # renewed by its holder
    second = raises(celery_client, "cashu.melt.execute", operation_id=op["id"])
    assert type(second).__name__ == "OperationInProgressError", repr(second)
    paid = slow.get(timeout=TIMEOUT)
    assert paid["state"] == "finalized"
    assert not redis.Redis.from_url(redis_url).exists(key)  # released when the step ended
    assert_balance(celery_client, wallet, spendable=300 - 100 - paid["effective_fee"])


def test_a_step_whose_worker_process_was_killed_is_redelivered_and_answers_its_caller(
    celery_worker, celery_client: Celery, proxy: SlowProxy, wallet: str
) -> None:
    client, url = celery_client, proxy.url
    fund(client, wallet, url, 300)
    op = call(client, "cashu.melt.prepare", wallet=wallet, mint_url=url, invoice=make_invoice(100))
    proxy.hold("/v1/melt/bolt11", 20.0)  # the mint pays; its answer waits in the proxy
    executing = client.send_task("cashu.melt.execute", kwargs={"operation_id": op["id"]})
    assert proxy.answered.wait(TIMEOUT)
    kill_the_process_running(celery_worker, client, executing.id)
    proxy.release()

    # The message comes back; its second delivery waits out the dead process's lease.
    paid = executing.get(timeout=TIMEOUT)
    assert paid["state"] == "finalized", paid
    assert paid["effective_fee"] <= op["fee_reserve"] + op["swap_fee"] + op["input_fee"]
    assert_balance(client, wallet, spendable=300 - 100 - paid["effective_fee"])


def test_a_one_call_payment_redelivered_after_its_worker_died_pays_once_and_answers_its_caller(
    celery_worker, celery_client: Celery, proxy: SlowProxy, wallet: str, saga_context
) -> None:
    client, url = celery_client, proxy.url
    fund(client, wallet, url, 300)
    invoice = make_invoice(100)
    # The melt exists and holds its inputs once the pre-flight check is asked; the worker
    # dies before it hears the answer.
    proxy.hold("/v1/checkstate", 20.0)
    paying = client.send_task(
        "cashu.melt.pay", kwargs={"wallet": wallet, "mint_url": url, "invoice": invoice}
    )
    assert proxy.answered.wait(TIMEOUT)
    kill_the_process_running(celery_worker, client, paying.id)
    proxy.release()

    paid = paying.get(timeout=TIMEOUT)  # the second delivery carries on with the same melt
    assert paid["state"] == "finalized", paid
    assert proxy.seen.count("/v1/melt/bolt11") == 1
    melts = operations(client, wallet, "melt")
    assert [o["id"] for o in melts] == [paid["id"]], melts
    assert paid["effective_fee"] <= paid["fee_reserve"] + paid["swap_fee"] + paid["input_fee"]
    assert_balance(client, wallet, spendable=300 - 100 - paid["effective_fee"])
    assert_mint_agrees(saga_context, url, wallet)


def test_a_one_call_send_redelivered_after_its_worker_died_sends_once_and_answers_its_token(
    celery_worker, celery_client: Celery, proxy: SlowProxy, wallet: str, saga_context
) -> None:
    client, url = celery_client, proxy.url
    fund(client, wallet, url, 300)
    lock = PrivateKey().public_key.format().hex()  # locked to a key: always a swap
    proxy.hold("/v1/swap", 20.0)  # the mint swaps; its answer waits in the proxy
    sending = client.send_task(
        "cashu.send.token",
        kwargs={"wallet": wallet, "mint_url": url, "amount": 100, "p2pk_pubkey": lock},
    )
    assert proxy.answered.wait(TIMEOUT)
    kill_the_process_running(celery_worker, client, sending.id)
    proxy.release()

    sent = sending.get(timeout=TIMEOUT)  # the second delivery finishes the same send
    assert sent["state"] == "pending" and sent["token"] and sent["needs_swap"], sent
    sends = operations(client, wallet, "send")
    assert [o["id"] for o in sends] == [sent["id"]], sends
    assert_balance(client, wallet, spendable=300 - 100 - sent["fee"], pending=100)
    assert_mint_agrees(saga_context, url, wallet)


def kill_the_process_running(celery_worker, client: Celery, task_id: str) -> None:
    """SIGKILL the worker's pool process running `task_id` while it holds its lock."""
    import os
    import signal

    active = client.control.inspect(destination=[celery_worker.nodename]).active()
    [running] = [t for t in active[celery_worker.nodename] if t["id"] == task_id]
    os.kill(running["worker_pid"], signal.SIGKILL)


def operations(client: Celery, wallet: str, kind: str) -> list[dict]:
    return call(client, "cashu.ops.list", wallet=wallet, kind=kind)["operations"]
