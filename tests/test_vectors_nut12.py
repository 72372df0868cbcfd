"""NUT-12 spec vectors: hash_e, DLEQ on a BlindSignature and on a Proof, deterministic nonce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from coincurve import PrivateKey, PublicKey

from nuts.crypto import hash_e, mint_dleq, sign_blinded, verify_dleq_blinded, verify_dleq_proof

VECTORS = json.loads((Path(__file__).parent / "vectors" / "nut12.json").read_text())


def _pt(hex_str: str) -> PublicKey:
    return PublicKey(bytes.fromhex(hex_str))


def _name(vector: dict) -> str:
    return vector["name"]


def _flip_last_bit(hex_str: str) -> bytes:
    raw = bytearray(bytes.fromhex(hex_str))
    raw[-1] ^= 1
    return bytes(raw)


@pytest.mark.parametrize("vector", VECTORS["hash_e"], ids=_name)
def test_hash_e_matches_spec_vector(vector):
    assert hash_e(*[_pt(p) for p in vector["points"]]).hex() == vector["expected"]


@pytest.mark.parametrize("vector", VECTORS["blind_signature_dleq"], ids=_name)
def test_blind_signature_dleq_verifies(vector):
    sig = vector["blind_signature"]
    ok = verify_dleq_blinded(
        _pt(vector["B_"]),
        _pt(sig["C_"]),
        bytes.fromhex(sig["dleq"]["e"]),
        bytes.fromhex(sig["dleq"]["s"]),
        _pt(vector["A"]),
    )
    assert ok is vector["valid"]


@pytest.mark.parametrize("vector", VECTORS["blind_signature_dleq"], ids=_name)
def test_blind_signature_dleq_with_altered_s_is_rejected(vector):
    # Derived negative case: the spec vector with one bit of s flipped.
    sig = vector["blind_signature"]
    ok = verify_dleq_blinded(
        _pt(vector["B_"]),
        _pt(sig["C_"]),
        bytes.fromhex(sig["dleq"]["e"]),
        _flip_last_bit(sig["dleq"]["s"]),
        _pt(vector["A"]),
    )
    assert ok is False


@pytest.mark.parametrize("vector", VECTORS["proof_dleq"], ids=_name)
def test_proof_dleq_verifies(vector):
    proof = vector["proof"]
    ok = verify_dleq_proof(
        proof["secret"].encode(),
        _pt(proof["C"]),
        PrivateKey(bytes.fromhex(proof["dleq"]["r"])),
        bytes.fromhex(proof["dleq"]["e"]),
        bytes.fromhex(proof["dleq"]["s"]),
        _pt(vector["A"]),
    )
    assert ok is vector["valid"]


@pytest.mark.parametrize("vector", VECTORS["proof_dleq"], ids=_name)
def test_proof_dleq_with_altered_r_is_rejected(vector):
    # Derived negative case: the spec vector with one bit of the blinding factor flipped.
    proof = vector["proof"]
    ok = verify_dleq_proof(
        proof["secret"].encode(),
        _pt(proof["C"]),
        PrivateKey(_flip_last_bit(proof["dleq"]["r"])),
        bytes.fromhex(proof["dleq"]["e"]),
        bytes.fromhex(proof["dleq"]["s"]),
        _pt(vector["A"]),
    )
    assert ok is False


@pytest.mark.parametrize("vector", VECTORS["deterministic_nonce"], ids=_name)
def test_deterministic_nonce_vector_inputs_are_consistent(vector):
    a = PrivateKey(bytes.fromhex(vector["a"]))
    assert a.public_key == _pt(vector["A"])
    assert sign_blinded(_pt(vector["B_"]), a) == _pt(vector["C_"])


@pytest.mark.parametrize("vector", VECTORS["deterministic_nonce"], ids=_name)
def test_deterministic_nonce_dleq_verifies(vector):
    ok = verify_dleq_blinded(
        _pt(vector["B_"]),
        _pt(vector["C_"]),
        bytes.fromhex(vector["e"]),
        bytes.fromhex(vector["s"]),
        _pt(vector["A"]),
    )
    assert ok is True


@pytest.mark.parametrize("vector", VECTORS["deterministic_nonce"], ids=_name)
def test_mint_dleq_reproduces_deterministic_nonce_vector(vector):
    e, s = mint_dleq(_pt(vector["B_"]), PrivateKey(bytes.fromhex(vector["a"])))
    assert (e.hex(), s.hex()) == (vector["e"], vector["s"])


@pytest.mark.parametrize("vector", VECTORS["deterministic_nonce"], ids=_name)
def test_mint_dleq_on_spec_inputs_verifies(vector):
    a = PrivateKey(bytes.fromhex(vector["a"]))
    B_ = _pt(vector["B_"])
    e, s = mint_dleq(B_, a)
    assert verify_dleq_blinded(B_, _pt(vector["C_"]), e, s, a.public_key) is True
