"""The beat schedule: every periodic task and its interval (docs/design.md section 7).

Run exactly one beat: `celery -A tasks beat`. Intervals come from the environment
(tasks/config.py). Every entry runs on the "cashu.beat" queue and expires after one
interval: a tick nobody picked up in time is dropped, not piled up (the next tick does
the same work, read from the database). Pollers claim rows with FOR UPDATE SKIP LOCKED
and a lease, so overlapping ticks never do the same work twice.

  entry             task                          interval (env, default)
  poll-mint-quotes  cashu.beat.poll_mint_quotes   CASHU_POLL_MINT_QUOTES_SECONDS, 5 s
                    pending mint quotes: issue once paid, fail once expired
  poll-melts        cashu.beat.poll_melts         CASHU_POLL_MELTS_SECONDS, 5 s
                    pending (and stuck executing) melts: poll the melt quote; PAID ->
                    finalized with change, UNPAID -> released once checkstate agrees
  check-sends       cashu.beat.check_sends        CASHU_CHECK_SENDS_SECONDS, 5 s
                    pending sends: checkstate of the tokens' proofs in batches (one
                    call per mint per 100 Ys); all spent -> the send is finalized
  retry-in-flight   cashu.beat.retry_in_flight    CASHU_RETRY_IN_FLIGHT_SECONDS, 5 s
                    every saga's executing / rolling_back operations (a lost answer,
                    a mint back after an outage, a dead worker's lapsed lease)
  recovery-sweep    cashu.recovery.run            CASHU_RECOVERY_SECONDS, 30 s
                    every saga's open operations: executing / rolling_back first,
                    then pending, init, stale prepared
  cancel-stale      cashu.beat.cancel_stale       CASHU_RECOVERY_SECONDS, 30 s
                    cancel prepared operations untouched for
                    CASHU_PREPARED_MAX_AGE_SECONDS (default 86400: 24 h)
  relay-events      cashu.events.relay            CASHU_RELAY_EVENTS_SECONDS, 2 s
                    publish committed events to the stream and to notify tasks
  refresh-keysets   cashu.beat.refresh_keysets    CASHU_REFRESH_KEYSETS_SECONDS, 3600 s
                    re-fetch and re-verify trusted mints' keysets (rotations, fees)
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tasks.config import Settings, get_settings
from tasks.queues import BEAT_QUEUE


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
        # pending melts: settle from the melt quote's state
        "poll-melts": _entry("cashu.beat.poll_melts", settings.poll_melts_seconds),
        # pending sends: finalize the ones whose token was claimed (batched checkstate)
        "check-sends": _entry("cashu.beat.check_sends", settings.check_sends_seconds),
        # executing / rolling_back operations of every saga, soon after they stalled
        "retry-in-flight": _entry("cashu.beat.retry_in_flight", settings.retry_in_flight_seconds),
        # every saga's open operations: executing / rolling_back first, then pending, init
        "recovery-sweep": _entry("cashu.recovery.run", settings.recovery_seconds),
        # prepared operations older than CASHU_PREPARED_MAX_AGE_SECONDS: cancelled
        "cancel-stale": _entry("cashu.beat.cancel_stale", settings.recovery_seconds),
        # trusted mints' keysets: rotations and fee changes (counters are never touched)
        "refresh-keysets": _entry("cashu.beat.refresh_keysets", settings.refresh_keysets_seconds),
        # publish committed events to the stream and to notify tasks
        "relay-events": _entry("cashu.events.relay", settings.relay_events_seconds),
    }


beat_schedule = make_beat_schedule()
