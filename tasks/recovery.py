"""Recovery tasks: a full sweep (also run at worker start) and the beat's quote poller."""

from __future__ import annotations

from sagas import mint, receive, send  # noqa: F401  (each registers its recovery rules)
from sagas.recovery import run_recovery
from tasks.app import app
from tasks.context import saga_context
from tasks.events import send_relay
from tasks.locks import operation_lock


def _sweep(**filters: object) -> dict[str, int]:
    try:
        counts = run_recovery(saga_context(), lock=operation_lock, **filters)  # type: ignore[arg-type]
    except BaseException:
        send_relay()
        raise
    if any(n for key, n in counts.items() if key != "skipped"):
        send_relay()  # something moved: publish its events now, not at the next tick
    return counts


@app.task(name="cashu.recovery.run")
def run() -> dict[str, int]:
    """{"recovered", "rolled_back", "still_pending", "failed", "skipped"}."""
    return _sweep()


@app.task(name="cashu.beat.poll_mint_quotes")
def poll_mint_quotes() -> dict[str, int]:
    """Pending (and stuck executing) mint operations: issue once paid, fail once expired."""
    return _sweep(kinds={"mint"}, states={"pending", "executing"})
