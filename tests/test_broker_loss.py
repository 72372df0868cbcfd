"""A worker whose Redis dies under it, with a task in flight: it stays up and serves again.

The Redis here is the test's own (tests/redis_harness.py), SIGKILLed and started again
empty; the database is the suite's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from celery import Celery
from db_harness import TEST_MNEMONIC
from mint_harness import make_invoice
from redis_harness import RedisServer
from slow_proxy import SlowProxy
from task_helpers import TIMEOUT, assert_balance, call, fund, wait_until
from worker_harness import RunningWorker, start_worker

pytestmark = pytest.mark.mint


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def worker_on_own_redis(database_url: str, own_redis: RedisServer) -> Iterator[RunningWorker]:
    worker = start_worker(
        database_url=database_url, redis_url=own_redis.url(), mnemonic=TEST_MNEMONIC
    )
    try:
        yield worker
    finally:
        worker.stop()


def answers(client: Celery, wallet: str) -> bool:
    try:
        call(client, "cashu.wallet.balance", wallet=wallet)
        return True
    except Exception:
        return False


def test_a_worker_with_a_task_in_flight_survives_its_redis_dying_and_serves_again(
    worker_on_own_redis: RunningWorker,
    own_redis: RedisServer,
    proxy: SlowProxy,
    wallet: str,
) -> None:
    client = worker_on_own_redis.client
    fund(client, wallet, proxy.url, 300)
    op = call(
        client, "cashu.melt.prepare", wallet=wallet, mint_url=proxy.url, invoice=make_invoice(100)
    )
    proxy.hold("/v1/melt/bolt11", 1.0)  # in flight and unacknowledged when Redis dies
    client.send_task("cashu.melt.execute", kwargs={"operation_id": op["id"]})
    assert proxy.answered.wait(TIMEOUT)

    own_redis.kill()
    time.sleep(3.0)  # the melt ends while Redis is down: its result and ack have nowhere to go
    own_redis.start()  # empty: the queued message and the lock are gone

    assert wait_until(lambda: answers(client, wallet), timeout=60)
    assert worker_on_own_redis.running
    paid = call(client, "cashu.recovery.run")
    assert paid["failed"] == 0
    view = call(client, "cashu.ops.get", operation_id=op["id"])
    assert view["state"] == "finalized", view
    assert_balance(client, wallet, spendable=300 - 100 - view["effective_fee"])
