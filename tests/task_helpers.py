"""What the Celery-task tests (tests/test_tasks_*.py) share: calling the real worker,
balances, our database and the mint's view of our proofs, a worker killed mid-request.

Their fixtures (wallet, alice, bob, mint_url, proxy) are in tests/conftest.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import pytest
import redis
from celery import Celery
from slow_proxy import SlowProxy
from sqlalchemy import select

from models import Operation, ProofState, StoredProof
from nuts.client import MintClient
from nuts.models import ProofSpentState
from sagas.engine import SagaContext
from tasks.config import get_settings

TIMEOUT = 60
T = TypeVar("T")


def new_wallet_name(prefix: str) -> str:
    """A wallet name of its own, so balances never mix between tests."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --- calling the worker ----------------------------------------------------------------------


def call(client: Celery, name: str, **kwargs: object):
    return client.send_task(name, kwargs=kwargs).get(timeout=TIMEOUT)


def raises(client: Celery, name: str, **kwargs: object) -> Exception:
    """The typed error the task raised (its class name is what a caller matches on)."""
    with pytest.raises(Exception) as caught:
        call(client, name, **kwargs)
    return caught.value


def take_queued(broker_url: str, queue: str, task: str, want: int, timeout: float = 15.0) -> list:
    """The kwargs of up to `want` messages for `task` in `queue`, a queue no test worker
    consumes (the notify queue), taken off it within `timeout`; on either broker."""
    from kombu import Connection

    found: list = []
    deadline = time.monotonic() + timeout
    with Connection(broker_url) as connection:
        waiting = connection.SimpleQueue(queue)
        try:
            while len(found) < want and time.monotonic() < deadline:
                try:
                    message = waiting.get(timeout=0.5)
                except waiting.Empty:
                    continue
                message.ack()
                if message.headers.get("task") == task:
                    found.append(message.decode()[1])
        finally:
            waiting.close()
    return found


def outcomes_at_once(client: Celery, task: str, operation_id: str, times: int = 2) -> list[str]:
    """Send `task` for one operation `times` times at once: each one's resulting state, or
    the class name of the error it raised."""
    results = [client.send_task(task, kwargs={"operation_id": operation_id}) for _ in range(times)]
    outcomes = []
    for result in results:
        try:
            outcomes.append(result.get(timeout=TIMEOUT)["state"])
        except Exception as exc:
            outcomes.append(type(exc).__name__)
    return outcomes


