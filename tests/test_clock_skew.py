"""One clock: a worker host whose clock is minutes off neither cancels early nor steals claims.

Ages, grace periods and claim leases compare times the database wrote, so they are compared
with the database's own now(), never the worker's clock. Each test runs a real worker whose
Python clock is skewed (tests/clock_skew/sitecustomize.py) by ten minutes, on a Redis
database of its own (no other worker of the session helps), against the test database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from mint_harness import RunningMint, make_invoice
from saga_helpers import assert_all_spendable, bal, fund, register_mint
from sqlalchemy import text
from task_helpers import call, new_wallet_name
from worker_harness import RunningWorker

from models import Operation
from sagas import melt as melt_saga
from sagas import send as send_saga
from sagas.engine import SagaContext, claim_operations, release_claims

pytestmark = pytest.mark.mint
SKEW_SECONDS = 600
SKEW_DIR = Path(__file__).resolve().parent / "clock_skew"


@pytest.fixture
def skewed_worker(own_workers: Callable[..., RunningWorker]) -> Callable[[float], RunningWorker]:
    """skewed_worker(seconds): a worker of the test's own whose clock is that far off."""
    path = os.pathsep.join(p for p in (str(SKEW_DIR), os.environ.get("PYTHONPATH")) if p)
    return lambda skew: own_workers(PYTHONPATH=path, CASHU_TEST_CLOCK_SKEW_SECONDS=str(skew))


def age(ctx: SagaContext, operation_id: str, interval: str) -> None:
    """The operation last moved `interval` ago, by the database's clock."""
    with ctx.uow() as session:
        session.execute(
            text(
                f"UPDATE operations SET updated_at = now() - interval '{interval}' WHERE id = :id"
            ),
            {"id": operation_id},
        )


def state(ctx: SagaContext, operation_id: str) -> str:
    with ctx.uow() as session:
        op = session.get(Operation, operation_id)
        assert op is not None
        return op.state


def claimed_until(ctx: SagaContext, operation_id: str) -> object:
    with ctx.uow() as session:
        op = session.get(Operation, operation_id)
        assert op is not None
        return op.claimed_until


def prepared_send(ctx: SagaContext, test_mint: RunningMint) -> tuple[str, dict]:
    url = register_mint(ctx, test_mint.url)
    wallet = new_wallet_name("skew")
    fund(ctx, wallet, url, 100)
    return wallet, send_saga.prepare(ctx, wallet, url, 30)


@pytest.mark.parametrize("skew", [SKEW_SECONDS, -SKEW_SECONDS], ids=["ahead", "behind"])
def test_a_worker_with_a_wrong_clock_cancels_a_stale_prepared_send_neither_early_nor_late(
    skewed_worker: Callable[[float], RunningWorker],
    saga_context: SagaContext,
    test_mint: RunningMint,
    skew: float,
) -> None:
    worker = skewed_worker(skew)
    wallet, prepared = prepared_send(saga_context, test_mint)

    age(saga_context, prepared["id"], "23 hours 55 minutes")  # 5 minutes short of 24 h
    call(worker.client, "cashu.beat.cancel_stale")
    assert state(saga_context, prepared["id"]) == "prepared"
    assert bal(saga_context, wallet)["reserved"] > 0

    age(saga_context, prepared["id"], "24 hours 5 minutes")
    call(worker.client, "cashu.beat.cancel_stale")
    assert state(saga_context, prepared["id"]) == "rolled_back"
    assert_all_spendable(saga_context, wallet, 100)


def test_a_worker_whose_clock_runs_ahead_steals_no_claim(
    skewed_worker: Callable[[float], RunningWorker],
    saga_context: SagaContext,
    test_mint: RunningMint,
) -> None:
    worker = skewed_worker(SKEW_SECONDS)
    url = register_mint(saga_context, test_mint.url)
    wallet = new_wallet_name("skew")
    fund(saga_context, wallet, url, 300)
    melt = melt_saga.prepare(saga_context, wallet, url, make_invoice(100))
    melt_saga.begin(saga_context, melt["id"])  # executing: what the beat's sweep retries
    with saga_context.uow() as session:  # another host's sweep holds it, for 60 s
        claimed = claim_operations(session, "melt", "executing", lease_seconds=60)
        # only ours: other tests' operations stay free for their sweeps
        release_claims(session, [c.id for c in claimed if str(c.id) != melt["id"]])
    assert melt["id"] in {str(c.id) for c in claimed}
    held = claimed_until(saga_context, melt["id"])
    assert held is not None

    call(worker.client, "cashu.beat.retry_in_flight")

    # our claim stands: a sweep that took it would have left its own lease, then none
    assert claimed_until(saga_context, melt["id"]) == held
    assert state(saga_context, melt["id"]) == "executing"
    with saga_context.uow() as session:  # the other host is done: the sweeps may settle it
        release_claims(session, [uuid.UUID(melt["id"])])
