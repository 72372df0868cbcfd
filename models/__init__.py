"""SQLAlchemy 2.0 models and the unit of work."""

from models.base import Base
from models.mints import KeysetCounter, Mint, SeedFingerprint, StoredKeyset
from models.operations import AuditRecord, Event, Operation
from models.proofs import ProofState, StoredProof

__all__ = [
    "AuditRecord",
    "Base",
    "Event",
    "KeysetCounter",
    "Mint",
    "Operation",
    "ProofState",
    "SeedFingerprint",
    "StoredKeyset",
    "StoredProof",
]
