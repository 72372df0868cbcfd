"""The relay publishes committed outbox rows to the stream, oldest first, at least once.

In-process, on a database and a Redis database of their own, so no worker's relay takes
these events first.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from db_harness import migrate_fresh
from sqlalchemy import create_engine, insert, select
from sqlalchemy.engine import Engine, make_url

from models import Event, Operation

RELAY_REDIS_URL = "redis://127.0.0.1:6379/11"


@pytest.fixture
def relay_db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    from tasks.config import get_settings
    from tasks.redis_client import reset_redis

    url = make_url(database_url)
    own = migrate_fresh(
        url.set(database=f"{url.database}_relay").render_as_string(hide_password=False)
    )
    redis.Redis.from_url(RELAY_REDIS_URL).flushdb()
    monkeypatch.setenv("DATABASE_URL", own)
    monkeypatch.setenv("REDIS_URL", RELAY_REDIS_URL)
    get_settings.cache_clear()
    reset_redis()
    engine = create_engine(own)
    try:
        yield engine
    finally:
        engine.dispose()
        get_settings.cache_clear()
        reset_redis()


def add_events(engine: Engine, count: int, notify_task: str | None = None) -> uuid.UUID:
    op_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            insert(Operation.__table__).values(
                id=op_id,
                wallet="relay-test",
                kind="mint",
                method="bolt11",
                state="pending",
                version=0,
                mint_url="http://mint.invalid",
                unit="sat",
                amount=1,
                notify_task=notify_task,
                data={},
            )
        )
        for n in range(count):
            conn.execute(
                insert(Event.__table__).values(
                    operation_id=op_id, type=f"mint-op:step-{n}", payload={"n": n}
                )
            )
    return op_id


def stream() -> list[dict[str, Any]]:
    entries = redis.Redis.from_url(RELAY_REDIS_URL, decode_responses=True).xrange("cashu:events")
    return [fields for _, fields in entries]


def unpublished(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(Event.id).where(Event.published_at.is_(None))).all())


def test_relay_publishes_events_oldest_first_and_marks_them(relay_db: Engine) -> None:
    from tasks.events import relay_events

    op_id = add_events(relay_db, 3)

    assert relay_events() == 3
    sent = stream()
    assert [e["type"] for e in sent] == ["mint-op:step-0", "mint-op:step-1", "mint-op:step-2"]
    assert {e["operation_id"] for e in sent} == {str(op_id)}
    assert [json.loads(e["payload"]) for e in sent] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert unpublished(relay_db) == 0


def test_relay_sends_a_published_event_only_once(relay_db: Engine) -> None:
    from tasks.events import relay_events

    add_events(relay_db, 2)
    assert relay_events() == 2
    assert relay_events() == 0
    assert len(stream()) == 2


def test_relay_takes_at_most_its_limit_oldest_first(relay_db: Engine) -> None:
    from tasks.events import relay_events

    add_events(relay_db, 3)
    assert relay_events(limit=2) == 2
    assert [e["type"] for e in stream()] == ["mint-op:step-0", "mint-op:step-1"]
    assert unpublished(relay_db) == 1


def test_relay_leaves_events_unpublished_when_the_stream_refuses_them(
    relay_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.client import Pipeline

    from tasks.events import relay_events

    add_events(relay_db, 2)

    def refuse(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("stream down")

    with monkeypatch.context() as patch:
        patch.setattr(Pipeline, "execute", refuse)
        with pytest.raises(redis.ConnectionError):
            relay_events()
    assert unpublished(relay_db) == 2  # the published mark rolled back with the failure
    assert relay_events() == 2
    assert len(stream()) == 2


def test_relay_sends_each_event_to_the_operations_notify_task(
    relay_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks import events

    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        events.app, "send_task", lambda name, kwargs, queue: sent.append((name, kwargs))
    )
    op_id = add_events(relay_db, 2, notify_task="svc.on_event")
    add_events(relay_db, 1)  # no notify_task: the stream only

    assert events.relay_events() == 3
    assert [name for name, _ in sent] == ["svc.on_event", "svc.on_event"]
    messages = [kwargs["event"] for _, kwargs in sent]
    assert [m["type"] for m in messages] == ["mint-op:step-0", "mint-op:step-1"]
    assert {m["operation_id"] for m in messages} == {str(op_id)}
    assert all(m["created_at"] and isinstance(m["id"], int) for m in messages)


def test_relay_without_wait_steps_aside_while_another_relay_runs(relay_db: Engine) -> None:
    from sqlalchemy import func

    from tasks.events import RELAY_LOCK_KEY, relay_events

    add_events(relay_db, 1)
    with relay_db.begin() as conn:
        conn.execute(select(func.pg_advisory_xact_lock(RELAY_LOCK_KEY)))
        assert relay_events(wait=False) is None
    assert unpublished(relay_db) == 1
    assert relay_events(wait=False) == 1


def test_a_worker_process_takes_its_next_task_while_its_last_tasks_relay_waits(
    own_workers, database_url: str
) -> None:
    from sqlalchemy import text

    worker = own_workers(concurrency=1)
    # Its start-up recovery runs first (it may write events): the process is free after it.
    worker.client.send_task("cashu.mints.list").get(timeout=30)
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(text("LOCK TABLE events IN SHARE MODE"))  # a relay's claim waits
            refused = worker.client.send_task(
                "cashu.send.execute", kwargs={"operation_id": str(uuid.uuid4())}
            )
            refused.get(timeout=30, propagate=False)  # its step asked for a relay on the way out
            assert refused.state == "FAILURE"

            assert "mints" in worker.client.send_task("cashu.mints.list").get(timeout=10)
    finally:
        engine.dispose()
