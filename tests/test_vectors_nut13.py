"""NUT-13 spec vectors: deterministic secrets and blinding factors (v1 BIP32, v2 HMAC)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nuts.secrets import derive_secret_and_r, mnemonic_to_seed

VECTORS = json.loads((Path(__file__).parent / "vectors" / "nut13.json").read_text())
CASES = [
    pytest.param(version, row, id=f"{version}-counter_{row['counter']}")
    for version in ("v1_bip32", "v2_hmac")
    for row in VECTORS[version]["derivations"]
]


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    return {v: mnemonic_to_seed(VECTORS[v]["mnemonic"]) for v in ("v1_bip32", "v2_hmac")}


@pytest.mark.parametrize(("version", "row"), CASES)
def test_derived_secret_matches_spec_vector(seeds, version, row):
    secret, _ = derive_secret_and_r(seeds[version], VECTORS[version]["keyset_id"], row["counter"])
    assert secret == row["secret"]


@pytest.mark.parametrize(("version", "row"), CASES)
def test_derived_blinding_factor_matches_spec_vector(seeds, version, row):
    _, r = derive_secret_and_r(seeds[version], VECTORS[version]["keyset_id"], row["counter"])
    assert r.secret.hex() == row["r"]
