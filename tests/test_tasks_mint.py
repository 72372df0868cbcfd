"""The mint saga through the Celery tasks: a real worker, a real mint, Postgres and Redis.

Every test ends on balances: ours (cashu.wallet.balance, the proofs table) and,
where proofs were made, the mint's (checkstate says UNSPENT).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from celery import Celery
from sqlalchemy import select
from task_helpers import (
    TIMEOUT,
    assert_balance,
    call,
    fund,
    op_state,
    outcomes_at_once,
    raises,
    take_queued,
)

from models import ProofState, StoredProof
from nuts.client import MintClient
from nuts.models import ProofSpentState
from sagas.engine import SagaContext

pytestmark = pytest.mark.mint
REPO = Path(__file__).resolve().parent.parent


def assert_mint_says_unspent(ctx: SagaContext, wallet: str, mint_url: str, amount: int) -> None:
    with ctx.uow() as session:
        rows = session.execute(
            select(StoredProof.y, StoredProof.amount, StoredProof.state).where(
                StoredProof.wallet == wallet
            )
        ).all()
    assert sum(a for _, a, _ in rows) == amount
    assert {s for _, _, s in rows} == {ProofState.UNSPENT}
    with MintClient(mint_url) as mint:
        states = mint.checkstate([y for y, _, _ in rows])
    assert [s.Y for s in states] == [y for y, _, _ in rows]
    assert {s.state for s in states} == {ProofSpentState.UNSPENT}


def stream_events(redis_url: str, operation_id: str, want: int, timeout: float = 15.0) -> list:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    deadline = time.monotonic() + timeout
    while True:
        events = [
            fields
            for _, fields in r.xrange("cashu:events")
            if fields["operation_id"] == operation_id
        ]
        if len(events) >= want or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


# --- tests -----------------------------------------------------------------------------------


def test_mint_flow_through_tasks(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext, redis_url: str
) -> None:
    assert_balance(celery_client, wallet, spendable=0, mint_url=mint_url)
    listed = call(celery_client, "cashu.mints.list")
    assert mint_url in [m["url"] for m in listed["mints"]]

    op = call(celery_client, "cashu.mint.prepare", wallet=wallet, mint_url=mint_url, amount=1000)
    assert op["state"] == "pending"
    assert op["kind"] == "mint" and op["wallet"] == wallet and op["amount"] == 1000
    assert op["request"].startswith("lnbc") and op["quote_id"]
    assert op["error"] is None

    done = call(celery_client, "cashu.mint.execute", operation_id=op["id"])
    assert done["state"] == "finalized" and done["id"] == op["id"]
    assert done["minted_amount"] == 1000 and done["finalized_at"]

    assert call(celery_client, "cashu.ops.get", operation_id=op["id"]) == done
    assert call(celery_client, "cashu.ops.get", operation_id=str(uuid.uuid4())) is None
    assert call(celery_client, "cashu.ops.get", operation_id="not-an-id") is None
    listed = call(celery_client, "cashu.ops.list", wallet=wallet)
    assert [o["id"] for o in listed["operations"]] == [op["id"]]
    assert call(celery_client, "cashu.ops.list", wallet=wallet, kind="melt")["operations"] == []
    assert (
        call(celery_client, "cashu.ops.list", wallet=wallet, states=["pending"])["operations"] == []
    )

    events = stream_events(redis_url, op["id"], want=3)
    assert [e["type"] for e in events] == [
        "mint-op:pending",
        "mint-op:executing",
        "mint-op:finalized",
    ]
    assert json.loads(events[-1]["payload"])["state"] == "finalized"
    assert [int(e["id"]) for e in events] == sorted(int(e["id"]) for e in events)

    assert_balance(celery_client, wallet, spendable=1000, mint_url=mint_url)
    assert_mint_says_unspent(saga_context, wallet, mint_url, 1000)


def test_ops_list_newest_first_and_paged(celery_client: Celery, mint_url: str, wallet: str) -> None:
    first = fund(celery_client, wallet, mint_url, 8)
    second = call(celery_client, "cashu.mint.prepare", wallet=wallet, mint_url=mint_url, amount=16)
    ops = call(celery_client, "cashu.ops.list", wallet=wallet)["operations"]
    assert [o["id"] for o in ops] == [second["id"], first["id"]]
    page = call(celery_client, "cashu.ops.list", wallet=wallet, limit=1, offset=1)
    assert [o["id"] for o in page["operations"]] == [first["id"]]
    pending = call(celery_client, "cashu.ops.list", wallet=wallet, states=["pending"])
    assert [o["id"] for o in pending["operations"]] == [second["id"]]
    assert_balance(celery_client, wallet, spendable=8, mint_url=mint_url)


def test_untrusted_mint_is_a_typed_error(celery_client: Celery, mint_url: str, wallet: str) -> None:
    view = call(celery_client, "cashu.mints.set_trusted", url=mint_url, trusted=False)
    assert view["trusted"] is False
    try:
        exc = raises(
            celery_client, "cashu.mint.prepare", wallet=wallet, mint_url=mint_url, amount=10
        )
    finally:
        call(celery_client, "cashu.mints.set_trusted", url=mint_url, trusted=True)
    # This process has sagas.errors imported, so Celery rebuilds the real class.
    assert type(exc).__name__ == "UntrustedMintError"
    assert type(exc).__module__ == "sagas.errors"
    assert str(exc) == f"mint {mint_url} is not trusted; it will not be contacted"
    assert exc.code == "UNTRUSTED_MINT"  # type: ignore[attr-defined]
    assert call(celery_client, "cashu.ops.list", wallet=wallet)["operations"] == []
    assert_balance(celery_client, wallet, spendable=0, mint_url=mint_url)


CLIENT_WITHOUT_OUR_CODE = """
import json, sys
from celery import Celery
app = Celery("outsider", broker=sys.argv[1], backend=sys.argv[2])
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
result = app.send_task("cashu.mint.prepare", queue="cashu",
                       kwargs={"wallet": sys.argv[3], "mint_url": sys.argv[4], "amount": 10})
