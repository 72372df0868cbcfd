"""The saga engine shared by the four operations.

Each saga module declares a SagaSpec (its states, legal transitions, events
and recovery rules) and registers it here. Every state change goes through
`transition`: a compare-and-set on (state, version) that writes the event row
in the same transaction, so an event exists exactly when its state committed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Table, Uuid, bindparam, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from models import Event, Mint, Operation
from nuts.client import MintClient
from nuts.errors import CashuError
from sagas.errors import (
    InvalidAmountError,
    InvalidRequestError,
    InvalidStateError,
    OperationNotFoundError,
    SagaError,
    Severity,
    StaleOperationError,
)

UnitOfWork = Callable[[], AbstractContextManager[Session]]
MAX_AMOUNT = 2_100_000_000_000_000  # every sat there will ever be
OPERATIONS = cast(Table, Operation.__table__)
EVENTS = cast(Table, Event.__table__)

# Statements that run on every step are built once, at import, here and in the other
# sagas modules: building one costs more Python than Postgres takes to run it. The
# compare-and-set and the event insert take their SET and VALUES columns from the
# parameters they are executed with.
# Every time written or compared is the database's (now()), never a worker's clock: a host
# whose clock runs ahead must not steal claims or see operations as older than they are.
OPERATION_BY_ID = (
    select(Operation)
    .where(Operation.id == bindparam("operation_id"))
    .execution_options(populate_existing=True)
)
OPERATION_BY_ID_LOCKED = OPERATION_BY_ID.with_for_update()
COMPARE_AND_SET = (
    update(OPERATIONS)
    .where(
        OPERATIONS.c.id == bindparam("cas_id"),
        OPERATIONS.c.state == bindparam("cas_state"),
        OPERATIONS.c.version == bindparam("cas_version"),
    )
    .values(updated_at=func.now())
    .returning(*OPERATIONS.c)
)
COMPARE_AND_SET_FINAL = COMPARE_AND_SET.values(finalized_at=func.now())  # into a terminal state
INSERT_EVENT = insert(EVENTS)
# The audit record of a transition: what the operation's proofs are now, counted by state,
# its inputs (`in:`) apart from what it brought in (`out:`). One statement, index lookups.
_AUDIT_SQL = """
    INSERT INTO operation_audit
        (operation_id, kind, from_state, to_state, version, proofs, fee, error_code)
    SELECT :operation_id, :kind, :from_state, :to_state, :version,
        coalesce((
            SELECT jsonb_object_agg(moved.key, jsonb_build_array(moved.n, moved.total))
            FROM (
                SELECT CASE WHEN used_by = :operation_id THEN 'in:' ELSE 'out:' END || state
                    AS key, count(*) AS n, sum(amount) AS total
                FROM proofs
                WHERE used_by = :operation_id OR created_by = :operation_id
                GROUP BY 1
            ) AS moved
        ), '{}'::jsonb),
        :fee, :error_code
