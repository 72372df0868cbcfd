"""NUT-13 counters: allocated atomically in Postgres, only ever growing (DESIGN.md rule 2)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import KeysetCounter


def allocate_counters(session: Session, wallet: str, keyset_id: str, count: int) -> int:
    """Reserve `count` consecutive counters; returns the first.

    One INSERT ... ON CONFLICT DO UPDATE ... RETURNING: concurrent callers are
    serialized by the row lock and always get disjoint ranges.
    """
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    stmt = (
        insert(KeysetCounter)
        .values(wallet=wallet, keyset_id=keyset_id, next_counter=count)
        .on_conflict_do_update(
            index_elements=["wallet", "keyset_id"],
            set_={"next_counter": KeysetCounter.next_counter + count},
        )
        .returning(KeysetCounter.next_counter)
    )
    return int(session.scalar(stmt)) - count


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
    return int(session.scalar(stmt))


def next_counter(session: Session, wallet: str, keyset_id: str) -> int:
    value = session.scalar(
        select(KeysetCounter.next_counter).where(
            KeysetCounter.wallet == wallet, KeysetCounter.keyset_id == keyset_id
        )
    )
    return int(value or 0)
