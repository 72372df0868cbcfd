"""The recovery sweep against a real mint: a mint that does not answer costs one request."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from mint_harness import RunningMint
from saga_helpers import bal, fund, losing, no_lock, register_mint, with_transport
from sqlalchemy import select

from models import Operation
from sagas import send as send_saga
from sagas.engine import SagaContext
from sagas.recovery import run_recovery

pytestmark = pytest.mark.mint


class Refusing(httpx.BaseTransport):
    """Every mint down: every connection refused, the attempts counted per mint."""

    def __init__(self) -> None:
        self.attempts: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts[f"{request.url.scheme}://{request.url.netloc.decode()}"] += 1
        raise httpx.ConnectError("connection refused", request=request)


def states_of(ctx: SagaContext, ops: list[dict]) -> list[str]:
    with ctx.uow() as session:
        return list(
            session.scalars(
                select(Operation.state).where(Operation.id.in_([op["id"] for op in ops]))
            )
        )


@pytest.fixture
def mint_url(saga_context: SagaContext, test_mint: RunningMint) -> str:
    return register_mint(saga_context, test_mint.url)


def _stuck_sends(ctx: SagaContext, wallet: str, url: str, count: int) -> list[dict]:
    """`count` sends whose swap answer was lost: executing, their inputs reserved."""
    fund(ctx, wallet, url, 100 * count)
    stuck = []
    for _ in range(count):
        op = send_saga.prepare(ctx, wallet, url, 30, include_receiver_fee=True)
        stuck.append(send_saga.execute(losing(ctx, "/v1/swap"), op["id"]))
    assert {op["state"] for op in stuck} == {"executing"}
    return stuck


def test_a_sweep_sends_one_request_to_a_mint_that_does_not_answer_and_skips_the_rest(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    stuck = _stuck_sends(saga_context, wallet_id, mint_url, 3)
    down = Refusing()

    counts = run_recovery(
        with_transport(saga_context, down), lock=no_lock, kinds={"send"}, states={"executing"}
    )

    assert down.attempts[mint_url] == 1
    assert counts["skipped"] >= 2
    # a replay refused proves nothing: nothing released
    assert states_of(saga_context, stuck) == ["executing"] * 3
    assert bal(saga_context, wallet_id)["reserved"] == sum(op["input_amount"] for op in stuck)


def test_the_next_sweep_settles_every_operation_once_the_mint_answers_again(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    stuck = _stuck_sends(saga_context, wallet_id, mint_url, 3)
    run_recovery(
        with_transport(saga_context, Refusing()), lock=no_lock, kinds={"send"}, states={"executing"}
    )

    run_recovery(saga_context, lock=no_lock, kinds={"send"}, states={"executing"})

    assert states_of(saga_context, stuck) == ["pending"] * 3  # the tokens are out
    fees = sum(op["fee"] for op in stuck)
    sent = sum(op["send_amount"] for op in stuck)
    assert bal(saga_context, wallet_id)["total"] == 300 - fees
    assert bal(saga_context, wallet_id)["pending"] == sent
    assert bal(saga_context, wallet_id)["reserved"] == 0


def test_a_sweep_cancels_a_prepared_send_only_once_older_than_the_contexts_prepared_age(
    saga_context: SagaContext, wallet_id: str, mint_url: str
) -> None:
    from dataclasses import replace
    from datetime import timedelta

    fund(saga_context, wallet_id, mint_url, 64)
    prepared = send_saga.prepare(saga_context, wallet_id, mint_url, 8)
    patient = replace(saga_context, prepared_max_age=timedelta(hours=1))
    run_recovery(patient, lock=no_lock, kinds={"send"}, states={"prepared"})
    assert states_of(saga_context, [prepared]) == ["prepared"]
    assert bal(saga_context, wallet_id)["reserved"] == prepared["input_amount"]

    stale = replace(saga_context, prepared_max_age=timedelta(0))
    run_recovery(stale, lock=no_lock, kinds={"send"}, states={"prepared"})
    assert states_of(saga_context, [prepared]) == ["rolled_back"]
    assert bal(saga_context, wallet_id)["spendable"] == 64
    assert bal(saga_context, wallet_id)["reserved"] == 0
