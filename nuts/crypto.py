"""Blind Diffie-Hellman key exchange (NUT-00) and DLEQ proofs (NUT-12) on secp256k1.

Wallet side:  Y = hash_to_curve(secret); B_ = Y + r*G; C = C_ - r*K.
Mint side (kept here for tests): C_ = k*B_, and the DLEQ proof (e, s) that the
same k is behind K = k*G and C_ = k*B_.

Points are coincurve PublicKeys, scalars coincurve PrivateKeys. coincurve has
no point subtraction, so P - a*Q is computed as P + (n - a)*Q.
"""

from __future__ import annotations

import hashlib
import hmac

from coincurve import PrivateKey, PublicKey

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HASH_TO_CURVE_DOMAIN = b"Secp256k1_HashToCurve_Cashu_"
DLEQ_NONCE_DOMAIN = b"Cashu_DLEQ_R_v1"


def hash_to_curve(message: bytes) -> PublicKey:
    """Map a message to a curve point with unknown discrete log (NUT-00)."""
    msg_hash = hashlib.sha256(HASH_TO_CURVE_DOMAIN + message).digest()
    for counter in range(2**16):
        candidate = hashlib.sha256(msg_hash + counter.to_bytes(4, "little")).digest()
        try:
            return PublicKey(b"\x02" + candidate)
        except ValueError:
            continue
    raise ValueError("hash_to_curve found no point")  # probability ~2**-65536


def _negate_scalar(scalar: bytes) -> bytes:
    return ((SECP256K1_N - int.from_bytes(scalar, "big")) % SECP256K1_N).to_bytes(32, "big")


def _sub(point: PublicKey, scalar: bytes, base: PublicKey) -> PublicKey:
    """point - scalar*base."""
    return PublicKey.combine_keys([point, base.multiply(_negate_scalar(scalar))])


def blind_message(secret: bytes, r: PrivateKey | None = None) -> tuple[PublicKey, PrivateKey]:
    """B_ = hash_to_curve(secret) + r*G, with a random r unless one is given."""
    r = r or PrivateKey()
    return PublicKey.combine_keys([hash_to_curve(secret), r.public_key]), r


def sign_blinded(B_: PublicKey, k: PrivateKey) -> PublicKey:
    """The mint's blind signature C_ = k*B_."""
    return B_.multiply(k.secret)


def unblind_signature(C_: PublicKey, r: PrivateKey, K: PublicKey) -> PublicKey:
    """C = C_ - r*K."""
    return _sub(C_, r.secret, K)


def verify_signature(secret: bytes, C: PublicKey, k: PrivateKey) -> bool:
    """The mint's check C == k*hash_to_curve(secret) (tests use it as the mint)."""
    return hash_to_curve(secret).multiply(k.secret) == C


def hash_e(*points: PublicKey) -> bytes:
    """NUT-12 challenge: sha256 of the concatenated uncompressed hex encodings."""
    joined = "".join(p.format(compressed=False).hex() for p in points)
    return hashlib.sha256(joined.encode()).digest()


def dleq_nonce(k: PrivateKey, B_: PublicKey, C_: PublicKey) -> PrivateKey:
    """NUT-12 deterministic nonce: HMAC-SHA256(k, "Cashu_DLEQ_R_v1" || K || B_ || C_ || ctr)."""
    base = DLEQ_NONCE_DOMAIN + b"".join(p.format(compressed=False) for p in (k.public_key, B_, C_))
    for ctr in range(256):
        nonce = int.from_bytes(hmac.new(k.secret, base + bytes([ctr]), hashlib.sha256).digest())
        if 0 < nonce < SECP256K1_N:
            return PrivateKey(nonce.to_bytes(32, "big"))
    raise ValueError("DLEQ nonce derivation failed")  # probability ~2**-256


def mint_dleq(B_: PublicKey, k: PrivateKey, p: PrivateKey | None = None) -> tuple[bytes, bytes]:
    """The mint's DLEQ proof (e, s) for C_ = k*B_ (tests use it as the mint)."""
    C_ = sign_blinded(B_, k)
    p = p or dleq_nonce(k, B_, C_)
    e = hash_e(p.public_key, B_.multiply(p.secret), k.public_key, C_)
    s = int.from_bytes(p.secret, "big") + int.from_bytes(e, "big") * int.from_bytes(k.secret, "big")
    return e, (s % SECP256K1_N).to_bytes(32, "big")


def verify_dleq_blinded(B_: PublicKey, C_: PublicKey, e: bytes, s: bytes, K: PublicKey) -> bool:
    """Alice's check: R1 = s*G - e*K, R2 = s*B_ - e*C_, e == hash(R1, R2, K, C_)."""
    try:
        R1 = _sub(PrivateKey(s).public_key, e, K)
        R2 = _sub(B_.multiply(s), e, C_)
    except ValueError:  # a zero scalar or a point at infinity: not a valid proof
        return False
    return hash_e(R1, R2, K, C_) == e


def verify_dleq_proof(
    secret: bytes, C: PublicKey, r: PrivateKey, e: bytes, s: bytes, K: PublicKey
) -> bool:
    """Carol's check on a proof she was given: rebuild B_ and C_ from r, then as Alice."""
    try:
        B_, _ = blind_message(secret, r)
        C_ = PublicKey.combine_keys([C, K.multiply(r.secret)])
    except ValueError:
        return False
    return verify_dleq_blinded(B_, C_, e, s, K)
