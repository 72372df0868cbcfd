"""Spending conditions: NUT-10 well-known secrets, NUT-11 P2PK, NUT-20 signed mint quotes.

All signatures are BIP340 Schnorr over sha256(message). Keys are compared by
their x-coordinate, as NUT-11 asks.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from coincurve import PrivateKey, PublicKey, PublicKeyXOnly

from nuts.models import BlindedMessage, Proof

SIG_INPUTS = "SIG_INPUTS"
SIG_ALL = "SIG_ALL"


class SpendingConditionError(ValueError):
    """A secret's spending conditions are malformed or cannot be met."""


@dataclass(frozen=True)
class WellKnownSecret:
    """NUT-10 secret: ["KIND", {"nonce", "data", "tags"}]."""

    kind: str
    data: str
    nonce: str
    tags: list[list[str]] = field(default_factory=list)

    def tag(self, name: str) -> list[str]:
        """Values of the first tag with this name ([] when absent)."""
        for entry in self.tags:
            if entry and entry[0] == name:
                return entry[1:]
        return []

    def serialize(self) -> str:
        body: dict = {"nonce": self.nonce, "data": self.data}
        if self.tags:
            body["tags"] = self.tags
        return json.dumps([self.kind, body], separators=(",", ":"))


def parse_secret(secret: str) -> WellKnownSecret | None:
    """The well-known secret inside a proof's secret, or None for a plain random secret."""
    if not secret.startswith("["):
        return None
    try:
        kind, body = json.loads(secret)
        tags = body.get("tags") or []
        fields = (kind, body["data"], body["nonce"])
        if not all(isinstance(f, str) for f in fields):
            raise SpendingConditionError("secret kind, data and nonce must be strings")
        if not isinstance(tags, list) or not all(
            isinstance(t, list) and all(isinstance(v, str) for v in t) for t in tags
        ):
            raise SpendingConditionError("secret tags must be lists of strings")
        return WellKnownSecret(kind=kind, data=body["data"], nonce=body["nonce"], tags=tags)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SpendingConditionError(f"malformed well-known secret: {exc}") from None


def p2pk_secret(
    pubkey: str,
    *,
    sigflag: str = SIG_INPUTS,
    pubkeys: Sequence[str] = (),
    n_sigs: int | None = None,
    locktime: int | None = None,
    refund: Sequence[str] = (),
) -> str:
    """A fresh P2PK secret locking to `pubkey` (and optional multisig / refund keys)."""
    tags: list[list[str]] = []
    if sigflag != SIG_INPUTS:
        tags.append(["sigflag", sigflag])
    if pubkeys:
        tags.append(["pubkeys", *pubkeys])
    if n_sigs is not None:
        tags.append(["n_sigs", str(n_sigs)])
    if locktime is not None:
        tags.append(["locktime", str(locktime)])
    if refund:
        tags.append(["refund", *refund])
    secret = WellKnownSecret(kind="P2PK", data=pubkey, nonce=os.urandom(16).hex(), tags=tags)
    return secret.serialize()


def schnorr_sign(key: PrivateKey, message: bytes) -> str:
    return key.sign_schnorr(hashlib.sha256(message).digest()).hex()


def schnorr_verify(pubkey: str | PublicKey, message: bytes, signature_hex: str) -> bool:
    try:
        raw = pubkey.format() if isinstance(pubkey, PublicKey) else bytes.fromhex(pubkey)
        xonly = PublicKeyXOnly(raw[1:] if len(raw) == 33 else raw)
        return xonly.verify(bytes.fromhex(signature_hex), hashlib.sha256(message).digest())
    except ValueError:
        return False


def _xonly(pubkey: str) -> str:
    return pubkey.lower()[2:] if len(pubkey) == 66 else pubkey.lower()


def _distinct_keys(keys: Sequence[str]) -> list[str]:
    xs = [_xonly(k) for k in keys]
    if len(set(xs)) != len(xs):
        raise SpendingConditionError("a P2PK pathway lists the same key twice")
    return list(keys)


