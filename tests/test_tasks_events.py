"""Events reach other services through the Redis stream cashu:events, consumer groups included."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from celery import Celery
from task_helpers import assert_balance, fund, wait_until

pytestmark = pytest.mark.mint
STREAM = "cashu:events"


def test_a_consumer_group_reads_each_event_of_an_operation_once_in_order(
    celery_client: Celery, mint_url: str, wallet: str, redis_url: str
) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    group = f"g-{uuid.uuid4().hex[:8]}"
    r.xgroup_create(STREAM, group, id="$", mkstream=True)  # only what comes after now

    op = fund(celery_client, wallet, mint_url, 64)
    mine: list[str] = []

    def read_some() -> bool:
        for _, entries in r.xreadgroup(group, "consumer-1", {STREAM: ">"}, count=100) or []:
            for entry_id, fields in entries:
                if fields["operation_id"] == op["id"]:
                    mine.append(fields["type"])
                    assert json.loads(fields["payload"])["id"] == op["id"]
                r.xack(STREAM, group, entry_id)
        return len(mine) >= 3

    assert wait_until(read_some, timeout=30)
    assert mine == ["mint-op:pending", "mint-op:executing", "mint-op:finalized"]
    assert r.xpending(STREAM, group)["pending"] == 0  # every entry acknowledged
    assert_balance(celery_client, wallet, spendable=64)
