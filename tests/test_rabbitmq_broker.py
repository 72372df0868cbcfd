"""RabbitMQ as the broker (BROKER_URL), with Redis kept for results, locks and events.

scripts/test.sh runs the task-level tests (tests/test_tasks_*.py) a second time with
RabbitMQ as the broker; these tests run in the main suite, on a worker of their own whose
broker is RabbitMQ, and need the vhost scripts/test.sh makes (TEST_RABBITMQ_URL overrides).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from broker_harness import purge_queues
from db_harness import TEST_MNEMONIC
from worker_harness import RunningWorker, start_worker

from cashu_client import CashuClient
from cashu_client.cli import main
from tasks.app import celery_config
from tasks.config import Settings

RABBITMQ_URL = os.environ.get(
    "TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/cashu_worker_test_own"
)


@pytest.fixture
def rabbit_worker(database_url: str, redis_url: str) -> Iterator[RunningWorker]:
    """A worker whose broker is RabbitMQ and whose Redis is a database no other worker
    reads: only RabbitMQ can bring it a task."""
    base, _, db = redis_url.rpartition("/")
    own_redis = f"{base}/{(int(db or 0) + 5) % 16}"
    redis.Redis.from_url(own_redis).flushdb()
    purge_queues(RABBITMQ_URL)
    worker = start_worker(
        database_url=database_url,
        redis_url=own_redis,
        mnemonic=TEST_MNEMONIC,
        concurrency=1,
        broker_url=RABBITMQ_URL,
    )
    try:
        yield worker
    finally:
        worker.stop()


def test_the_broker_is_redis_unless_broker_url_names_another() -> None:
    on_redis = Settings(redis_url="redis://r:6379/3", broker_url=None)
    on_rabbit = Settings(redis_url="redis://r:6379/3", broker_url="amqp://u:p@q:5672/v")
    assert celery_config(on_redis)["broker_url"] == "redis://r:6379/3"
    assert celery_config(on_rabbit)["broker_url"] == "amqp://u:p@q:5672/v"
    assert celery_config(on_rabbit)["result_backend"] == "redis://r:6379/3"  # results stay


def test_only_a_redis_broker_gets_a_visibility_timeout() -> None:
    on_redis = celery_config(Settings(broker_url=None, visibility_timeout=400))
    on_rabbit = celery_config(Settings(broker_url="amqp://u:p@q:5672/v"))
    assert on_redis["broker_transport_options"] == {"visibility_timeout": 400}
    assert on_rabbit["broker_transport_options"] == {}


def test_a_client_reaches_a_worker_through_rabbitmq(rabbit_worker: RunningWorker) -> None:
    wallet = f"rmq-{os.urandom(6).hex()}"
    with CashuClient(RABBITMQ_URL, rabbit_worker.redis_url, timeout=30) as client:
        balance = client.balance(wallet)
    assert (balance["spendable"], balance["total"], balance["by_mint"]) == (0, 0, {})


def test_the_cli_takes_the_broker_from_broker_url(rabbit_worker: RunningWorker) -> None:
    out = io.StringIO()
    argv = ["--broker-url", RABBITMQ_URL, "--redis-url", rabbit_worker.redis_url]
    assert main([*argv, "mints", "list", "--json"], out=out) == 0, out.getvalue()
    assert isinstance(json.loads(out.getvalue())["mints"], list)  # the worker answered


def test_an_unreachable_rabbitmq_is_broker_error_and_exit_2_within_seconds() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "cashu_client.cli", "mints", "list"],
        env={**os.environ, "BROKER_URL": "amqp://guest:guest@127.0.0.1:1/x"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error BROKER_ERROR: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 5.0