def wait_until(predicate: Callable[[], object], timeout: float = 60.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def fund(client: Celery, wallet: str, mint_url: str, amount: int, **kwargs: object) -> dict:
    """Mint `amount` into the wallet through the mint tasks; the finalized operation."""
    op = call(
        client, "cashu.mint.prepare", wallet=wallet, mint_url=mint_url, amount=amount, **kwargs
    )
    assert op["state"] == "pending", op
    op = call(client, "cashu.mint.execute", operation_id=op["id"])
    assert op["state"] == "finalized", op
    return op


def balance(client: Celery, wallet: str) -> dict:
    return call(client, "cashu.wallet.balance", wallet=wallet)


def assert_balance(
    client: Celery,
    wallet: str,
    *,
    spendable: int,
    pending: int = 0,
    reserved: int = 0,
    mint_url: str | None = None,
) -> None:
    """The wallet's balance, exact to the sat; with `mint_url`, all that is spendable is
    spendable at that mint."""
    bal = balance(client, wallet)
    assert (bal["spendable"], bal["pending"], bal["reserved"]) == (spendable, pending, reserved), (
        bal
    )
    assert bal["total"] == spendable + pending + reserved, bal
    if mint_url is not None and spendable:
        assert bal["by_mint"][mint_url]["spendable"] == spendable, bal


def op_view(client: Celery, operation_id: str) -> dict:
    return call(client, "cashu.ops.get", operation_id=operation_id)


def op_state(client: Celery, operation_id: str) -> str:
    return op_view(client, operation_id)["state"]


# --- reading our database and the mint -------------------------------------------------------


def db_read(ctx: SagaContext, operation_id: str, read: Callable[[Operation], T]) -> T:
    """`read` of the operation as the database itself has it (no worker needed)."""
    with ctx.uow() as session:
        op = session.get(Operation, uuid.UUID(operation_id))
        assert op is not None
        return read(op)


def db_state(ctx: SagaContext, operation_id: str) -> str:
    return db_read(ctx, operation_id, lambda op: op.state)


def op_data(ctx: SagaContext, operation_id: str) -> dict:
    return db_read(ctx, operation_id, lambda op: dict(op.data))


def mint_states(ctx: SagaContext, mint_url: str, **where: object) -> dict[str, ProofSpentState]:
    """What the mint says of the proofs matching `where` (StoredProof columns), by Y."""
    with ctx.uow() as session:
        stmt = select(StoredProof.y)
        for column, value in where.items():
            stmt = stmt.where(getattr(StoredProof, column) == value)
        ys = list(session.scalars(stmt))
    assert ys, where
    with MintClient(mint_url) as mint:
        return {s.Y: s.state for s in mint.checkstate(ys)}


def assert_mint_agrees(ctx: SagaContext, mint_url: str, wallet: str) -> None:
    """Every proof we hold unspent (or reserved, or pending) is unspent at the mint."""
    for state in (ProofState.UNSPENT, ProofState.RESERVED, ProofState.PENDING):
        with ctx.uow() as session:
            held = session.scalar(
                select(StoredProof.id)
                .where(StoredProof.wallet == wallet, StoredProof.state == state)
                .limit(1)
            )
        if held is not None:
            states = mint_states(ctx, mint_url, wallet=wallet, state=state)
            assert set(states.values()) == {ProofSpentState.UNSPENT}, (state, states)


# --- a worker SIGKILLed while the mint's answer is held back ----------------------------------


def kill_worker_while_held(
    celery_worker, client: Celery, proxy: SlowProxy, task: str, operation_id: str, path: str
) -> None:
    """Send `task`, let the mint act on `path`, and SIGKILL the worker before it hears back."""
    proxy.hold(path, 20.0)
    client.send_task(task, kwargs={"operation_id": operation_id})
    assert proxy.answered.wait(TIMEOUT), f"{path} never reached the mint"
    celery_worker.kill_hard()
    proxy.release()
    assert proxy.held == [path]


def wait_for_lock_to_lapse(redis_url: str, operation_id: str) -> None:
    """A SIGKILLed worker's operation lock is a lease nobody renews any more: it lapses by
    itself within one lease (CASHU_LOCK_LEASE_SECONDS, 10 s)."""
    key = f"cashu:lock:op:{operation_id}"
    conn = redis.Redis.from_url(redis_url)
    left = conn.pttl(key) / 1000  # negative once it is gone
    assert left <= get_settings().lock_lease_seconds, left
    assert wait_until(lambda: not conn.exists(key), timeout=max(left, 0) + 2, every=0.2)


def restart_killed_worker(celery_worker, client: Celery, redis_url: str, operation_id: str) -> None:
    """Restart the worker; the killed worker's lease lapses by itself, and then recovery
    can settle its operation."""
    celery_worker.restart()
    wait_for_lock_to_lapse(redis_url, operation_id)


def execute_until_pending(client: Celery, **operation: str) -> dict:
    """cashu.melt.execute for a caller that does not wait (wait=False): the operation as it
    stands at once, then read until its payment is pending (bounded)."""
    started = call(client, "cashu.melt.execute", **operation, wait=False)
    assert started["state"] == "executing", started
    view = started
    for _ in range(100):
        view = op_view(client, started["id"])
        if view["state"] != "executing":
            break
        time.sleep(0.1)
    return view


def keep_of(data: dict) -> int:
    """What a pre-swap gave back to the wallet (0 without one)."""
    if not data["needs_swap"]:
        return 0
    return data["input_amount"] - data["swap_fee"] - data["melt_input"]
