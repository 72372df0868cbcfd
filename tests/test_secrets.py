"""nuts.secrets: per-wallet mnemonics derived from the master mnemonic, NUT-13 outputs."""

from __future__ import annotations

import pytest
from db_harness import TEST_MNEMONIC as MASTER
from mnemonic import Mnemonic

from nuts.crypto import blind_message
from nuts.outputs import derive_outputs
from nuts.secrets import (
    InvalidMnemonicError,
    derive_secret_and_r,
    derive_wallet_mnemonic,
    derive_wallet_seed,
    mnemonic_to_seed,
    validate_mnemonic,
)

KEYSET_V2 = "01" + "ab" * 32
OTHER_KEYSET_V2 = "01" + "cd" * 32
KEYSET_V1 = "009a1f293253e41e"


@pytest.fixture(scope="module")
def seed() -> bytes:
    return derive_wallet_seed(MASTER, "wallet-1")


# --- wallet mnemonics -----------------------------------------------------------------------------


def test_wallet_mnemonic_is_deterministic():
    assert derive_wallet_mnemonic(MASTER, "wallet-1") == derive_wallet_mnemonic(MASTER, "wallet-1")


def test_wallet_mnemonic_has_24_words():
    assert len(derive_wallet_mnemonic(MASTER, "wallet-1").split()) == 24


def test_wallet_mnemonic_is_valid_bip39():
    assert Mnemonic("english").check(derive_wallet_mnemonic(MASTER, "wallet-1"))


def test_wallet_mnemonic_differs_per_wallet_id():
    mnemonics = {derive_wallet_mnemonic(MASTER, wallet_id) for wallet_id in ("a", "b", "A", "a ")}
    assert len(mnemonics) == 4


def test_wallet_mnemonic_differs_per_master_mnemonic():
    # A second valid master, derived rather than invented: the wallet mnemonics are valid BIP39.
    other_master = derive_wallet_mnemonic(MASTER, "another-master")
    assert derive_wallet_mnemonic(other_master, "wallet-1") != derive_wallet_mnemonic(
        MASTER, "wallet-1"
    )


def test_wallet_mnemonic_ignores_extra_whitespace_in_the_master():
    messy = "  " + MASTER.replace(" ", "  \n") + " "
    assert derive_wallet_mnemonic(messy, "wallet-1") == derive_wallet_mnemonic(MASTER, "wallet-1")


def test_wallet_seed_is_the_bip39_seed_of_the_wallet_mnemonic():
    expected = mnemonic_to_seed(derive_wallet_mnemonic(MASTER, "wallet-1"))
    assert derive_wallet_seed(MASTER, "wallet-1") == expected
    assert len(expected) == 64


def test_mnemonic_to_seed_matches_bip39():
    assert mnemonic_to_seed(MASTER) == Mnemonic.to_seed(MASTER, "")
    assert mnemonic_to_seed(MASTER, "pass") != mnemonic_to_seed(MASTER)


@pytest.mark.parametrize(
    "master",
    [
        "",
        "half depart obvious",
        MASTER.rsplit(" ", 1)[0] + " half",  # bad checksum
        MASTER.replace("half", "halff"),  # not a BIP39 word
    ],
    ids=["empty", "too-short", "bad-checksum", "unknown-word"],
)
def test_invalid_master_mnemonic_raises(master):
    with pytest.raises(InvalidMnemonicError):
        derive_wallet_mnemonic(master, "wallet-1")
    with pytest.raises(InvalidMnemonicError):
        derive_wallet_seed(master, "wallet-1")


def test_invalid_mnemonic_error_is_a_value_error():
    with pytest.raises(ValueError):
        validate_mnemonic("not a mnemonic")


# --- NUT-13 derivation ----------------------------------------------------------------------------


@pytest.mark.parametrize("keyset_id", ["02" + "ab" * 32, "ff" * 8, ""])
def test_derive_secret_and_r_rejects_an_unknown_keyset_version(seed, keyset_id):
    with pytest.raises(ValueError, match="unsupported keyset id version"):
        derive_secret_and_r(seed, keyset_id, 0)


@pytest.mark.parametrize("keyset_id", [KEYSET_V2, KEYSET_V1])
def test_derive_secret_and_r_is_deterministic(seed, keyset_id):
    first_secret, first_r = derive_secret_and_r(seed, keyset_id, 7)
    second_secret, second_r = derive_secret_and_r(seed, keyset_id, 7)
    assert first_secret == second_secret
    assert first_r.secret == second_r.secret
    assert len(bytes.fromhex(first_secret)) == 32


def test_v2_outputs_are_deterministic_per_seed_keyset_and_counter(seed):
    assert derive_outputs(seed, KEYSET_V2, [1, 2, 4], 10) == derive_outputs(
        seed, KEYSET_V2, [1, 2, 4], 10
    )


def test_v2_outputs_differ_across_counters(seed):
    outputs = derive_outputs(seed, KEYSET_V2, [1] * 20, 0)
    assert [o.counter for o in outputs] == list(range(20))
    assert len({o.secret for o in outputs}) == 20
    assert len({o.r for o in outputs}) == 20
    assert len({o.B_ for o in outputs}) == 20


def test_v2_output_depends_on_its_counter_not_its_position_in_the_batch(seed):
    batch = derive_outputs(seed, KEYSET_V2, [1, 2, 4, 8], 5)
    alone = derive_outputs(seed, KEYSET_V2, [4], 7)
    assert (batch[2].secret, batch[2].r, batch[2].B_) == (alone[0].secret, alone[0].r, alone[0].B_)


def test_v2_output_secret_does_not_depend_on_its_amount(seed):
    [one] = derive_outputs(seed, KEYSET_V2, [1], 3)
    [eight] = derive_outputs(seed, KEYSET_V2, [8], 3)
    assert (one.secret, one.r, one.B_) == (eight.secret, eight.r, eight.B_)
    assert (one.amount, eight.amount) == (1, 8)


def test_v2_outputs_differ_across_keysets(seed):
    [mine] = derive_outputs(seed, KEYSET_V2, [1], 0)
    [other] = derive_outputs(seed, OTHER_KEYSET_V2, [1], 0)
    assert mine.secret != other.secret
    assert mine.r != other.r


def test_v2_outputs_differ_across_wallet_seeds(seed):
    other_seed = derive_wallet_seed(MASTER, "wallet-2")
    assert derive_outputs(seed, KEYSET_V2, [1], 0)[0].secret != (
        derive_outputs(other_seed, KEYSET_V2, [1], 0)[0].secret
    )


def test_derived_output_is_the_blinded_derived_secret(seed):
    [output] = derive_outputs(seed, KEYSET_V2, [2], 42)
    secret, r = derive_secret_and_r(seed, KEYSET_V2, 42)
    blinded, _ = blind_message(secret.encode(), r)
    assert output.secret == secret
    assert output.r == r.secret.hex()
    assert blinded.format().hex() == output.B_
    assert output.keyset_id == KEYSET_V2
    assert output.blinded_message.amount == 2