"""
INSERT_AUDIT = text(_AUDIT_SQL).bindparams(bindparam("operation_id", type_=Uuid))
# A transition into an evented state writes its audit record and its event in one
# statement: one round trip to Postgres fewer on every step.
INSERT_AUDIT_AND_EVENT = text(
    f"""
    WITH audit AS ({_AUDIT_SQL})
    INSERT INTO events (operation_id, type, payload) VALUES (:operation_id, :type, :payload)
    """
).bindparams(bindparam("operation_id", type_=Uuid), bindparam("payload", type_=JSONB))
OPERATION_COLUMNS = frozenset(OPERATIONS.c.keys())


@dataclass
class SagaContext:
    """What a saga step needs from the outside world; tasks and tests build one."""

    uow: UnitOfWork
    mint_client: Callable[[str], MintClient]
    wallet_seed: Callable[[str], bytes]
    # The worker's clock, only for times others wrote (an invoice's or a quote's expiry);
    # every time the database wrote is compared with its own now().
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    network: str = "bc"  # the Lightning network invoices must be for (BOLT 11 prefix)
    # Ask the mint to pay in the background (NUT-05 prefer_async) and settle from its quote
    # later: for a caller that hands the settling on (a worker's tasks), not one that waits.
    async_melts: bool = False
    # How long a step handed on to another task may take to start before recovery assumes
    # its message lost and hands it on again.
    handoff_grace: timedelta = timedelta(seconds=30)
    # A prepared operation (inputs reserved, nothing sent) is its caller's until untouched
    # this long; then recovery cancels it.
    prepared_max_age: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class SagaSpec:
    kind: str
    transitions: dict[str, frozenset[str]]
    terminal: frozenset[str]
    event_prefix: str
    evented: frozenset[str]  # states whose arrival publishes an event
    public_columns: tuple[str, ...]  # columns of its kind shown besides every kind's
    public_data: tuple[str, ...]  # keys of Operation.data shown to callers


SPECS: dict[str, SagaSpec] = {}


def register(spec: SagaSpec) -> SagaSpec:
    SPECS[spec.kind] = spec
    return spec


@dataclass(frozen=True)
class Progress:
    """What a saga step leaves: the operation as it stands (its JSON) and the name of the
    step to run next, None when there is nothing to run now (settled, or waiting on the
    mint). Who runs the next step is the caller's choice: a task hands it to another task,
    a plain caller `drive`s it in its own process."""

    view: dict[str, Any]
    next_step: str | None = None

    @property
    def operation_id(self) -> uuid.UUID:
        return uuid.UUID(self.view["id"])


Step = Callable[[SagaContext, uuid.UUID], Progress]
STEPS: dict[str, dict[str, Step]] = {}  # kind -> its steps by name


def register_steps(kind: str, steps: dict[str, Step]) -> None:
    STEPS[kind] = steps


def drive(
    ctx: SagaContext, kind: str, progress: Progress, *, until: Collection[str] = ()
) -> dict[str, Any]:
    """Run the steps one hands on to, in this process, until one names no next step (or
    one in `until`, a step that would only wait); the operation as it ends up."""
    while progress.next_step is not None and progress.next_step not in until:
        progress = STEPS[kind][progress.next_step](ctx, progress.operation_id)
    return progress.view


def event_type(spec: SagaSpec, state: str) -> str:
    return f"{spec.event_prefix}:{state.replace('_', '-')}"


T = TypeVar("T")


def present(value: T | None, what: str) -> T:
    """A column every operation of its kind has (a mint's or melt's quote_id, an amount)."""
    if value is None:
        raise InvalidStateError(f"the operation has no {what}")
    return value


def new_operation(
    session: Session, kind: str, state: str, operation_id: uuid.UUID | None = None, **columns: Any
) -> Operation:
    """Insert a new operation (flushed, so proofs can name it); events are the caller's.

    A one-call task picks the id itself, to hold the operation's lock before it exists.
    """
    op = Operation(
        id=operation_id or uuid.uuid4(),
        kind=kind,
        state=state,
        data=columns.pop("data", {}),
        **columns,
    )
    session.add(op)
    session.flush()
    return op


def operation_exists(ctx: SagaContext, operation_id: uuid.UUID) -> bool:
    with ctx.uow() as session:
        return session.get(Operation, operation_id) is not None


def get_operation(
    session: Session, operation_id: str | uuid.UUID, kind: str | None = None, *, lock: bool = False
) -> Operation:
    try:
        op_uuid = uuid.UUID(str(operation_id))
    except ValueError:
        raise OperationNotFoundError(f"no operation {operation_id!r}") from None
    stmt = OPERATION_BY_ID_LOCKED if lock else OPERATION_BY_ID
    op = session.scalars(stmt, {"operation_id": op_uuid}).one_or_none()
    if op is None or (kind is not None and op.kind != kind):
        raise OperationNotFoundError(f"no {kind or ''} operation {operation_id}".replace("  ", " "))
    return op


def transition(
    session: Session,
    op: Operation,
    to: str,
    *,
    data: Mapping[str, Any] | None = None,
    error: Exception | None = None,
    severity: Severity | None = None,
    clear_error: bool = True,
    **columns: Any,
) -> Operation:
    """Move `op` to state `to` if nobody moved it since we read it; write its event.

    `data` (a saga's data record: MeltData, ...) is merged into op.data; `severity`, when
    given, is recorded instead of the error's own. Raises InvalidStateError for an illegal
    transition and StaleOperationError when the compare-and-set loses.
    """
    spec = spec_of(op.kind)
    if to not in spec.transitions.get(op.state, frozenset()):
        raise InvalidStateError(f"{op.kind} operation cannot go from {op.state} to {to}")
    # A state change also ends any poller's claim, so the same sweep can see it again.
    values: dict[str, Any] = {"state": to, "claimed_until": None, **columns}
    if error is not None or clear_error:
        values.update(_error_columns(error, severity))
    before = op.state
    _compare_and_set(session, op, values, data, final=to in spec.terminal)
    _record_transition(session, op, before, evented=to in spec.evented)
    return op


def _record_transition(session: Session, op: Operation, from_state: str, *, evented: bool) -> None:
    """The transition's audit record, and its event when the new state is evented."""
    from sagas.history import operation_fee  # the fee as a statement shows it

    audit = {
        "operation_id": op.id,
        "kind": op.kind,
        "from_state": from_state,
        "to_state": op.state,
        "version": op.version,
        "fee": operation_fee(op),
        "error_code": op.error_code,
    }
    if evented:
        audit.update(event_values(op))
    session.connection().execute(INSERT_AUDIT_AND_EVENT if evented else INSERT_AUDIT, audit)


def record_error(
    ctx: SagaContext, kind: str, operation_id: uuid.UUID, error: Exception
) -> dict[str, Any]:
    """Note an error on an open operation without moving it (recovery will retry)."""
    with ctx.uow() as session:
        op = get_operation(session, operation_id, kind)
        if op.state not in spec_of(kind).terminal:
            update_operation(session, op, error=error)
        return operation_view(op)


def record_event(session: Session, op: Operation) -> None:
    """The outbox row announcing the state `op` is in now (same transaction)."""
    session.connection().execute(INSERT_EVENT, {"operation_id": op.id, **event_values(op)})


def event_values(op: Operation) -> dict[str, Any]:
    """The type and payload of the event announcing the state `op` is in now."""
    payload = operation_view(op)
    payload.pop("token", None)  # a token is money to whoever reads it: callers get it, streams not
    return {"type": event_type(spec_of(op.kind), op.state), "payload": payload}


def update_operation(
    session: Session,
    op: Operation,
    *,
    data: Mapping[str, Any] | None = None,
    error: Exception | None = None,
    **columns: Any,
) -> Operation:
    """Change an operation without changing its state (same compare-and-set)."""
    values = dict(columns)
    if error is not None:
        values.update(_error_columns(error))
    return _compare_and_set(session, op, values, data)


def _compare_and_set(
    session: Session,
    op: Operation,
    values: dict[str, Any],
    data: Mapping[str, Any] | None,
    *,
    final: bool = False,
) -> Operation:
    """One UPDATE ... WHERE state and version are still what we read ... RETURNING the row,
    copied into `op` as its committed state. Core, not an ORM bulk update: every step
    makes several of these, and the ORM's machinery costs more than the statement."""
    if data is not None:
        values["data"] = {**op.data, **data}
    # A parameter that names no column would be left out of the SET without a word.
    if unknown := values.keys() - OPERATION_COLUMNS:
        raise TypeError(f"operations has no column {sorted(unknown)}")
    row = (
        session.connection()
        .execute(
            COMPARE_AND_SET_FINAL if final else COMPARE_AND_SET,
            {
                "cas_id": op.id,
                "cas_state": op.state,
                "cas_version": op.version,
                "version": op.version + 1,
                **values,
            },
        )
        .one_or_none()
    )
    if row is None:
        raise StaleOperationError(
            f"{op.kind} operation {op.id} changed under us (expected {op.state} v{op.version})"
        )
    for column, value in row._mapping.items():
        set_committed_value(op, column, value)
    return op


def _error_columns(error: Exception | None, severity: Severity | None = None) -> dict[str, Any]:
    if error is None:
        return {"error_code": None, "error_severity": None, "error_message": None}
    if isinstance(error, SagaError):
        code, own = error.code, error.severity
    elif isinstance(error, CashuError):
        code, own = error.code, _severity_of(error)
    else:
        code, own = "UNEXPECTED_ERROR", Severity.HIGH
    severity = severity or own
    return {"error_code": code, "error_severity": str(severity), "error_message": str(error)[:2000]}


def _severity_of(error: CashuError) -> Severity:
    from nuts.errors import MintAmbiguousError

    return Severity.MEDIUM if isinstance(error, MintAmbiguousError) else Severity.HIGH


def spec_of(kind: str) -> SagaSpec:
    """The registered spec of `kind`; a kind nobody registered is a wiring mistake, never
    an operation shown without its fields."""
    try:
        return SPECS[kind]
    except KeyError:
        raise LookupError(f"saga {kind!r} is not registered (import sagas.catalog)") from None


def operation_view(op: Operation) -> dict[str, Any]:
    """The Operation JSON of the public contract (docs/design.md section 2)."""
    spec = spec_of(op.kind)
    view: dict[str, Any] = {
        "id": str(op.id),
        "wallet": op.wallet,
        "kind": op.kind,
        "state": op.state,
        "mint_url": op.mint_url,
        "unit": op.unit,
        "amount": op.amount,
    }
    for column in spec.public_columns:
        view[column] = getattr(op, column)
    for key in spec.public_data:
        if key in op.data:
            view[key] = op.data[key]
    view["error"] = (
        {"code": op.error_code, "severity": op.error_severity, "message": op.error_message}
        if op.error_code
        else None
    )
    for stamp in ("created_at", "updated_at", "finalized_at"):
        value = getattr(op, stamp)
        view[stamp] = value.isoformat() if value else None
    if op.finalized_at is not None and op.created_at is not None:  # how long it took
        view["duration_ms"] = round((op.finalized_at - op.created_at).total_seconds() * 1000)
    return view


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    mint_url: str


def claim_operations(
    session: Session,
    kind: str,
    state: str,
    *,
    limit: int = 100,
    lease_seconds: int = 60,
    min_age: timedelta | None = None,
    exclude: Collection[uuid.UUID] = (),
) -> list[Claimed]:
    """Claim up to `limit` operations in `state` (none of `exclude`; with `min_age`, only
    those that last moved at least that long ago) for one sweep.

    FOR UPDATE SKIP LOCKED plus a lease: two beats, or overlapping ticks, never
    claim the same row, and a claim left by a dead worker lapses by itself.
    """
    now = func.now()
    candidates = (
        select(Operation.id)
        .where(
            Operation.kind == kind,
            Operation.state == state,
            or_(Operation.claimed_until.is_(None), Operation.claimed_until < now),
            # An untrusted mint is never contacted, not even by recovery.
            Operation.mint_url.in_(select(Mint.url).where(Mint.trusted)),
        )
        .order_by(Operation.updated_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if min_age is not None:
        candidates = candidates.where(Operation.updated_at < now - min_age)
    if exclude:
        candidates = candidates.where(Operation.id.not_in(list(exclude)))
    stmt = (
        update(Operation)
        .where(Operation.id.in_(candidates.scalar_subquery()))
        .values(claimed_until=now + timedelta(seconds=lease_seconds))
        .returning(Operation.id, Operation.mint_url)
        .execution_options(synchronize_session=False)
    )
    return [Claimed(row.id, row.mint_url) for row in session.execute(stmt)]


def release_claims(session: Session, operation_ids: list[uuid.UUID]) -> None:
    if not operation_ids:
        return
    session.execute(
        update(Operation)
        .where(Operation.id.in_(operation_ids))
        .values(claimed_until=None)
        .execution_options(synchronize_session=False)
    )


def validate_amount(amount: object) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidAmountError(f"amount must be a whole number, got {amount!r}")
    if not 0 < amount <= MAX_AMOUNT:
        raise InvalidAmountError(f"amount {amount} is out of range")
    return amount


MAX_LIMIT = 500


def list_operations(
    session: Session,
    wallet: str,
    *,
    kind: str | None = None,
    states: list[str] | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Operation]:
    """A wallet's operations, newest first."""
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidRequestError(f"{name} must be a non-negative whole number")
    stmt = select(Operation).where(Operation.wallet == wallet)
    if kind is not None:
        stmt = stmt.where(Operation.kind == kind)
    if states:
        stmt = stmt.where(Operation.state.in_(list(states)))
    stmt = (
        stmt.order_by(Operation.created_at.desc(), Operation.id.desc())
        .limit(min(limit, MAX_LIMIT))
        .offset(offset)
    )
    return list(session.scalars(stmt))
