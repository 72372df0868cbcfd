"""Cashu tokens (NUT-00): write V4 `cashuB` (CBOR) and V3 `cashuA` (JSON); read both.

Tokens come from strangers, so decoding validates everything and turns every
failure into one InvalidTokenError with a message a caller can show.
A V4 token may carry a short (8-byte) keyset id; the receiver expands it
against the mint's keysets (nuts.keysets.expand_keyset_id).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import cbor2

from nuts.errors import InvalidTokenError
from nuts.keysets import expand_keyset_id
from nuts.models import Proof, ProofDLEQ

V3_PREFIX = "cashuA"
V4_PREFIX = "cashuB"
MAX_PROOF_AMOUNT = 2**62  # beyond any real denomination; guards sums against absurd values
MAX_TOKEN_LENGTH = 1_000_000


@dataclass
class Token:
    mint: str
    unit: str
    proofs: list[Proof]
    memo: str | None = None

    @property
    def keyset_ids(self) -> list[str]:
        return sorted({p.id for p in self.proofs})

    @property
    def amount(self) -> int:
        return sum(p.amount for p in self.proofs)


def expand_keyset_ids(token: Token, known_ids: Iterable[str]) -> Token:
    """The token with every (possibly short) keyset id replaced by the mint's full id.

    Raises UnknownKeysetError or AmbiguousKeysetIdError (both KeysetErrors).
    """
    known = list(known_ids)
    full = {kid: expand_keyset_id(kid, known) for kid in token.keyset_ids}
    proofs = [p.model_copy(update={"id": full[p.id]}) for p in token.proofs]
    return Token(mint=token.mint, unit=token.unit, proofs=proofs, memo=token.memo)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    text = text.strip().rstrip("=")
    # Accept both alphabets (some wallets write standard base64), nothing else.
    text = text.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidTokenError(f"token is not valid base64: {exc}") from None


def encode_token_v4(token: Token) -> str:
    by_keyset: dict[str, list[dict[str, Any]]] = {}
    for proof in token.proofs:
        entry: dict[str, Any] = {
            "a": proof.amount,
            "s": proof.secret,
            "c": bytes.fromhex(proof.C),
        }
        if proof.dleq is not None:
            entry["d"] = {
                "e": bytes.fromhex(proof.dleq.e),
                "s": bytes.fromhex(proof.dleq.s),
                "r": bytes.fromhex(proof.dleq.r),
            }
        if proof.witness is not None:
            entry["w"] = proof.witness
        by_keyset.setdefault(proof.id, []).append(entry)
    # Key order as in the spec's vectors, so equal tokens encode to equal strings.
    data: dict[str, Any] = {
        "t": [{"i": bytes.fromhex(kid), "p": entries} for kid, entries in by_keyset.items()]
    }
    if token.memo is not None:
        data["d"] = token.memo
    data["m"] = token.mint
    data["u"] = token.unit
    return V4_PREFIX + _b64encode(cbor2.dumps(data))


def encode_token_v3(token: Token) -> str:
    data: dict[str, Any] = {
        "token": [{"mint": token.mint, "proofs": [_v3_proof(p) for p in token.proofs]}],
        "unit": token.unit,
    }
    if token.memo is not None:
        data["memo"] = token.memo
    return V3_PREFIX + _b64encode(json.dumps(data, separators=(",", ":")).encode())


def _v3_proof(proof: Proof) -> dict[str, Any]:
    data: dict[str, Any] = {
        "amount": proof.amount,
        "id": proof.id,
        "secret": proof.secret,
        "C": proof.C,
    }
    if proof.dleq is not None:
        data["dleq"] = proof.dleq.model_dump()
    if proof.witness is not None:
        data["witness"] = proof.witness
    return data


def decode_token(text: str) -> Token:
    """Parse a cashuA or cashuB token (optionally prefixed 'cashu:'); validate every field."""
    if not isinstance(text, str):
        raise InvalidTokenError("token must be a string")
    text = text.strip()
    if text.lower().startswith("cashu:"):
        text = text[len("cashu:") :]
    if len(text) > MAX_TOKEN_LENGTH:
        raise InvalidTokenError("token is too long")
    if text.startswith(V4_PREFIX):
        return _decode_v4(_b64decode(text[len(V4_PREFIX) :]))
    if text.startswith(V3_PREFIX):
        return _decode_v3(_b64decode(text[len(V3_PREFIX) :]))
    raise InvalidTokenError("token must start with cashuA or cashuB")


def _decode_v4(raw: bytes) -> Token:
    try:
        data = cbor2.loads(raw)
    except Exception as exc:  # cbor2 raises several unrelated types on garbage
        raise InvalidTokenError(f"token is not valid CBOR: {exc}") from None
    data = _expect(data, dict, "token")
    mint = _mint_url(data.get("m"))
    unit = _expect(data.get("u"), str, "unit 'u'")
    memo = _optional(data.get("d"), str, "memo 'd'")
    groups = _expect(data.get("t"), list, "proof groups 't'")
    proofs: list[Proof] = []
    for group in groups:
        group = _expect(group, dict, "proof group")
        keyset_id = _expect(group.get("i"), bytes, "keyset id 'i'").hex()
        for entry in _expect(group.get("p"), list, "proofs 'p'"):
            entry = _expect(entry, dict, "proof")
            dleq = None
            if entry.get("d") is not None:
                d = _expect(entry["d"], dict, "DLEQ 'd'")
                dleq = ProofDLEQ(
                    e=_expect(d.get("e"), bytes, "DLEQ e").hex(),
                    s=_expect(d.get("s"), bytes, "DLEQ s").hex(),
                    r=_expect(d.get("r"), bytes, "DLEQ r").hex(),
                )
            proofs.append(
                _proof(
                    keyset_id,
                    entry.get("a"),
                    entry.get("s"),
                    _expect(entry.get("c"), bytes, "signature 'c'").hex(),
                    dleq,
                    _optional(entry.get("w"), str, "witness 'w'"),
                )
            )
    return _token(mint, unit, proofs, memo)


def _decode_v3(raw: bytes) -> Token:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidTokenError(f"token is not valid JSON: {exc}") from None
    data = _expect(data, dict, "token")
    entries = _expect(data.get("token"), list, "'token' list")
    unit = _optional(data.get("unit"), str, "unit") or "sat"
    memo = _optional(data.get("memo"), str, "memo")
    mints = set()
    proofs: list[Proof] = []
    for entry in entries:
        entry = _expect(entry, dict, "token entry")
        mints.add(_mint_url(entry.get("mint")))
        for p in _expect(entry.get("proofs"), list, "proofs"):
            p = _expect(p, dict, "proof")
            dleq = None
            if p.get("dleq") is not None:
                d = _expect(p["dleq"], dict, "dleq")
                dleq = ProofDLEQ(
                    e=_hex(d.get("e"), "DLEQ e"),
                    s=_hex(d.get("s"), "DLEQ s"),
                    r=_hex(d.get("r"), "DLEQ r"),
                )
            proofs.append(
                _proof(
                    _hex(p.get("id"), "keyset id"),
                    p.get("amount"),
                    p.get("secret"),
                    _hex(p.get("C"), "signature C"),
                    dleq,
                    _optional(p.get("witness"), str, "witness"),
                )
            )
    if len(mints) != 1:
        raise InvalidTokenError(f"token must name exactly one mint, found {len(mints)}")
    return _token(mints.pop(), unit, proofs, memo)


def _token(mint: str, unit: str, proofs: list[Proof], memo: str | None) -> Token:
    if not proofs:
        raise InvalidTokenError("token has no proofs")
    if not unit:
        raise InvalidTokenError("token has an empty unit")
    if len({p.secret for p in proofs}) != len(proofs):
        raise InvalidTokenError("token contains the same proof twice")
    return Token(mint=mint, unit=unit, proofs=proofs, memo=memo)


def _proof(
    keyset_id: str,
    amount: object,
    secret: object,
    C: str,
    dleq: ProofDLEQ | None,
    witness: str | None,
) -> Proof:
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise InvalidTokenError("proof amount must be an integer")
    if not 0 < amount <= MAX_PROOF_AMOUNT:
        raise InvalidTokenError(f"proof amount {amount} is out of range")
    if not isinstance(secret, str) or not secret:
        raise InvalidTokenError("proof secret must be a non-empty string")
    try:
        secret.encode()
    except UnicodeEncodeError:
        raise InvalidTokenError("proof secret is not valid text") from None
    if len(C) != 66 or C[:2] not in ("02", "03"):
        raise InvalidTokenError("proof signature C must be a 33-byte compressed point")
    if len(keyset_id) not in (16, 66):
        raise InvalidTokenError(f"keyset id {keyset_id!r} has an invalid length")
    return Proof(id=keyset_id, amount=amount, secret=secret, C=C, dleq=dleq, witness=witness)


def _expect(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind):
        raise InvalidTokenError(f"{what} is missing or not a {kind.__name__}")
    return value


def _optional(value: Any, kind: type, what: str) -> Any:
    return None if value is None else _expect(value, kind, what)


def _hex(value: Any, what: str) -> str:
    value = _expect(value, str, what)
    try:
        bytes.fromhex(value)
    except ValueError:
        raise InvalidTokenError(f"{what} is not hex") from None
    return value.lower()


def _mint_url(value: Any) -> str:
    url = _expect(value, str, "mint URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidTokenError(f"mint URL {url!r} is not an http(s) URL")
    return url.rstrip("/")
