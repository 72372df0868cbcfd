"""The recovery driver: one sweep over open operations, each saga plugging in its rules.

A saga registers a rule per state it can settle. The sweep goes through the
states in RECOVERY_ORDER (executing before pending: an executing operation may
drop back to pending and must be seen in the same sweep), claims operations
with a short lease a few at a time (a sweeping worker that dies blocks few, not
for long), and runs each under the caller's per-operation lock. Once a mint
fails to answer in this sweep, its other operations wait for the next one: a dead
mint costs one request per sweep, not one per operation.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from models import Operation
from nuts.errors import CashuError
from sagas.engine import (
    Progress,
    SagaContext,
    claim_operations,
    drive,
    release_claims,
    spec_of,
)
from sagas.errors import OperationInProgressError

logger = logging.getLogger(__name__)

RECOVERY_ORDER = ("init", "executing", "rolling_back", "pending", "prepared")
CLAIM_ROUND = 10  # operations claimed at a time
CLAIM_LEASE_SECONDS = 15

Step = Callable[[SagaContext, uuid.UUID, str], dict[str, Any] | Progress]
Lock = Callable[[uuid.UUID], AbstractContextManager[Any]]
HandOn = Callable[[str, Progress], None]  # (kind, progress): run its next step elsewhere
# A step that only asks the mint whether something happened yet: the sweep itself is that,
# so a rule that ends on it hands nothing on.
POLL_STEP = "check"


@dataclass(frozen=True)
class RecoveryRule:
    kind: str
    state: str
    step: Step
    min_age: timedelta | None = None  # only operations untouched for this long


RULES: list[RecoveryRule] = []


def register_rule(kind: str, state: str, step: Step, min_age: timedelta | None = None) -> None:
    RULES.append(RecoveryRule(kind, state, step, min_age))


def run_recovery(
    ctx: SagaContext,
    *,
    lock: Lock,
    kinds: set[str] | None = None,
    states: set[str] | None = None,
    batch: int = 100,
    min_ages: dict[tuple[str, str], timedelta] | None = None,
    hand_on: HandOn | None = None,
) -> dict[str, int]:
    """Sweep once; returns counts: recovered, rolled_back, still_pending, failed, skipped.

    A rule that leaves a next step (a melt whose swap is done and whose payment is next)
    has it run by `hand_on` once the lock is released (a worker sends it as its task),
    or, without one, here under the lock.
    """
    counts = {"recovered": 0, "rolled_back": 0, "still_pending": 0, "failed": 0, "skipped": 0}
    started = time.monotonic()
    for state in RECOVERY_ORDER:
        for rule in RULES:
            if rule.state != state or (kinds and rule.kind not in kinds):
                continue
            if states and state not in states:
                continue
            min_age = (min_ages or {}).get((rule.kind, state), rule.min_age)
            if min_age is None and state == "prepared":
                min_age = ctx.prepared_max_age
            seen: set[uuid.UUID] = set()
            while len(seen) < batch:
                with ctx.uow() as session:
                    claimed = claim_operations(
                        session,
                        rule.kind,
                        state,
                        limit=min(CLAIM_ROUND, batch - len(seen)),
                        lease_seconds=CLAIM_LEASE_SECONDS,
                        min_age=min_age,
                        exclude=seen,
                    )
                if not claimed:
                    break
                for op in claimed:
                    seen.add(op.id)
                    if _failed_since(ctx, op.mint_url, started):
                        _release(ctx, op.id)
                        counts["skipped"] += 1
                    else:
                        counts[_recover_one(ctx, rule, op.id, lock, hand_on)] += 1
    return counts


def _failed_since(ctx: SagaContext, mint_url: str, started: float) -> bool:
    """The mint did not answer a request of this sweep (refused, timed out, cut, 5xx)."""
    failed_at = ctx.mint_client(mint_url).failed_at
    return failed_at is not None and failed_at >= started


def _release(ctx: SagaContext, op_id: uuid.UUID) -> None:
    with ctx.uow() as session:
        release_claims(session, [op_id])  # the next tick may look again, however soon


def _recover_one(
    ctx: SagaContext, rule: RecoveryRule, op_id: uuid.UUID, lock: Lock, hand_on: HandOn | None
) -> str:
    try:
        with lock(op_id):
            result = rule.step(ctx, op_id, rule.state)
            if isinstance(result, Progress) and hand_on is None:
                result = drive(ctx, rule.kind, result, until=(POLL_STEP,))
    except OperationInProgressError:
        return "skipped"  # a worker is on it right now
    except CashuError as exc:
        # A step that settled the operation and then told its caller why (a refused
        # token, a mint that refused the connection): the state counts, not the error.
        logger.info("recovery of %s operation %s: %s", rule.kind, op_id, exc.code)
        with ctx.uow() as session:
            op = session.get(Operation, op_id)
            if op is None:
                return "skipped"
            result = {"state": op.state}
    except Exception:
        logger.exception("recovery of %s operation %s failed", rule.kind, op_id)
        return "failed"
    finally:
        _release(ctx, op_id)
    if isinstance(result, Progress):
        if hand_on is not None and result.next_step not in (None, POLL_STEP):
            hand_on(rule.kind, result)
        result = result.view
    spec = spec_of(rule.kind)
    if result["state"] == "finalized":
        return "recovered"
    if result["state"] in spec.terminal:
        return "rolled_back"
    return "still_pending"
