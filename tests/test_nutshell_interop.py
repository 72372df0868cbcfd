"""Interop with the reference implementation: Nutshell's own wallet (cashu 0.20.2).

Tokens written here are received by Nutshell; Nutshell's V3 and V4 tokens are
read, DLEQ-verified and redeemed here; NUT-13 secrets agree for one mnemonic.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from coincurve import PrivateKey
from db_harness import TEST_MNEMONIC
from mint_harness import RunningMint
from nutshell_wallet import (
    nutshell_derive_secrets,
    nutshell_mint_and_send,
    nutshell_p2pk_lock_and_send,
    nutshell_receive,
)
from protocol_wallet import ProtocolWallet, swap_to

from nuts.amounts import input_fee
from nuts.client import MintClient
from nuts.models import ProofSpentState
from nuts.outputs import verify_proof_dleq
from nuts.p2pk import sign_p2pk_inputs
from nuts.secrets import derive_secret_and_r, mnemonic_to_seed
from nuts.tokens import Token, decode_token, encode_token_v3, encode_token_v4, expand_keyset_ids

pytestmark = pytest.mark.mint


@pytest.fixture
def wallet(test_mint: RunningMint) -> Iterator[ProtocolWallet]:
    client = MintClient(test_mint.url)
    yield ProtocolWallet(client)
    client.close()


@pytest.mark.parametrize("encode", [encode_token_v4, encode_token_v3], ids=["v4", "v3"])
def test_token_written_here_is_received_by_nutshell(wallet: ProtocolWallet, encode) -> None:
    proofs = wallet.mint(16)
    token = encode(Token(mint=wallet.client.url, unit="sat", proofs=proofs, memo="interop"))

    received = nutshell_receive(wallet.client.url, token)

    assert received == 16 - input_fee(proofs, wallet.fees)
    assert wallet.states(proofs) == {ProofSpentState.SPENT}


@pytest.mark.parametrize("version", [4, 3])
def test_nutshell_token_is_read_verified_and_redeemed_here(
    wallet: ProtocolWallet, version: int
) -> None:
    text = nutshell_mint_and_send(wallet.client.url, 64, 21, version=version)

    token = expand_keyset_ids(decode_token(text), wallet.keysets)
    proofs = swap_to(wallet, token.proofs)

    assert text.startswith("cashuB" if version == 4 else "cashuA")
    assert token.mint == wallet.client.url and token.unit == "sat" and token.amount == 21
    assert all(p.dleq is not None for p in token.proofs)
    assert all(verify_proof_dleq(p, wallet.keysets[p.id]) for p in token.proofs)
    assert sum(p.amount for p in proofs) == 21 - input_fee(token.proofs, wallet.fees)
    assert wallet.states(token.proofs) == {ProofSpentState.SPENT}


def test_tampered_dleq_in_a_nutshell_token_fails_verification(wallet: ProtocolWallet) -> None:
    text = nutshell_mint_and_send(wallet.client.url, 8, 8, version=4)
    token = expand_keyset_ids(decode_token(text), wallet.keysets)
    proof = token.proofs[0]
    assert proof.dleq is not None
    forged = proof.model_copy(update={"amount": proof.amount * 2 if proof.amount < 2**20 else 1})

    assert verify_proof_dleq(proof, wallet.keysets[proof.id])
    assert not verify_proof_dleq(forged, wallet.keysets[proof.id])


def test_p2pk_token_nutshell_locked_to_our_key_is_signed_and_redeemed(
    wallet: ProtocolWallet,
) -> None:
    key = PrivateKey()
    text = nutshell_p2pk_lock_and_send(wallet.client.url, 8, key.public_key.format().hex())
    token = expand_keyset_ids(decode_token(text), wallet.keysets)

    proofs = swap_to(wallet, sign_p2pk_inputs(token.proofs, key))

    assert sum(p.amount for p in proofs) == 8 - input_fee(token.proofs, wallet.fees)
    assert wallet.states(token.proofs) == {ProofSpentState.SPENT}


@pytest.mark.parametrize(
    "keyset_id",
    ["009a1f293253e41e", "015ba18a8adcd02e715a58358eb618da4a4b3791151a4bee5e968bb88406ccf76a"],
    ids=["v1-bip32", "v2-hmac"],
)
def test_secrets_derived_here_equal_nutshells(keyset_id: str) -> None:
    counters = [0, 1, 2, 7, 1000]
    seed = mnemonic_to_seed(TEST_MNEMONIC)

    ours = [derive_secret_and_r(seed, keyset_id, c) for c in counters]

    theirs = nutshell_derive_secrets(TEST_MNEMONIC, keyset_id, counters)
    assert [(secret, r.secret.hex()) for secret, r in ours] == theirs
