"""Smoke test of the test harness itself: the Nutshell mint and Nutshell's wallet."""

from __future__ import annotations

import json
import urllib.request

import bolt11
import pytest
from db_harness import TEST_MNEMONIC
from mint_harness import MINT_VERSIONS, make_invoice, make_invoice_without_amount
from nutshell_wallet import (
    NutshellWalletError,
    nutshell_derive_secrets,
    nutshell_mint_and_send,
    nutshell_receive,
)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.mark.mint
def test_mint_answers_info_and_has_v2_keyset(test_mint):
    info = _get(test_mint.url + "/v1/info")
    assert info["name"]
    keysets = _get(test_mint.url + "/v1/keysets")["keysets"]
    sat = [k for k in keysets if k["unit"] == "sat" and k["active"]]
    assert sat and sat[0]["id"].startswith("01") and len(sat[0]["id"]) == 66
    assert sat[0]["input_fee_ppk"] == 100


@pytest.mark.mint
def test_nutshell_mint_send_receive_v3_and_v4(test_mint):
    v3 = nutshell_mint_and_send(test_mint.url, 100, 7, version=3)
    v4 = nutshell_mint_and_send(test_mint.url, 100, 7, version=4)
    assert v3.startswith("cashuA")
    assert v4.startswith("cashuB")
    # 7 sat = 3 proofs; the receive swap costs ceil(3 * 100 / 1000) = 1 sat
    assert nutshell_receive(test_mint.url, v4) == 6
    assert nutshell_receive(test_mint.url, v3) == 6
    with pytest.raises(NutshellWalletError, match="already spent"):
        nutshell_receive(test_mint.url, v4)


def test_nutshell_derive_secrets_is_deterministic():
    keyset_v2 = "015ba18a8adcd02e715a58358eb618da4a4b3791151a4bee5e968bb88406ccf76a"
    first = nutshell_derive_secrets(TEST_MNEMONIC, keyset_v2, [0, 1, 2])
    assert first == nutshell_derive_secrets(TEST_MNEMONIC, keyset_v2, [0, 1, 2])
    assert len(first) == 3 and len({s for s, _ in first}) == 3
    assert all(len(s) == 64 and len(r) == 64 for s, r in first)
    # NUT-13 spec vectors (v2 HMAC and v1 BIP32 keyset ids), counter 0
    assert first[0][0] == "db5561a07a6e6490f8dadeef5be4e92f7cebaecf2f245356b5b2a4ec40687298"
    v1 = nutshell_derive_secrets(TEST_MNEMONIC, "009a1f293253e41e", [0])
    assert v1[0][0] == "485875df74771877439ac06339e284c3acfcd9be7abf3bc20b516faeadfe77ae"


def test_make_invoice():
    inv = bolt11.decode(make_invoice(21, expiry=600))
    assert inv.amount_msat == 21_000
    assert inv.expiry == 600
    assert len(inv.payment_hash) == 64
    assert bolt11.decode(make_invoice_without_amount()).amount_msat is None


@pytest.mark.mint
def test_fresh_mint_restart_keeps_database_and_keys(fresh_mint):
    mint = fresh_mint(env_overrides={"FAKEWALLET_PAY_INVOICE_STATE": "PENDING"})
    keysets = _get(mint.url + "/v1/keysets")
    url = mint.url
    mint.restart({"FAKEWALLET_PAYMENT_STATE": "SETTLED"})
    assert mint.url == url
    assert mint.env()["FAKEWALLET_PAY_INVOICE_STATE"] == "PENDING"
    assert _get(mint.url + "/v1/keysets") == keysets


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.mint
def test_any_mint_reports_its_version_and_makes_a_mint_quote(any_mint):
    assert any_mint.version in MINT_VERSIONS
    assert _get(any_mint.url + "/v1/info")["version"] == f"Nutshell/{any_mint.version}"
    quote = _post(any_mint.url + "/v1/mint/quote/bolt11", {"amount": 10, "unit": "sat"})
    assert quote["quote"] and quote["request"].startswith("lnbc")
    assert quote["amount"] == 10 and quote["unit"] == "sat"


@pytest.mark.mint
def test_mint21_restart_keeps_its_version(fresh_mint):
    mint = fresh_mint(version="0.21.0")
    assert mint.version == "0.21.0"
    mint.restart({"FAKEWALLET_PAYMENT_STATE": "SETTLED"})
    assert mint.version == "0.21.0"
    assert _get(mint.url + "/v1/info")["version"] == "Nutshell/0.21.0"
    with pytest.raises(ValueError, match="unsupported Nutshell version"):
        fresh_mint(version="0.19.0")
