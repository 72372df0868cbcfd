"""The beat schedule the app carries: every entry a task the worker has, on the beat's queue."""

from __future__ import annotations

from tasks.app import BEAT_QUEUE, app


def test_every_beat_entry_names_a_registered_task_on_the_beat_queue() -> None:
    app.loader.import_default_modules()
    for name, entry in app.conf.beat_schedule.items():
        assert entry["task"] in app.tasks, name
        assert entry["options"]["queue"] == BEAT_QUEUE, name


def test_in_flight_operations_are_retried_every_few_seconds_by_default() -> None:
    entry = app.conf.beat_schedule["retry-in-flight"]

    assert entry["task"] == "cashu.beat.retry_in_flight"
    assert entry["schedule"].total_seconds() == 5.0
