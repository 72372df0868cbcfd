"""No worker waits on Lightning: a slow payment never holds the slot everything else needs.

Each test runs its own workers with ONE process each, on a Redis database of its own (the
session's worker must not help), against its own mint whose FakeWallet takes a few seconds
per payment. While a payment is in flight, a send from another wallet must be done:
- with asynchronous melts (a mint that pays in the background and says so first: Nutshell
  0.21.0), on a single worker consuming every queue, as the plain `celery -A tasks worker`
  does;
- without (0.20.2, which answers before it commits; or CASHU_ASYNC_MELTS=false), when the pay
  step has a worker of its own on the cashu.lightning queue (a thread pool), as README and
  scripts/run.sh start it.
The payment's caller still gets the final Operation, and what it cost is within its fees.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from celery import Celery
from mint_harness import RunningMint, make_invoice
from task_helpers import TIMEOUT, assert_balance, call, fund, new_wallet_name
from worker_harness import RunningWorker

pytestmark = pytest.mark.mint
PAYMENT_SECONDS = 4


def slow_mint(fresh_mint: Callable[..., RunningMint], version: str) -> RunningMint:
    """Each payment takes PAYMENT_SECONDS; a check of its quote meanwhile says PENDING (by
    default the FakeWallet's status check would report it settled at once)."""
    return fresh_mint(
        env_overrides={
            "FAKEWALLET_DELAY_OUTGOING_PAYMENT": str(PAYMENT_SECONDS),
            "FAKEWALLET_PAYMENT_STATE": "PENDING",
        },
        version=version,
    )


def send_while_paying(client: Celery, mint: RunningMint) -> None:
    """Pay a slow invoice from one wallet and, meanwhile, send from another: the send is done
    while the payment is still in flight, and the payment's caller gets it finalized."""
    url = call(client, "cashu.mints.add", url=mint.url)["url"]
    payer, sender = new_wallet_name("payer"), new_wallet_name("sender")
    fund(client, payer, url, 300)
    fund(client, sender, url, 100)

    started = time.monotonic()
    payment = client.send_task(
        "cashu.melt.pay",
        kwargs={"wallet": payer, "mint_url": url, "invoice": make_invoice(100)},
        queue="cashu",
    )
    time.sleep(0.5)  # the pay step has sent the melt request by now
    sent = call(client, "cashu.send.token", wallet=sender, mint_url=url, amount=10)
    send_done = time.monotonic() - started

    assert sent["state"] == "pending" and sent["token"]
    assert not payment.ready(), "the payment finished before the send: the test proves nothing"
    assert send_done < PAYMENT_SECONDS, f"the send waited {send_done:.1f} s behind the payment"
    paid = payment.get(timeout=TIMEOUT)
    assert paid["state"] == "finalized", paid
    worst = paid["fee_reserve"] + paid["swap_fee"] + paid["input_fee"]
    assert 0 <= paid["effective_fee"] <= worst
    assert_balance(client, payer, spendable=300 - 100 - paid["effective_fee"])
    assert_balance(client, sender, spendable=100 - 10 - sent["fee"], pending=10)


def test_one_worker_process_serves_a_send_while_an_asynchronous_payment_is_in_flight(
    own_workers: Callable[..., RunningWorker], fresh_mint: Callable[..., RunningMint]
) -> None:
    worker = own_workers("cashu,cashu.beat,cashu.lightning")

    send_while_paying(worker.client, slow_mint(fresh_mint, "0.21.0"))


@pytest.mark.parametrize(
    ("version", "async_melts"), [("0.20.2", "true"), ("0.21.0", "false")], ids=["0.20.2", "off"]
)
def test_without_asynchronous_melts_the_payment_waits_on_the_lightning_workers_not_the_public_ones(
    own_workers: Callable[..., RunningWorker],
    fresh_mint: Callable[..., RunningMint],
    version: str,
    async_melts: str,
) -> None:
    """0.20.2 answers an asynchronous melt before it commits it: it is paid synchronously."""
    public = own_workers("cashu,cashu.beat", CASHU_ASYNC_MELTS=async_melts)
    # as scripts/run.sh starts it: threads, for steps that mostly wait on the mint
    own_workers("cashu.lightning", pool="threads", concurrency=4, CASHU_ASYNC_MELTS=async_melts)

    send_while_paying(public.client, slow_mint(fresh_mint, version))


def test_a_waiting_melt_leaves_the_public_queue_at_once_and_pays_on_the_lightning_workers(
    own_workers: Callable[..., RunningWorker], fresh_mint: Callable[..., RunningMint]
) -> None:
    """With no worker on cashu.lightning yet, a waiting cashu.melt.pay has done nothing at
    all (not even its quote): the public worker only handed it over, and is free."""
    public = own_workers("cashu,cashu.beat")
    client = public.client
    url = call(client, "cashu.mints.add", url=slow_mint(fresh_mint, "0.20.2").url)["url"]
    payer = new_wallet_name("payer")
    fund(client, payer, url, 300)

    payment = client.send_task(
        "cashu.melt.pay",
        kwargs={"wallet": payer, "mint_url": url, "invoice": make_invoice(100)},
        queue="cashu",
    )
    time.sleep(1.0)
    assert call(client, "cashu.ops.list", wallet=payer, kind="melt")["operations"] == []
    assert not payment.ready()

    own_workers("cashu.lightning", pool="threads", concurrency=4)
    paid = payment.get(timeout=TIMEOUT)
    assert paid["state"] == "finalized", paid
    worst = paid["fee_reserve"] + paid["swap_fee"] + paid["input_fee"]
    assert 0 <= paid["effective_fee"] <= worst
    assert_balance(client, payer, spendable=300 - 100 - paid["effective_fee"])


def test_a_melt_sent_by_the_routes_runs_on_the_lightning_workers_without_a_hand_over(
    own_workers: Callable[..., RunningWorker], fresh_mint: Callable[..., RunningMint]
) -> None:
    """The routes send cashu.melt.pay to cashu.lightning: it runs there from its first step,
    and with no pre-swap its melt request is made in that same task."""
    public = own_workers("cashu,cashu.beat")
    lightning = own_workers("cashu.lightning", pool="threads", concurrency=4)
    client = public.client  # the worker's own Celery settings: its routes
    url = call(client, "cashu.mints.add", url=fresh_mint(version="0.20.2").url)["url"]
    payer = new_wallet_name("payer")
    fund(client, payer, url, 300)

    paid = call(client, "cashu.melt.pay", wallet=payer, mint_url=url, invoice=make_invoice(100))

    assert paid["state"] == "finalized" and not paid["swap_fee"], paid
    worst = paid["fee_reserve"] + paid["input_fee"]
    assert 0 <= paid["effective_fee"] <= worst
    assert_balance(client, payer, spendable=300 - 100 - paid["effective_fee"])
    assert tasks_received(lightning) == ["cashu.melt.pay"]
    assert "cashu.melt." not in " ".join(tasks_received(public))


def tasks_received(worker: RunningWorker) -> list[str]:
    log = worker.log_path.read_text(errors="replace")
    return re.findall(r"Task (cashu\.[\w.]+)\[[0-9a-f-]+\] received", log)