@dataclass(frozen=True)
class P2PKConditions:
    keys: list[str]
    n_sigs: int
    refund_keys: list[str]
    n_sigs_refund: int
    locktime: int | None
    sigflag: str

    @classmethod
    def of(cls, secret: WellKnownSecret) -> P2PKConditions:
        if secret.kind != "P2PK":
            raise SpendingConditionError(f"not a P2PK secret: {secret.kind}")

        def number(name: str, default: int | None) -> int | None:
            values = secret.tag(name)
            try:
                return int(values[0]) if values else default
            except ValueError:
                return default  # NUT-11: an invalid locktime is a permanent lock

        n_sigs, n_sigs_refund = number("n_sigs", 1), number("n_sigs_refund", 1)
        if n_sigs is None or n_sigs < 1 or n_sigs_refund is None or n_sigs_refund < 1:
            raise SpendingConditionError("n_sigs and n_sigs_refund must be positive")
        return cls(
            keys=_distinct_keys([secret.data, *secret.tag("pubkeys")]),
            n_sigs=n_sigs,
            refund_keys=_distinct_keys(secret.tag("refund")),
            n_sigs_refund=n_sigs_refund,
            locktime=number("locktime", None),
            sigflag=(secret.tag("sigflag") or [SIG_INPUTS])[0],
        )

    def lock_expired(self, now: int | None = None) -> bool:
        now = int(time.time()) if now is None else now
        return self.locktime is not None and now > self.locktime

    def signers_needed(self, now: int | None = None) -> list[tuple[list[str], int]]:
        """The pathways that can spend now: (keys, how many of them must sign)."""
        paths = [(self.keys, self.n_sigs)]
        if self.lock_expired(now):
            if not self.refund_keys:
                return []  # expired without refund keys: anyone can spend
            paths.append((self.refund_keys, self.n_sigs_refund))
        return paths


def _count_valid(keys: Sequence[str], message: bytes, signatures: Sequence[str]) -> int:
    return sum(1 for k in keys if any(schnorr_verify(k, message, s) for s in signatures))


def witness_signatures(proof: Proof) -> list[str]:
    if not proof.witness:
        return []
    try:
        signatures = json.loads(proof.witness).get("signatures", [])
    except (ValueError, AttributeError):
        return []
    if not isinstance(signatures, list):
        return []
    return [s for s in signatures if isinstance(s, str)]


def verify_p2pk_proof(proof: Proof, now: int | None = None) -> bool:
    """Does the witness satisfy the proof's P2PK lock on its own (SIG_INPUTS)?"""
    secret = parse_secret(proof.secret)
    if secret is None or secret.kind != "P2PK":
        return True
    conditions = P2PKConditions.of(secret)
    paths = conditions.signers_needed(now)
    if not paths:
        return True
    message = proof.secret.encode()
    signatures = witness_signatures(proof)
    return any(_count_valid(keys, message, signatures) >= n for keys, n in paths)


def sig_all_message(
    inputs: Sequence[Proof], outputs: Sequence[BlindedMessage], quote_id: str | None = None
) -> str:
    """NUT-11 SIG_ALL: secret_i || C_i ... || amount_j || B_j ... [|| quote_id for a melt]."""
    parts = [p.secret + p.C for p in inputs] + [f"{o.amount}{o.B_}" for o in outputs]
    return "".join(parts) + (quote_id or "")


def sign_p2pk_inputs(
    inputs: Sequence[Proof],
    key: PrivateKey,
    outputs: Sequence[BlindedMessage] = (),
    quote_id: str | None = None,
) -> list[Proof]:
    """Add our signature to the locked inputs: each one (SIG_INPUTS), or the first (SIG_ALL)."""
    locked = [parse_secret(p.secret) for p in inputs]
    sig_all = any(
        s is not None and s.kind == "P2PK" and P2PKConditions.of(s).sigflag == SIG_ALL
        for s in locked
    )
    if sig_all:
        signature = schnorr_sign(key, sig_all_message(inputs, outputs, quote_id).encode())
        first = inputs[0].model_copy(update={"witness": json.dumps({"signatures": [signature]})})
        return [first, *inputs[1:]]
    signed = []
    for proof, secret in zip(inputs, locked, strict=True):
        if secret is not None and secret.kind == "P2PK":
            witness = json.dumps({"signatures": [schnorr_sign(key, proof.secret.encode())]})
            proof = proof.model_copy(update={"witness": witness})
        signed.append(proof)
    return signed


def mint_quote_message(quote_id: str, outputs: Sequence[BlindedMessage]) -> bytes:
    """NUT-20: quote || B_0 || ... || B_(n-1)."""
    return (quote_id + "".join(o.B_ for o in outputs)).encode()


def sign_mint_quote(key: PrivateKey, quote_id: str, outputs: Sequence[BlindedMessage]) -> str:
    return schnorr_sign(key, mint_quote_message(quote_id, outputs))


def verify_mint_quote_signature(
    pubkey: str, quote_id: str, outputs: Sequence[BlindedMessage], signature_hex: str
) -> bool:
    return schnorr_verify(pubkey, mint_quote_message(quote_id, outputs), signature_hex)
