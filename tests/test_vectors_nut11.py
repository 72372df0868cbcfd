"""NUT-11 spec vectors: P2PK proofs (SIG_INPUTS, multisig, refund) and SIG_ALL messages."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from nuts.models import BlindedMessage, Proof
from nuts.p2pk import schnorr_verify, sig_all_message, verify_p2pk_proof

VECTORS = json.loads((Path(__file__).parent / "vectors" / "nut11.json").read_text())
SIG_ALL = VECTORS["sig_all"]
VALID_SIG_ALL_REQUESTS = [r for r in SIG_ALL["requests"] if r["valid"]]


def _name(vector: dict) -> str:
    return vector["name"]


def _inputs_outputs(request: dict) -> tuple[list[Proof], list[BlindedMessage]]:
    return (
        [Proof(**p) for p in request["inputs"]],
        [BlindedMessage(**o) for o in request["outputs"]],
    )


def _signing_keys(secret: str) -> list[str]:
    kind, body = json.loads(secret)
    keys = [body["data"]] if kind == "P2PK" else []  # an HTLC's data is a hash, not a key
    for tag in body.get("tags", []):
        if tag[0] in ("pubkeys", "refund"):
            keys += tag[1:]
    return keys


@pytest.mark.parametrize("vector", VECTORS["proofs"], ids=_name)
def test_p2pk_proof_verification_matches_spec_verdict(vector):
    assert verify_p2pk_proof(Proof(**vector["proof"])) is vector["valid"]


@pytest.mark.parametrize("vector", SIG_ALL["messages"], ids=_name)
def test_sig_all_message_matches_spec_vector(vector):
    inputs, outputs = _inputs_outputs(vector["request"])
    message = sig_all_message(inputs, outputs, vector["request"].get("quote"))
    assert message == vector["msg_to_sign"]
    assert hashlib.sha256(message.encode()).hexdigest() == vector["sha256"]


@pytest.mark.parametrize("vector", VALID_SIG_ALL_REQUESTS, ids=_name)
def test_sig_all_witness_signatures_verify_on_sig_all_message(vector):
    inputs, outputs = _inputs_outputs(vector["request"])
    message = sig_all_message(inputs, outputs, vector["request"].get("quote")).encode()
    keys = _signing_keys(inputs[0].secret)
    signatures = json.loads(inputs[0].witness)["signatures"]
    assert signatures
    for signature in signatures:
        assert any(schnorr_verify(key, message, signature) for key in keys), signature
