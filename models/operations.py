"""Operations (one row per saga) and the event outbox."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Timestamps


class Operation(Timestamps, Base):
    __tablename__ = "operations"
    __table_args__ = (
        # One operation per quote: two redeems of one quote can never make two sagas.
        Index(
            "uq_operations_mint_url_kind_quote_id",
            "mint_url",
            "kind",
            "quote_id",
            unique=True,
            postgresql_where=text("kind <> 'receive'"),
        ),
        # A token has one live receive per wallet; a refused (rolled back) one does not
        # block it, and the mint decides between two wallets' swaps.
        Index(
            "uq_operations_receive_token_wallet",
            "mint_url",
            "token_hash",
            "wallet",
            unique=True,
            postgresql_where=text("kind = 'receive' AND state <> 'rolled_back'"),
        ),
        # Melts of one invoice, to refuse paying it twice.
        Index(
            "ix_operations_melt_request",
            text("(data ->> 'request')"),
            postgresql_where=text("kind = 'melt'"),
        ),
        Index("ix_operations_kind_state", "kind", "state"),
        Index("ix_operations_wallet_created", "wallet", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    wallet: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(Text, nullable=False)  # mint, melt, send, receive
    method: Mapped[str | None] = mapped_column(Text)  # a mint's or melt's: bolt11
    state: Mapped[str] = mapped_column(Text, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    mint_url: Mapped[str] = mapped_column(Text, nullable=False)
    unit: Mapped[str] = mapped_column(Text, nullable=False, default="sat")
    amount: Mapped[int | None] = mapped_column(BigInteger)
    quote_id: Mapped[str | None] = mapped_column(Text)  # a mint's or melt's
    # A receive's: the hash of its token's proofs' Ys, so a double receive is refused.
    token_hash: Mapped[str | None] = mapped_column(Text)
    # What the saga needs to finish or undo: outputs, counter ranges, fees, token...
    data: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    error_code: Mapped[str | None] = mapped_column(Text)
    error_severity: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    notify_task: Mapped[str | None] = mapped_column(Text)
    finalized_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Pollers claim a row until this time, so overlapping sweeps never work on it twice.
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Event(Base):
    """Outbox: written in the transition's transaction, published after commit."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_unpublished", "id", postgresql_where=text("published_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    operation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("operations.id"), nullable=False, index=True
    )
    type: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()"), nullable=False
    )
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditRecord(Base):
    """Append-only: one row per transition of an operation, written in its transaction.
    What moved is counted from the operation's proofs (never a secret): its inputs by
    state (`in:<state>`) and the proofs it brought in (`out:<state>`), each [count, sum]."""

    __tablename__ = "operation_audit"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    operation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("operations.id"), nullable=False, index=True
    )
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    from_state: Mapped[str] = mapped_column(Text, nullable=False)
    to_state: Mapped[str] = mapped_column(Text, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    proofs: Mapped[dict] = mapped_column(JSONB, nullable=False)
    fee: Mapped[int | None] = mapped_column(BigInteger)
    error_code: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()"), nullable=False
    )
