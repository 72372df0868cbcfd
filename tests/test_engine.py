"""The shared saga mechanics on a real Postgres: counters, compare-and-set, events, reservation."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Event, Operation, ProofState, StoredProof
from nuts.models import Proof
from nuts.outputs import proof_y
from sagas import mint as mint_saga  # noqa: F401  (registers the mint SagaSpec)
from sagas.counters import allocate_counters, next_counter, raise_counter_to
from sagas.engine import SagaContext, get_operation, transition
from sagas.errors import InsufficientBalanceError, InvalidStateError, StaleOperationError
from sagas.proofs import (
    balance,
    release_proofs,
    reserve_proofs,
    select_and_reserve,
    set_proof_state,
    store_proofs,
)

MINT = "http://127.0.0.1:1"
KEYSET = "00" * 8


def run_in_threads(count: int, target: Callable[[int], object]) -> list[object]:
    results: list[object] = [None] * count
    barrier = threading.Barrier(count)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except Exception as exc:  # collected and asserted on by the test
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def new_operation(ctx: SagaContext, wallet: str, state: str = "pending") -> uuid.UUID:
    op_id = uuid.uuid4()
    with ctx.uow() as session:
        session.add(
            Operation(
                id=op_id,
                wallet=wallet,
                kind="mint",
                state=state,
                mint_url=MINT,
                unit="sat",
                amount=10,
                data={},
            )
        )
    return op_id


def reserve(
    session: Session, wallet: str, op_id: uuid.UUID, amount: int, fees: dict[str, int]
) -> list[Proof]:
    return select_and_reserve(
        session,
        wallet=wallet,
        mint_url=MINT,
        unit="sat",
        amount=amount,
        fee_ppk=fees,
        operation_id=op_id,
    )


def fake_proofs(amounts: list[int]) -> list[Proof]:
    return [
        Proof(id=KEYSET, amount=a, secret=os.urandom(16).hex(), C="02" + "11" * 32) for a in amounts
    ]


def give_proofs(ctx: SagaContext, wallet: str, amounts: list[int]) -> None:
    proofs = fake_proofs(amounts)
    with ctx.uow() as session:
        store_proofs(session, proofs, wallet=wallet, mint_url=MINT, unit="sat", created_by=None)


def test_twenty_concurrent_counter_allocations_get_disjoint_ranges(
    saga_context: SagaContext, wallet_id: str
) -> None:
    def allocate(i: int) -> range:
        size = i + 1
        with saga_context.uow() as session:
            first = allocate_counters(session, wallet_id, "01ab", size)
        return range(first, first + size)

    ranges = run_in_threads(20, allocate)

    assert all(isinstance(r, range) for r in ranges)
    used = [c for r in ranges for c in r]  # type: ignore[union-attr]
    assert len(used) == len(set(used)) == sum(range(1, 21))
    with saga_context.uow() as session:
        assert next_counter(session, wallet_id, "01ab") == max(used) + 1


def test_raising_a_counter_never_lowers_it(saga_context: SagaContext, wallet_id: str) -> None:
    with saga_context.uow() as session:
        allocate_counters(session, wallet_id, "01cd", 50)
        assert raise_counter_to(session, wallet_id, "01cd", 10) == 50
        assert raise_counter_to(session, wallet_id, "01cd", 80) == 80


def test_of_two_sessions_racing_one_transition_exactly_one_wins(
    saga_context: SagaContext, wallet_id: str
) -> None:
    op_id = new_operation(saga_context, wallet_id)

    def move(i: int) -> str:
        with saga_context.uow() as session:
            op = get_operation(session, op_id)
            barrier_hits.wait()  # both have read version 0 before either writes
            transition(session, op, "executing", data={"winner": i})
        return "won"

    barrier_hits = threading.Barrier(2)
    results = run_in_threads(2, move)

    assert sorted(map(type, results), key=str) == sorted([str, StaleOperationError], key=str)
    with saga_context.uow() as session:
        op = get_operation(session, op_id)
        assert (op.state, op.version) == ("executing", 1)
        events = session.scalars(select(Event.type).where(Event.operation_id == op_id)).all()
    assert events == ["mint-op:executing"]


def test_an_illegal_transition_raises_and_changes_nothing(
    saga_context: SagaContext, wallet_id: str
) -> None:
    op_id = new_operation(saga_context, wallet_id, state="pending")

    with pytest.raises(InvalidStateError), saga_context.uow() as session:
        transition(session, get_operation(session, op_id), "finalized")

    with saga_context.uow() as session:
        assert get_operation(session, op_id).state == "pending"


def test_a_rolled_back_transition_leaves_no_event(
    saga_context: SagaContext, wallet_id: str
) -> None:
    op_id = new_operation(saga_context, wallet_id)

    with pytest.raises(RuntimeError), saga_context.uow() as session:
        transition(session, get_operation(session, op_id), "executing")
        raise RuntimeError("crash before commit")

    with saga_context.uow() as session:
        assert get_operation(session, op_id).state == "pending"
        assert session.scalar(select(func.count()).where(Event.operation_id == op_id)) == 0


def test_a_transition_is_its_compare_and_set_and_one_statement_for_audit_and_event(
    saga_context: SagaContext, wallet_id: str
) -> None:
    from sqlalchemy import event

    from models import AuditRecord

    op_id = new_operation(saga_context, wallet_id)
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    with saga_context.uow() as session:
        op = get_operation(session, op_id)
        engine = session.get_bind()
        event.listen(engine, "before_cursor_execute", count)
        try:
            transition(session, op, "executing")  # evented: an event row besides the audit
        finally:
            event.remove(engine, "before_cursor_execute", count)

    assert len(statements) == 2, statements
    with saga_context.uow() as session:
        audited = session.scalars(select(AuditRecord).where(AuditRecord.operation_id == op_id))
        assert [(a.from_state, a.to_state, a.version) for a in audited] == [
            ("pending", "executing", 1)
        ]
        events = session.scalars(select(Event).where(Event.operation_id == op_id)).all()
        assert [(e.type, e.payload["state"], e.payload["id"]) for e in events] == [
            ("mint-op:executing", "executing", str(op_id))
        ]


def test_a_transition_writes_its_columns_and_data_and_bumps_the_version(
    saga_context: SagaContext, wallet_id: str
) -> None:
    op_id = new_operation(saga_context, wallet_id)

    with saga_context.uow() as session:
        op = get_operation(session, op_id)
        transition(session, op, "executing", quote_id="q-1", data={"outputs": [1]})
        assert (op.state, op.version, op.quote_id) == ("executing", 1, "q-1")

    with saga_context.uow() as session:
        op = get_operation(session, op_id)
        assert (op.state, op.version, op.quote_id, op.data) == (
            "executing",
            1,
            "q-1",
            {"outputs": [1]},
        )


def test_a_transition_naming_no_column_raises_and_changes_nothing(
    saga_context: SagaContext, wallet_id: str
) -> None:
    op_id = new_operation(saga_context, wallet_id)

    with pytest.raises(TypeError, match="quote_idd"), saga_context.uow() as session:
        transition(session, get_operation(session, op_id), "executing", quote_idd="q-1")

    with saga_context.uow() as session:
        op = get_operation(session, op_id)
        assert (op.state, op.version, op.quote_id) == ("pending", 0, None)


def test_reservation_takes_a_covering_set_and_release_returns_it(
    saga_context: SagaContext, wallet_id: str
) -> None:
    give_proofs(saga_context, wallet_id, [1, 2, 4, 8, 16])
    op_id = new_operation(saga_context, wallet_id)

    with saga_context.uow() as session:
        taken = reserve(session, wallet_id, op_id, 11, {KEYSET: 100})
        assert sum(p.amount for p in taken) == 12  # 11 plus 1 sat of input fee, exactly
        assert balance(session, wallet_id)["reserved"] == 12

    with saga_context.uow() as session:
        assert release_proofs(session, op_id) == len(taken)
        assert balance(session, wallet_id)["spendable"] == 31


def test_reservation_beyond_the_balance_raises_and_reserves_nothing(
    saga_context: SagaContext, wallet_id: str
) -> None:
    give_proofs(saga_context, wallet_id, [4, 8])
    op_id = new_operation(saga_context, wallet_id)

    with pytest.raises(InsufficientBalanceError), saga_context.uow() as session:
        reserve(session, wallet_id, op_id, 12, {KEYSET: 100})

    with saga_context.uow() as session:
        assert balance(session, wallet_id) | {"by_mint": None} == {
            "spendable": 12,
            "reserved": 0,
            "pending": 0,
            "total": 12,
            "unit": "sat",
            "by_mint": None,
        }


def test_a_reservation_that_loses_one_row_takes_none_of_them(
    saga_context: SagaContext, wallet_id: str
) -> None:
    give_proofs(saga_context, wallet_id, [1, 2, 4])
    first, second = new_operation(saga_context, wallet_id), new_operation(saga_context, wallet_id)
    with saga_context.uow() as session:
        by_amount = (
            select(StoredProof.id)
            .where(StoredProof.wallet == wallet_id)
            .order_by(StoredProof.amount)
        )
        row_ids = list(session.scalars(by_amount))
        assert reserve_proofs(session, row_ids[:1], first) is not None

    with saga_context.uow() as session:
        assert reserve_proofs(session, row_ids, second) is None
        held = session.execute(
            select(StoredProof.used_by).where(StoredProof.wallet == wallet_id)
        ).scalars()
        assert sorted(str(h) for h in held) == sorted([str(first), "None", "None"])

    with saga_context.uow() as session:
        assert balance(session, wallet_id) | {"by_mint": None} == {
            "spendable": 6,
            "reserved": 1,
            "pending": 0,
            "total": 7,
            "unit": "sat",
            "by_mint": None,
        }


def test_storing_proofs_again_adds_only_the_new_secrets(
    saga_context: SagaContext, wallet_id: str
) -> None:
    proofs = fake_proofs([1, 2, 4])
    with saga_context.uow() as session:
        assert (
            store_proofs(
                session, proofs[:2], wallet=wallet_id, mint_url=MINT, unit="sat", created_by=None
            )
            == 2
        )
    with saga_context.uow() as session:
        assert (
            store_proofs(
                session, proofs, wallet=wallet_id, mint_url=MINT, unit="sat", created_by=None
            )
            == 1
        )  # a re-run's proofs are left as they are
        assert balance(session, wallet_id)["spendable"] == 7
        stored = session.execute(
            select(StoredProof.secret, StoredProof.y).where(StoredProof.wallet == wallet_id)
        )
        assert dict(stored.all()) == {p.secret: proof_y(p) for p in proofs}


def test_set_proof_state_with_ys_moves_only_those_inputs(
    saga_context: SagaContext, wallet_id: str
) -> None:
    give_proofs(saga_context, wallet_id, [1, 2, 4])
    op_id = new_operation(saga_context, wallet_id)
    with saga_context.uow() as session:
        taken = reserve(session, wallet_id, op_id, 7, {KEYSET: 0})
        one = next(p for p in taken if p.amount == 2)
        assert set_proof_state(session, op_id, ProofState.SPENT, ys=[proof_y(one)]) == 1
        assert set_proof_state(session, op_id, ProofState.PENDING) == 2  # spent stays spent

    with saga_context.uow() as session:
        rows = session.execute(
            select(StoredProof.amount, StoredProof.state, StoredProof.spent_by).where(
                StoredProof.wallet == wallet_id
            )
        )
        assert sorted(tuple(row) for row in rows) == [
            (1, ProofState.PENDING, None),
            (2, ProofState.SPENT, op_id),
            (4, ProofState.PENDING, None),
        ]
        assert balance(session, wallet_id) | {"by_mint": None} == {
            "spendable": 0,
            "reserved": 0,
            "pending": 5,
            "total": 5,
            "unit": "sat",
            "by_mint": None,
        }


def test_concurrent_reservations_never_share_a_proof(
    saga_context: SagaContext, wallet_id: str
) -> None:
    give_proofs(saga_context, wallet_id, [1] * 40)
    op_ids = [new_operation(saga_context, wallet_id) for _ in range(12)]

    def reserve_three(i: int) -> int:
        with saga_context.uow() as session:
            taken = reserve(session, wallet_id, op_ids[i], 3, {})
        return len(taken)

    results = run_in_threads(12, reserve_three)

    # 12 x 3 of 40: every one is served (a reservation that lost a race chooses again)
    assert results == [3] * 12, results
    with saga_context.uow() as session:
        holders = session.execute(
            select(StoredProof.used_by, func.count())
            .where(StoredProof.wallet == wallet_id, StoredProof.state == ProofState.RESERVED)
            .group_by(StoredProof.used_by)
        ).all()
        assert all(count == 3 for _, count in holders)
        assert len(holders) == 12
        assert balance(session, wallet_id)["total"] == 40
