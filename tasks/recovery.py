"""Recovery tasks: a full sweep (also run at worker start) and the beat's pollers."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import current_task

import sagas.catalog  # noqa: F401 - every saga's recovery rules
from sagas.engine import Progress
from sagas.recovery import RULES, run_recovery
from tasks.app import app
from tasks.config import get_settings
from tasks.context import saga_context
from tasks.events import request_relay
from tasks.locks import operation_lock
from tasks.steps import step_signature

logger = logging.getLogger(__name__)


def _sweep(**filters: object) -> dict[str, int]:
    try:
        counts = run_recovery(
            saga_context(),
            lock=operation_lock,
            hand_on=_send_next_step,
            **filters,  # type: ignore[arg-type]
        )
    except BaseException:
        request_relay()
        raise
    if any(n for key, n in counts.items() if key != "skipped"):
        request_relay()  # something moved: publish its events now, not at the next tick
        logger.info("recovery %s: %s", current_task.name if current_task else "sweep", counts)
    return counts


def _send_next_step(kind: str, progress: Progress) -> None:
    """A step recovery left (a melt's payment after its replayed swap) runs as its own task,
    on its own queue, never inside the sweep."""
    assert progress.next_step is not None
    step_signature(kind, progress.next_step, progress.view["id"], wait=False).apply_async()


@app.task(name="cashu.recovery.run")
def run() -> dict[str, int]:
    """{"recovered", "rolled_back", "still_pending", "failed", "skipped"}."""
    return _sweep()


@app.task(name="cashu.beat.poll_melts")
def poll_melts() -> dict[str, int]:
    """Pending (and stuck executing) melts: settle each from its quote's state."""
    return _poll({"melt"}, {"pending", "executing"})


@app.task(name="cashu.beat.retry_in_flight")
def retry_in_flight() -> dict[str, int]:
    """Every saga's executing and rolling_back operations, a moment after they last moved:
    a request whose answer did not come is settled as soon as the mint answers again, and
    a dead worker's operation once its lock's lease has lapsed."""
    return _poll({rule.kind for rule in RULES}, {"executing", "rolling_back"})


@app.task(name="cashu.beat.poll_mint_quotes")
def poll_mint_quotes() -> dict[str, int]:
    """Pending (and stuck executing) mint operations: issue once paid, fail once expired."""
    return _poll({"mint"}, {"pending", "executing"})


@app.task(name="cashu.beat.cancel_stale")
def cancel_stale() -> dict[str, int]:
    """Prepared operations untouched for CASHU_PREPARED_MAX_AGE_SECONDS: cancelled."""
    return _sweep(states={"prepared"})


def _poll(kinds: set[str], states: set[str]) -> dict[str, int]:
    """A poller's sweep. It leaves an operation alone for a moment after it last moved: its
    caller is usually about to take the next step, and would otherwise find the lock held."""
    age = timedelta(seconds=get_settings().poll_min_age_seconds)
    min_ages = {(kind, state): age for kind in kinds for state in states}
    return _sweep(kinds=kinds, states=states, min_ages=min_ages)
