"""NUT-13 counters: allocated atomically in Postgres, only ever growing (docs/design.md rule 2)."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import KeysetCounter

COUNTERS = cast(Table, KeysetCounter.__table__)
_NEW_COUNTER = insert(COUNTERS).values(
    wallet=bindparam("wallet"), keyset_id=bindparam("keyset_id"), next_counter=bindparam("count")
)
# The row's next_counter moves on by the `count` the conflicting insert brought.
ALLOCATE_COUNTERS = _NEW_COUNTER.on_conflict_do_update(
    index_elements=["wallet", "keyset_id"],
    set_={"next_counter": COUNTERS.c.next_counter + _NEW_COUNTER.excluded.next_counter},
).returning(COUNTERS.c.next_counter)


def allocate_counters(session: Session, wallet: str, keyset_id: str, count: int) -> int:
    """Reserve `count` consecutive counters; returns the first.

    One INSERT ... ON CONFLICT DO UPDATE ... RETURNING: concurrent callers are
    serialized by the row lock and always get disjoint ranges.
    """
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    params = {"wallet": wallet, "keyset_id": keyset_id, "count": count}
    return int(session.connection().execute(ALLOCATE_COUNTERS, params).scalar_one()) - count


def raise_counter_to(session: Session, wallet: str, keyset_id: str, at_least: int) -> int:
    """Make sure the next counter is at least `at_least` (restore); never lowers it."""
    stmt = (
        insert(KeysetCounter)
        .values(wallet=wallet, keyset_id=keyset_id, next_counter=at_least)
        .on_conflict_do_update(
            index_elements=["wallet", "keyset_id"],
            set_={"next_counter": func.greatest(KeysetCounter.next_counter, at_least)},
        )
        .returning(KeysetCounter.next_counter)
    )
    counter: int = session.execute(stmt).scalar_one()
    return counter


def next_counter(session: Session, wallet: str, keyset_id: str) -> int:
    value = session.scalar(
        select(KeysetCounter.next_counter).where(
            KeysetCounter.wallet == wallet, KeysetCounter.keyset_id == keyset_id
        )
    )
    return int(value or 0)
