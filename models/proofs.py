"""Proofs: our ecash, one row per proof, never deleted (docs/design.md rule 6)."""

from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Index, Text, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Timestamps


class ProofState(StrEnum):
    UNSPENT = "unspent"  # spendable
    RESERVED = "reserved"  # held by an operation that has not sent it yet
    PENDING = "pending"  # sent (in a token or a melt) and not yet known spent
    SPENT = "spent"


class StoredProof(Timestamps, Base):
    __tablename__ = "proofs"
    __table_args__ = (
        CheckConstraint("state IN ('unspent', 'reserved', 'pending', 'spent')", name="state_valid"),
        CheckConstraint("amount > 0", name="amount_positive"),
        # Coin selection reads the spendable proofs of one wallet, mint and unit by amount.
        Index("ix_proofs_selection", "wallet", "mint_url", "unit", "state", "amount"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    wallet: Mapped[str] = mapped_column(Text, nullable=False)
    mint_url: Mapped[str] = mapped_column(Text, nullable=False)
    unit: Mapped[str] = mapped_column(Text, nullable=False)
    keyset_id: Mapped[str] = mapped_column(Text, nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    secret: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    C: Mapped[str] = mapped_column(Text, nullable=False)
    y: Mapped[str] = mapped_column(Text, nullable=False, index=True)
    dleq: Mapped[dict | None] = mapped_column(JSONB)
    witness: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text, nullable=False, default=ProofState.UNSPENT)
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    used_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    spent_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
