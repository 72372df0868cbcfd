"""SQLAlchemy 2.0 models and the unit of work."""

from models.base import Base
from models.mints import Keyset, KeysetCounter, Mint, SeedFingerprint
from models.operations import AuditRecord, Event, Operation
from models.proofs import Proof, ProofState

__all__ = [
    "AuditRecord",
    "Base",
    "Event",
    "Keyset",
    "KeysetCounter",
    "Mint",
    "Operation",
    "Proof",
    "ProofState",
    "SeedFingerprint",
]
