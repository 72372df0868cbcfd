"""What a waiting caller hears from the result backend while its task runs: the STARTED
state only when CASHU_TASK_TRACK_STARTED asks for it, whether task events are on or not
(each STARTED is a backend write and a message to the caller before the task runs)."""

from __future__ import annotations

import json
import time
import uuid

import redis

TIMEOUT = 30


def states_a_caller_hears(worker) -> list[str]:
    """The states the backend announced for one task, in order, until it ended."""
    task_id = str(uuid.uuid4())
    pubsub = redis.Redis.from_url(worker.redis_url).pubsub()
    pubsub.subscribe(f"celery-task-meta-{task_id}")  # where the backend announces each state
    try:
        assert pubsub.get_message(timeout=TIMEOUT)["type"] == "subscribe"  # listening now
        worker.client.send_task("cashu.mints.list", task_id=task_id).get(timeout=TIMEOUT)
        states: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while not states or states[-1] != "SUCCESS":
            assert time.monotonic() < deadline, f"the backend went quiet after {states}"
            message = pubsub.get_message(timeout=1.0)
            if message is not None:
                states.append(json.loads(message["data"])["status"])
        return states
    finally:
        pubsub.close()


def test_task_events_on_send_no_started_state_to_the_waiting_caller(own_workers) -> None:
    worker = own_workers(CASHU_TASK_EVENTS="true")

    assert states_a_caller_hears(worker) == ["SUCCESS"]


def test_track_started_sends_the_started_state_before_the_result(own_workers) -> None:
    worker = own_workers(CASHU_TASK_TRACK_STARTED="true")

    assert states_a_caller_hears(worker) == ["STARTED", "SUCCESS"]
