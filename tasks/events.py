"""The event relay: publish committed outbox rows to Redis (docs/design.md section 6).

An event row is written in the same transaction as the transition it announces,
so reading it from the database means its state is committed. The relay sends
each one to the stream `cashu:events` and, for operations created with
`notify_task`, sends that task by name; then marks it published. Delivery is at
least once (a crash between publishing and the commit publishes again): consumers
deduplicate on the event id. Relays run one at a time (an advisory lock), so the
stream keeps each operation's events in order.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

from celery import current_task, signals
from sqlalchemy import Row, bindparam, func, select, text, update

from models.db import unit_of_work
from sagas.engine import EVENTS, OPERATIONS
from tasks.app import app
from tasks.config import get_settings
from tasks.redis_client import get_redis

logger = logging.getLogger(__name__)

STREAM = "cashu:events"
STREAM_MAXLEN = 100_000
BATCH = 500
RELAY_LOCK_KEY = 0x63617368755F7276  # pg advisory lock key: b"cashu_rv"
RELAY_QUEUED_KEY = "cashu:relay:queued"
RELAY_QUEUED_TTL_MS = 2000


def event_message(event: Row[Any]) -> dict[str, Any]:
    """The event as sent to a notify_task: {id, type, operation_id, created_at, payload}."""
    return {
        "id": event.id,
        "type": event.type,
        "operation_id": str(event.operation_id),
        "created_at": event.created_at.isoformat() if event.created_at else None,
        "payload": event.payload,
    }


# Marks up to :limit unpublished events published and returns them with their operation's
# notify_task: one statement, so the relay reads nothing twice. The rows stay locked until
# the commit, which comes only after they were sent.
CLAIM_EVENTS = (
    update(EVENTS)
    .where(
        EVENTS.c.id.in_(
            select(EVENTS.c.id)
            .where(EVENTS.c.published_at.is_(None))
            .order_by(EVENTS.c.id)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True)
        ),
        OPERATIONS.c.id == EVENTS.c.operation_id,
    )
    .values(published_at=func.now())
    .returning(
        EVENTS.c.id,
        EVENTS.c.operation_id,
        EVENTS.c.type,
        EVENTS.c.payload,
        EVENTS.c.created_at,
        OPERATIONS.c.notify_task,
    )
)


def relay_events(limit: int = BATCH, *, wait: bool = True) -> int | None:
    """Publish up to `limit` unpublished events, oldest first; returns how many. With
    wait=False, returns None at once when another relay is running.

    The events are sent before their published mark commits: a crash in between sends
    them again (at least once), never loses one."""
    settings = get_settings()
    with unit_of_work(settings.database_url) as session:
        if wait:
            session.execute(text("SET LOCAL lock_timeout = '30s'"))
            session.execute(select(func.pg_advisory_xact_lock(RELAY_LOCK_KEY)))
        elif not session.scalar(select(func.pg_try_advisory_xact_lock(RELAY_LOCK_KEY))):
            return None
        rows = sorted(session.execute(CLAIM_EVENTS, {"limit": limit}), key=lambda row: row.id)
        if not rows:
            return 0
        pipe = get_redis().pipeline(transaction=False)
        for row in rows:
            pipe.xadd(
                STREAM,
                {
                    "id": str(row.id),
                    "type": row.type,
                    "operation_id": str(row.operation_id),
                    "payload": json.dumps(row.payload, separators=(",", ":")),
                },
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
        pipe.execute()
        for row in rows:
            if row.notify_task:
                app.send_task(
                    row.notify_task,
                    kwargs={"event": event_message(row)},
                    queue=settings.notify_queue,
                )
    return len(rows)


@app.task(name="cashu.events.relay")
def relay() -> int:
    # Cleared before reading: events committed from here on ask for a relay of their own.
    get_redis().delete(RELAY_QUEUED_KEY)
    count = relay_events() or 0  # wait=True: never None
    if count == BATCH:
        send_relay()  # more are waiting
    return count


def request_relay() -> None:
    """Ask for the events a step just committed to be published.

    In a worker they are published by this process's relay thread once the task has
    ended (task_postrun, below): neither the caller nor the worker's next task waits for
    them, and no relay task is needed. Elsewhere a relay task is queued now.
    """
    task = current_task
    if task is None or task.request.is_eager or not task.request.id:
        send_relay()
    else:
        task.request.relay_events = True


@signals.task_postrun.connect
def _relay_after_task(task: Any = None, **_: Any) -> None:
    if task is not None and getattr(task.request, "relay_events", False):
        _relay_thread.wake()


class _RelayThread:
    """One thread per worker process publishes what the process's tasks committed, as soon
    as each task has ended. The process takes its next task at once instead of waiting for
    Postgres and Redis, and tasks that end close together share one relay. A process that
    dies with a relay still to do leaves its events in the outbox: the beat's relay tick
    publishes them."""

    def __init__(self) -> None:
        self._wanted = threading.Event()
        self._mutex = threading.Lock()
        self._pid = 0

    def wake(self) -> None:
        with self._mutex:
            if self._pid != os.getpid():  # new process: the parent's thread is not here
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="event-relay", daemon=True).start()
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()  # events committed from here on wake it again
            relay_after_task()


_relay_thread = _RelayThread()


def relay_after_task() -> None:
    """Publish what the task's step committed, unless another relay is running (it may
    have read the outbox before these events were committed: a queued relay takes them)."""
    try:
        count = relay_events(wait=False)
    except Exception:
        logger.warning("could not relay events after a step; queueing a relay", exc_info=True)
        count = None
    if count is None or count == BATCH:
        send_relay()


def send_relay() -> None:
    """Ask for a relay run; called after a saga step returned (its commits are done).

    At most one relay waits in the queue at a time: a relay that has not started yet
    will read every event committed before it starts, so asking again adds nothing.
    The flag lapses by itself if that relay is lost; the beat's tick catches up too.
    """
    try:
        if get_redis().set(RELAY_QUEUED_KEY, 1, nx=True, px=RELAY_QUEUED_TTL_MS):
            relay.apply_async()
    except Exception:  # the beat's relay tick catches up
        logger.warning("could not send cashu.events.relay", exc_info=True)
