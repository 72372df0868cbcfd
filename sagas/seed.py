"""One master seed per database: a fingerprint of it is stored by the first process that
uses the database, and every later worker, beat or command must hold the same seed.

Two seeds writing into one database work until the day a wallet is restored from the
mnemonic and part of its money is not there; refusing to start is the only safe answer.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import SeedFingerprint
from sagas.errors import SeedMismatchError

SHOWN = 8  # hex digits of a fingerprint an error shows: enough to compare two hosts


def seed_fingerprint(master_seed: bytes) -> str:
    """A hash of the seed, domain-separated so it is no key of any wallet."""
    return hashlib.sha256(b"cashu-worker seed fingerprint v1\x00" + master_seed).hexdigest()


def check_seed(session: Session, fingerprint: str) -> None:
    """Store the fingerprint if the database has none yet; SeedMismatchError if it has
    another one."""
    session.execute(
        insert(SeedFingerprint).values(id=1, fingerprint=fingerprint).on_conflict_do_nothing()
    )
    stored = session.scalar(select(SeedFingerprint.fingerprint))
    if stored != fingerprint:
        raise SeedMismatchError(
            f"this process's master seed (fingerprint {fingerprint[:SHOWN]}) is not the one "
            f"this database's wallets derive from ({(stored or '')[:SHOWN]}): set "
            "WALLET_MNEMONIC or WALLET_MNEMONIC_FILE to the system's master mnemonic"
        )
