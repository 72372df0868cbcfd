"""Deterministic secrets (NUT-13) and the per-wallet seed of docs/design.md section 10.

Every output we ever create is derived from (seed, keyset id, counter), so a
wallet can be restored from its mnemonic and the mint alone (NUT-09).

Keyset v2 ids ('01...') use the HMAC-SHA256 derivation, v1 ids ('00...') the
BIP32 paths m/129372'/0'/{keyset}'/{counter}'/{0|1}. The bip32 package pins an
older coincurve, and the private-key walk below is all we need of BIP32.
"""

from __future__ import annotations

import hashlib
import hmac

from coincurve import PrivateKey
from mnemonic import Mnemonic

from nuts.crypto import SECP256K1_N

_BIP39 = Mnemonic("english")
_HARDENED = 0x80000000
WALLET_SEED_DOMAIN = b"cashu-worker/wallet/"


class InvalidMnemonicError(ValueError):
    """The mnemonic is not a valid BIP39 English phrase (checksum or words)."""


def validate_mnemonic(mnemonic: str) -> str:
    normalized = " ".join(mnemonic.split())
    if not _BIP39.check(normalized):
        raise InvalidMnemonicError("not a valid BIP39 mnemonic")
    return normalized


def mnemonic_to_seed(mnemonic: str, passphrase: str = "") -> bytes:
    """BIP39 seed (PBKDF2-HMAC-SHA512, 2048 rounds)."""
    return Mnemonic.to_seed(mnemonic, passphrase)


def derive_wallet_mnemonic(master_mnemonic: str, wallet_id: str) -> str:
    """The wallet's own 24-word mnemonic. Fixed forever: changing it orphans every wallet.

    entropy = HMAC-SHA512(key=BIP39 seed of the master, msg="cashu-worker/wallet/" + id)[:32]
    """
    master_seed = mnemonic_to_seed(validate_mnemonic(master_mnemonic))
    digest = hmac.new(master_seed, WALLET_SEED_DOMAIN + wallet_id.encode(), hashlib.sha512)
    return _BIP39.to_mnemonic(digest.digest()[:32])


def derive_wallet_seed(master_mnemonic: str, wallet_id: str) -> bytes:
    """The wallet's NUT-13 seed: the BIP39 seed of its mnemonic, empty passphrase."""
    return mnemonic_to_seed(derive_wallet_mnemonic(master_mnemonic, wallet_id))


def _bip32_private_key(seed: bytes, path: list[int]) -> bytes:
    """BIP32 private child derivation along `path` (hardened indexes have the top bit set)."""
    digest = hmac.new(b"Bitcoin seed", seed, hashlib.sha512).digest()
    key, chain = digest[:32], digest[32:]
    for index in path:
        if index & _HARDENED:
            data = b"\x00" + key + index.to_bytes(4, "big")
        else:
            data = PrivateKey(key).public_key.format() + index.to_bytes(4, "big")
        digest = hmac.new(chain, data, hashlib.sha512).digest()
        child = (int.from_bytes(digest[:32], "big") + int.from_bytes(key, "big")) % SECP256K1_N
        key, chain = child.to_bytes(32, "big"), digest[32:]
    return key


def _derive_v1(seed: bytes, keyset_id: str, counter: int) -> tuple[bytes, bytes]:
    keyset_index = int.from_bytes(bytes.fromhex(keyset_id), "big") % (2**31 - 1)
    base = [129372 | _HARDENED, 0 | _HARDENED, keyset_index | _HARDENED, counter | _HARDENED]
    return _bip32_private_key(seed, [*base, 0]), _bip32_private_key(seed, [*base, 1])


def _derive_v2(seed: bytes, keyset_id: str, counter: int) -> tuple[bytes, bytes]:
    message = b"Cashu_KDF_HMAC_SHA256" + bytes.fromhex(keyset_id) + counter.to_bytes(8, "big")
    secret = hmac.new(seed, message + b"\x00", hashlib.sha256).digest()
    r_digest = hmac.new(seed, message + b"\x01", hashlib.sha256).digest()
    r = int.from_bytes(r_digest, "big") % SECP256K1_N
    return secret, r.to_bytes(32, "big")


def derive_secret_and_r(seed: bytes, keyset_id: str, counter: int) -> tuple[str, PrivateKey]:
    """The secret (as the hex string that goes into the proof) and blinding factor r."""
    if keyset_id.startswith("01"):
        secret, r = _derive_v2(seed, keyset_id, counter)
    elif keyset_id.startswith("00"):
        secret, r = _derive_v1(seed, keyset_id, counter)
    else:
        raise ValueError(f"unsupported keyset id version {keyset_id[:2]!r}")
    return secret.hex(), PrivateKey(r)


def derive_labelled_key(seed: bytes, label: bytes) -> PrivateKey:
    """A private key for one purpose (the wallet's P2PK key, a NUT-20 quote key), from the seed.

    Derived, never stored: the seed alone brings every such key back.
    """
    digest = hmac.new(seed, b"cashu-worker/" + label, hashlib.sha256).digest()
    return PrivateKey((int.from_bytes(digest, "big") % SECP256K1_N).to_bytes(32, "big"))


def wallet_p2pk_key(seed: bytes) -> PrivateKey:
    """The key senders lock tokens to (NUT-11); its public half is in cashu.wallet.info."""
    return derive_labelled_key(seed, b"p2pk")
