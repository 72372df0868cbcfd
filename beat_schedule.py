"""The beat schedule: every periodic task and its interval (DESIGN.md section 7).

Run exactly one beat: `celery -A tasks beat`. Intervals come from the environment
(tasks/config.py: CASHU_POLL_MINT_QUOTES_SECONDS, CASHU_RECOVERY_SECONDS,
CASHU_RELAY_EVENTS_SECONDS, CASHU_REFRESH_KEYSETS_SECONDS). Every entry runs on the
"cashu.beat" queue and expires after one interval: a tick nobody picked up in time is
dropped, not piled up (the next tick does the same work, read from the database).
Pollers claim rows with FOR UPDATE SKIP LOCKED and a lease, so overlapping ticks never
do the same work twice.

Still to come, with their sagas:
  - cashu.beat.poll_melts          pending melts: poll the melt quote
  - cashu.beat.check_sends         pending sends: checkstate of the tokens' proofs in
                                   batches (one call per mint, up to 100 Ys)
  - cashu.beat.cancel_stale        cancel prepared operations older than 24 h (configurable)
  - cashu.beat.refresh_keysets     refresh trusted mints' keysets
                                   (interval: CASHU_REFRESH_KEYSETS_SECONDS, default 1 h)
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tasks.config import Settings, get_settings

BEAT_QUEUE = "cashu.beat"  # tasks.app.BEAT_QUEUE (not imported: tasks.app imports this file)


def _entry(task: str, seconds: float) -> dict[str, Any]:
    return {
        "task": task,
        "schedule": timedelta(seconds=seconds),
        "options": {"queue": BEAT_QUEUE, "expires": max(1.0, seconds)},
    }


def make_beat_schedule(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    settings = settings or get_settings()
    return {
        # pending mint quotes: issue once paid, fail once expired
        "poll-mint-quotes": _entry(
            "cashu.beat.poll_mint_quotes", settings.poll_mint_quotes_seconds
        ),
        # every saga's open operations: executing / rolling_back first, then pending, init
        "recovery-sweep": _entry("cashu.recovery.run", settings.recovery_seconds),
        # publish committed events to the stream and to notify tasks
        "relay-events": _entry("cashu.events.relay", settings.relay_events_seconds),
    }


beat_schedule = make_beat_schedule()
