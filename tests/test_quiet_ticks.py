"""An idle system is quiet: the beat's ticks and the event relay neither log at INFO (unless
Celery logs at DEBUG) nor send task events, so the console and Flower show the users' own
tasks; a user's task logs as before."""

from __future__ import annotations

import logging

import pytest

from tasks.app import app
from tasks.log_format import QuietTicksFilter


def record(msg: str, *, data: dict | None = None, args: tuple = ()) -> logging.LogRecord:
    made = logging.LogRecord("celery.app.trace", logging.INFO, __file__, 1, msg, args, None)
    if data is not None:
        made.data = data
    return made


@pytest.fixture
def celery_at_info() -> None:
    logger = logging.getLogger("celery")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)


def test_a_workers_lines_about_a_tick_are_dropped_at_info(celery_at_info: None) -> None:
    quiet = QuietTicksFilter()
    received = record("Task %(name)s[%(id)s] received", data={"name": "cashu.beat.poll_melts"})
    sent = record("Scheduler: Sending due task %s (%s)", args=("poll", "cashu.events.relay"))

    assert quiet.filter(received) is False
    assert quiet.filter(sent) is False


def test_a_users_task_and_a_failed_tick_still_log(celery_at_info: None) -> None:
    quiet = QuietTicksFilter()
    users = record("Task %(name)s[%(id)s] succeeded", data={"name": "cashu.send.token"})
    failed = record("Task %(name)s[%(id)s] raised", data={"name": "cashu.beat.poll_melts"})
    failed.levelno = logging.ERROR

    assert quiet.filter(users) is True
    assert quiet.filter(failed) is True


def test_ticks_log_again_when_celery_logs_at_debug() -> None:
    logger = logging.getLogger("celery")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        tick = record("Task %(name)s[%(id)s] received", data={"name": "cashu.beat.poll_melts"})
        assert QuietTicksFilter().filter(tick) is True
    finally:
        logger.setLevel(level)


def test_ticks_send_no_task_events_and_users_tasks_do() -> None:
    import tasks.events  # noqa: F401  (registers the relay)
    import tasks.recovery  # noqa: F401
    import tasks.send  # noqa: F401

    assert app.tasks["cashu.beat.poll_melts"].send_events is False
    assert app.tasks["cashu.events.relay"].send_events is False
    assert app.tasks["cashu.send.token"].send_events is True
