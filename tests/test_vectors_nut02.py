"""NUT-01/02 spec vectors: keyset ids (v1, v2), short ids, and keysets a wallet must reject."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nuts.errors import KeysetError
from nuts.keysets import (
    Keyset,
    derive_keyset_id_v1,
    derive_keyset_id_v2,
    expand_keyset_id,
    short_keyset_id,
)
from nuts.models import KeysetInfo, KeysetKeys

VECTORS = json.loads((Path(__file__).parent / "vectors" / "nut02.json").read_text())
V1 = VECTORS["keyset_id_v1"]
V2 = VECTORS["keyset_id_v2"]
ALL_IDS = [v["id"] for v in V1 + V2]


def _keys(vector: dict) -> dict[int, str]:
    return {int(amount): key for amount, key in vector["keys"].items()}


def _name(vector: dict) -> str:
    return vector["name"]


@pytest.mark.parametrize("vector", V1, ids=_name)
def test_keyset_id_v1_matches_spec_vector(vector):
    assert derive_keyset_id_v1(_keys(vector)) == vector["id"]


@pytest.mark.parametrize("vector", V2, ids=_name)
def test_keyset_id_v2_matches_spec_vector(vector):
    derived = derive_keyset_id_v2(
        _keys(vector),
        vector["unit"],
        input_fee_ppk=vector["input_fee_ppk"],
        final_expiry=vector["final_expiry"],
    )
    assert derived == vector["id"]


@pytest.mark.parametrize("vector", V1 + V2, ids=_name)
def test_keyset_from_wire_accepts_spec_keyset(vector):
    wire = KeysetKeys(
        id=vector["id"],
        unit=vector.get("unit", "sat"),
        keys=_keys(vector),
        final_expiry=vector.get("final_expiry"),
    )
    info = KeysetInfo(id=vector["id"], unit=wire.unit, input_fee_ppk=vector.get("input_fee_ppk", 0))
    keyset = Keyset.from_wire(wire, info)
    assert keyset.id == vector["id"]
    assert set(keyset.keys) == set(_keys(vector))


@pytest.mark.parametrize("vector", V2, ids=_name)
def test_short_keyset_id_is_first_eight_bytes(vector):
    assert short_keyset_id(vector["id"]) == vector["id"][:16]


@pytest.mark.parametrize("vector", V2, ids=_name)
def test_short_keyset_id_expands_to_full_spec_id(vector):
    assert expand_keyset_id(vector["id"][:16], ALL_IDS) == vector["id"]


@pytest.mark.parametrize("vector", VECTORS["invalid_keysets"], ids=_name)
def test_invalid_keyset_vector_is_rejected(vector):
    # The id is derived from the very keys given, so only the key check can reject it.
    keys = _keys(vector)
    wire = KeysetKeys(id=derive_keyset_id_v1(keys), unit="sat", keys=keys)
    with pytest.raises(KeysetError):
        Keyset.from_wire(wire)


@pytest.mark.parametrize("vector", VECTORS["valid_keysets_nut01"], ids=_name)
def test_valid_nut01_keyset_is_accepted(vector):
    keys = _keys(vector)
    keyset = Keyset.from_wire(KeysetKeys(id=derive_keyset_id_v1(keys), unit="sat", keys=keys))
    assert max(keyset.keys) == max(keys)