try:
    result.get(timeout=60)
    out = {"raised": None}
except Exception as exc:
    out = {"raised": type(exc).__name__, "module": type(exc).__module__, "str": str(exc),
           "args": list(exc.args), "result_state": result.state}
out["ours_imported"] = sorted(m for m in ("nuts", "sagas", "models", "tasks") if m in sys.modules)
print(json.dumps(out))
"""


def test_error_seen_by_a_client_without_our_code(
    celery_client: Celery, broker_url: str, redis_url: str, mint_url: str, wallet: str
) -> None:
    call(celery_client, "cashu.mints.set_trusted", url=mint_url, trusted=False)
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                CLIENT_WITHOUT_OUR_CODE,
                broker_url,
                redis_url,
                wallet,
                mint_url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
            cwd="/",
        )
    finally:
        call(celery_client, "cashu.mints.set_trusted", url=mint_url, trusted=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {
        "raised": "UntrustedMintError",
        "module": "celery.exceptions",  # a class Celery makes up with the original name
        "str": f"mint {mint_url} is not trusted; it will not be contacted",
        "args": [f"mint {mint_url} is not trusted; it will not be contacted"],
        "result_state": "FAILURE",
        "ours_imported": [],
    }
    assert_balance(celery_client, wallet, spendable=0, mint_url=mint_url)


def test_concurrent_executes_issue_once(
    celery_client: Celery, mint_url: str, wallet: str, saga_context: SagaContext
) -> None:
    op = call(celery_client, "cashu.mint.prepare", wallet=wallet, mint_url=mint_url, amount=1000)
    outcomes = outcomes_at_once(celery_client, "cashu.mint.execute", op["id"])
    assert "finalized" in outcomes, outcomes
    # an execute that did not finalize failed with OperationInProgressError, nothing else
    assert set(outcomes) <= {"finalized", "OperationInProgressError"}, outcomes
    assert op_state(celery_client, op["id"]) == "finalized"
    assert_balance(celery_client, wallet, spendable=1000, mint_url=mint_url)
    assert_mint_says_unspent(saga_context, wallet, mint_url, 1000)


def test_lock_held_means_operation_in_progress(
    celery_client: Celery, mint_url: str, wallet: str, redis_url: str
) -> None:
    op = call(celery_client, "cashu.mint.prepare", wallet=wallet, mint_url=mint_url, amount=64)
    r = redis.Redis.from_url(redis_url)
    lock = r.lock(f"cashu:lock:op:{op['id']}", timeout=60)
    assert lock.acquire(blocking=False)
    try:
        err = raises(celery_client, "cashu.mint.execute", operation_id=op["id"])
        assert type(err).__name__ == "OperationInProgressError"
        assert op_state(celery_client, op["id"]) == "pending"
    finally:
        lock.release()
    assert call(celery_client, "cashu.mint.refresh", operation_id=op["id"])["state"] == "finalized"
    assert_balance(celery_client, wallet, spendable=64, mint_url=mint_url)


def test_recovery_run_returns_counts_and_issues_paid_quotes(
    celery_client: Celery, mint_url: str, wallet: str
) -> None:
    op = call(celery_client, "cashu.mint.prepare", wallet=wallet, mint_url=mint_url, amount=32)
    counts = {}
    deadline = time.monotonic() + 90  # a claim lease from another sweep may hold it a while
    while time.monotonic() < deadline:
        counts = call(celery_client, "cashu.recovery.run")
        assert set(counts) >= {"recovered", "rolled_back", "still_pending", "failed"}
        assert all(isinstance(n, int) and n >= 0 for n in counts.values())
        if op_state(celery_client, op["id"]) == "finalized":
            break
        time.sleep(1)
    assert op_state(celery_client, op["id"]) == "finalized"
    polled = call(celery_client, "cashu.beat.poll_mint_quotes")
    assert set(polled) >= {"recovered", "rolled_back", "still_pending", "failed"}
    assert_balance(celery_client, wallet, spendable=32, mint_url=mint_url)


def test_notify_task_receives_each_event(
    celery_client: Celery, mint_url: str, wallet: str, broker_url: str
) -> None:
    notify = f"test.notify.{uuid.uuid4().hex[:8]}"
    op = fund(celery_client, wallet, mint_url, 4, notify_task=notify)
    # the notify queue, "celery", is one no test worker consumes
    seen = [kwargs["event"] for kwargs in take_queued(broker_url, "celery", notify, want=3)]
    seen.sort(key=lambda e: e["id"])
    assert [e["type"] for e in seen] == [
        "mint-op:pending",
        "mint-op:executing",
        "mint-op:finalized",
    ]
    assert {e["operation_id"] for e in seen} == {op["id"]}
    assert seen[-1]["payload"]["state"] == "finalized"
    assert_balance(celery_client, wallet, spendable=4, mint_url=mint_url)


def test_bad_arguments_are_typed_errors(celery_client: Celery, mint_url: str, wallet: str) -> None:
    for amount, unit in ((0, "sat"), (-5, "sat"), (10, "doge")):
        err = raises(
            celery_client,
            "cashu.mint.prepare",
            wallet=wallet,
            mint_url=mint_url,
            amount=amount,
            unit=unit,
        )
        assert type(err).__name__ in {"InvalidAmountError", "UnsupportedUnitError"}
    err = raises(celery_client, "cashu.mint.execute", operation_id=str(uuid.uuid4()))
    assert type(err).__name__ == "OperationNotFoundError"
    err = raises(
        celery_client, "cashu.mint.prepare", wallet=wallet, mint_url="http://127.0.0.1:9", amount=1
    )
    assert type(err).__name__ == "UnknownMintError"
    assert_balance(celery_client, wallet, spendable=0, mint_url=mint_url)


def test_worker_killed_hard_then_restarted(
    celery_worker, celery_client: Celery, mint_url: str, wallet: str
) -> None:
    fund(celery_client, wallet, mint_url, 128)
    celery_worker.kill_hard()
    assert not celery_worker.running
    # Sent while no worker runs: the message waits in the queue for the next worker.
    waiting = celery_client.send_task(
        "cashu.mint.prepare", kwargs={"wallet": wallet, "mint_url": mint_url, "amount": 256}
    )
    celery_worker.restart()
    op = waiting.get(timeout=TIMEOUT)
    assert op["state"] == "pending"
    assert call(celery_client, "cashu.mint.execute", operation_id=op["id"])["state"] == "finalized"
    assert_balance(celery_client, wallet, spendable=128 + 256, mint_url=mint_url)
