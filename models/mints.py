"""Mints we know, their keysets, and the NUT-13 counters per wallet and keyset."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Timestamps


class Mint(Timestamps, Base):
    __tablename__ = "mints"

    url: Mapped[str] = mapped_column(Text, primary_key=True)
    trusted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    info: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)


class StoredKeyset(Timestamps, Base):
    """A keyset as the mint served it, stored only after its id was verified."""

    __tablename__ = "keysets"

    mint_url: Mapped[str] = mapped_column(ForeignKey("mints.url"), primary_key=True)
    id: Mapped[str] = mapped_column(String(66), primary_key=True)
    unit: Mapped[str] = mapped_column(Text, nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False)
    input_fee_ppk: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    final_expiry: Mapped[int | None] = mapped_column(BigInteger)
    keys: Mapped[dict] = mapped_column(JSONB, nullable=False)  # {"amount": "pubkey hex"}


class KeysetCounter(Base):
    """Next unused NUT-13 counter. Keyed by keyset id alone, not mint URL: the
    secrets depend only on (seed, keyset, counter), so one mint reached by two
    URLs must not reuse outputs. Only ever grows."""

    __tablename__ = "keyset_counters"

    wallet: Mapped[str] = mapped_column(Text, primary_key=True)
    keyset_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    next_counter: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class SeedFingerprint(Timestamps, Base):
    """The master seed every worker must derive from, as a fingerprint (never the seed):
    stored by the first process that uses the database, checked by every later one."""

    __tablename__ = "seed_fingerprint"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
