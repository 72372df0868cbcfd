"""Outputs: blinded messages we ask the mint to sign, and turning its signatures into proofs.

Every output is derived from (seed, keyset, counter) (NUT-13), so the same
outputs can be rebuilt for a replay (NUT-19) or a restore (NUT-09). Every
signature that carries a DLEQ proof (NUT-12) is verified before it becomes a
proof we count as money.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from coincurve import PrivateKey, PublicKey

from nuts.crypto import (
    blind_message,
    hash_to_curve,
    unblind_signature,
    verify_dleq_blinded,
    verify_dleq_proof,
)
from nuts.errors import InvalidSignatureError, KeysetError
from nuts.keysets import Keyset
from nuts.models import BlindedMessage, BlindSignature, Proof, ProofDLEQ
from nuts.secrets import derive_secret_and_r

BLANK_AMOUNT = 1  # NUT-08 blanks: the mint fills in the amount it returns


@dataclass(frozen=True)
class PreparedOutput:
    """A blinded message with what we need to unblind its signature later."""

    amount: int
    keyset_id: str
    secret: str
    r: str  # hex blinding factor; never logged
    B_: str
    counter: int | None = None

    @property
    def blinded_message(self) -> BlindedMessage:
        return BlindedMessage(amount=self.amount, id=self.keyset_id, B_=self.B_)

    def to_dict(self) -> dict:
        return {
            "amount": self.amount,
            "keyset_id": self.keyset_id,
            "secret": self.secret,
            "r": self.r,
            "B_": self.B_,
            "counter": self.counter,
        }

    @classmethod
    def from_dict(cls, data: dict) -> PreparedOutput:
        return cls(**data)


def derive_outputs(
    seed: bytes,
    keyset_id: str,
    amounts: Sequence[int],
    first_counter: int,
    secrets: Sequence[str] | None = None,
) -> list[PreparedOutput]:
    """Deterministic outputs for counters first_counter, first_counter + 1, ...

    `secrets` replaces the derived secrets (P2PK-locked outputs carry a
    spending condition); the blinding factors are still derived.
    """
    outputs = []
    for offset, amount in enumerate(amounts):
        counter = first_counter + offset
        secret, r = derive_secret_and_r(seed, keyset_id, counter)
        if secrets is not None:
            secret = secrets[offset]
        B_, _ = blind_message(secret.encode(), r)
        outputs.append(
            PreparedOutput(amount, keyset_id, secret, r.secret.hex(), B_.format().hex(), counter)
        )
    return outputs


def random_outputs(keyset_id: str, amounts: Sequence[int]) -> list[PreparedOutput]:
    """Outputs from random secrets: only for tests and throwaway work, never for money we keep."""
    outputs = []
    for amount in amounts:
        secret = os.urandom(32).hex()
        B_, r = blind_message(secret.encode())
        outputs.append(PreparedOutput(amount, keyset_id, secret, r.secret.hex(), B_.format().hex()))
    return outputs


def unblind_outputs(
    outputs: Sequence[PreparedOutput],
    signatures: Sequence[BlindSignature],
    keysets: dict[str, Keyset],
) -> list[Proof]:
    """Proofs from the mint's signatures, paired in order; a bad DLEQ raises.

    For NUT-08 change the mint returns fewer signatures than blanks, each with
    the amount it chose; the amount (and key) come from the signature.
    """
    if len(signatures) > len(outputs):
        raise InvalidSignatureError("mint returned more signatures than outputs")
    proofs = []
    for output, signature in zip(outputs, signatures, strict=False):
        if signature.id != output.keyset_id:
            raise InvalidSignatureError(
                f"signature from keyset {signature.id}, output was for {output.keyset_id}"
            )
        K = keysets[signature.id].public_key(signature.amount)
        r = PrivateKey(bytes.fromhex(output.r))
        C_ = PublicKey(bytes.fromhex(signature.C_))
        dleq = None
        if signature.dleq is not None:
            B_ = PublicKey(bytes.fromhex(output.B_))
            e, s = bytes.fromhex(signature.dleq.e), bytes.fromhex(signature.dleq.s)
            if not verify_dleq_blinded(B_, C_, e, s, K):
                raise InvalidSignatureError(
                    f"DLEQ proof of the mint's signature (amount {signature.amount}) is invalid"
                )
            dleq = ProofDLEQ(e=signature.dleq.e, s=signature.dleq.s, r=output.r)
        C = unblind_signature(C_, r, K)
        proofs.append(
            Proof(
                id=signature.id,
                amount=signature.amount,
                secret=output.secret,
                C=C.format().hex(),
                dleq=dleq,
            )
        )
    return proofs


# What a mint accepts in one request, as Nutshell 0.20 limits it (mint_max_secret_length,
# mint_max_witness_length, mint_max_request_length): anything beyond is refused there.
MAX_SECRET_LENGTH = 1024
MAX_WITNESS_LENGTH = 1024
MAX_PROOFS_PER_REQUEST = 1000


def proof_defect(proof: Proof, keyset: Keyset) -> str | None:
    """Why a proof given to us cannot be valid at its keyset, checked offline; None if it
    may be (only the mint can tell a forged signature from a real one without a DLEQ)."""
    if not proof.secret:
        return "a proof has no secret"
    if len(proof.secret) > MAX_SECRET_LENGTH:
        return f"a proof's secret is longer than {MAX_SECRET_LENGTH} characters"
    if proof.witness is not None and len(proof.witness) > MAX_WITNESS_LENGTH:
        return f"a proof's witness is longer than {MAX_WITNESS_LENGTH} characters"
    if proof.amount not in keyset.keys:
        return f"amount {proof.amount} is not an amount of keyset {keyset.id}"
    try:
        PublicKey(bytes.fromhex(proof.C))
    except ValueError:
        return "a proof's signature C is not a point on the curve"
    if not verify_proof_dleq(proof, keyset):
        return "a proof's DLEQ does not verify: not signed by this mint"
    return None


def verify_proof_dleq(proof: Proof, keyset: Keyset) -> bool:
    """A proof given to us (in a token) with a DLEQ: was it really signed by this keyset?

    A proof without DLEQ cannot be checked offline and passes; the swap checks it.
    """
    if proof.dleq is None:
        return True
    try:
        K = keyset.public_key(proof.amount)
        return verify_dleq_proof(
            proof.secret.encode(),
            PublicKey(bytes.fromhex(proof.C)),
            PrivateKey(bytes.fromhex(proof.dleq.r)),
            bytes.fromhex(proof.dleq.e),
            bytes.fromhex(proof.dleq.s),
            K,
        )
    except (ValueError, KeysetError):  # malformed values, or an amount the keyset lacks
        return False


def proof_y(proof: Proof) -> str:
    """Y = hash_to_curve(secret): how the mint names a proof in checkstate (NUT-07)."""
    return hash_to_curve(proof.secret.encode()).format().hex()
