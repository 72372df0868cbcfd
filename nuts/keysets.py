"""Keysets (NUT-01/02): ids derived from the keys, verified before a keyset is trusted.

A mint that serves keys which do not hash to the id it claims could sign with a
key we never checked; such a keyset is rejected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from coincurve import PublicKey

from nuts.errors import (
    AmbiguousKeysetIdError,
    KeysetIdMismatchError,
    UnknownKeysetError,
)
from nuts.models import KeysetInfo, KeysetKeys

SHORT_ID_HEX_LEN = 16  # 8 bytes: how V4 tokens may carry a v2 id


def _hex(key: str | PublicKey) -> str:
    return key.format().hex() if isinstance(key, PublicKey) else key.lower()


def _compressed_point(key: str) -> PublicKey:
    """NUT-01: keys are 33-byte compressed points; anything else is rejected."""
    if len(key) != 66 or key[:2] not in ("02", "03"):
        raise ValueError(f"not a compressed public key: {key[:10]}...")
    return PublicKey(bytes.fromhex(key))


def derive_keyset_id_v1(keys: Mapping[int, str | PublicKey]) -> str:
    """'00' + the first 14 hex chars of sha256(concatenated compressed keys by amount)."""
    joined = b"".join(bytes.fromhex(_hex(keys[amount])) for amount in sorted(keys))
    return "00" + hashlib.sha256(joined).hexdigest()[:14]


def derive_keyset_id_v2(
    keys: Mapping[int, str | PublicKey],
    unit: str,
    input_fee_ppk: int = 0,
    final_expiry: int | None = None,
) -> str:
    """'01' + sha256("amount:key,..." + "|unit:" + ["|input_fee_ppk:"] + ["|final_expiry:"])."""
    preimage = ",".join(f"{amount}:{_hex(keys[amount])}" for amount in sorted(keys))
    preimage += f"|unit:{unit.lower()}"
    if input_fee_ppk:
        preimage += f"|input_fee_ppk:{input_fee_ppk}"
    if final_expiry:
        preimage += f"|final_expiry:{final_expiry}"
    return "01" + hashlib.sha256(preimage.encode()).hexdigest()


def derive_keyset_id(
    keyset_id: str,
    keys: Mapping[int, str | PublicKey],
    unit: str,
    input_fee_ppk: int = 0,
    final_expiry: int | None = None,
) -> str:
    """The id these keys should have, in the version the claimed id uses."""
    if keyset_id.startswith("00"):
        return derive_keyset_id_v1(keys)
    if keyset_id.startswith("01"):
        return derive_keyset_id_v2(keys, unit, input_fee_ppk, final_expiry)
    raise KeysetIdMismatchError(f"unsupported keyset id version {keyset_id[:2]!r}")


def short_keyset_id(keyset_id: str) -> str:
    """The 8-byte form a V4 token may carry; v1 ids are already that short."""
    return keyset_id[:SHORT_ID_HEX_LEN]


def expand_keyset_id(keyset_id: str, known_ids: Iterable[str]) -> str:
    """Full id for a (possibly short) id; unknown or ambiguous ids are errors."""
    keyset_id = keyset_id.lower()
    matches = {known for known in known_ids if known.lower().startswith(keyset_id)}
    if keyset_id in matches:
        return keyset_id
    if not matches:
        raise UnknownKeysetError(f"no known keyset has id {keyset_id}")
    if len(matches) > 1:
        raise AmbiguousKeysetIdError(f"short keyset id {keyset_id} matches {sorted(matches)}")
    return matches.pop()


@dataclass(frozen=True)
class Keyset:
    """A verified keyset: the public key for each amount, its unit and input fee."""

    id: str
    unit: str
    keys: dict[int, PublicKey]
    input_fee_ppk: int = 0
    active: bool = True
    final_expiry: int | None = None
    keys_hex: dict[int, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_wire(cls, keys: KeysetKeys, info: KeysetInfo | None = None) -> Keyset:
        """Build from GET /v1/keys (and /v1/keysets for fee and state), verifying the id."""
        fee = info.input_fee_ppk if info else 0
        expiry = (
            keys.final_expiry
            if keys.final_expiry is not None
            else (info.final_expiry if info else None)
        )
        expected = derive_keyset_id(keys.id, keys.keys, keys.unit, fee, expiry)
        if expected != keys.id.lower():
            raise KeysetIdMismatchError(
                f"keyset {keys.id} claims an id its keys do not hash to ({expected})"
            )
        try:
            points = {amount: _compressed_point(key) for amount, key in keys.keys.items()}
        except ValueError as exc:
            raise KeysetIdMismatchError(f"keyset {keys.id} has an invalid key: {exc}") from exc
        return cls(
            id=keys.id.lower(),
            unit=keys.unit,
            keys=points,
            input_fee_ppk=fee,
            active=info.active if info else True,
            final_expiry=expiry,
            keys_hex={amount: key.lower() for amount, key in keys.keys.items()},
        )

    @property
    def amounts(self) -> list[int]:
        """Denominations, largest first."""
        return sorted(self.keys, reverse=True)

    def public_key(self, amount: int) -> PublicKey:
        try:
            return self.keys[amount]
        except KeyError:
            raise UnknownKeysetError(f"keyset {self.id} has no key for amount {amount}") from None


class KeysetSource(Protocol):
    def keysets(self) -> list[KeysetInfo]: ...

    def keys(self, keyset_id: str | None = None) -> list[KeysetKeys]: ...


def fetch_keysets(mint: KeysetSource) -> dict[str, Keyset]:
    """Every keyset the mint lists, each with its keys fetched and its id verified."""
    infos = {info.id: info for info in mint.keysets()}
    active_keys = {keys.id: keys for keys in mint.keys()}  # noqa: SIM118 (not a dict)
    keysets = {}
    for keyset_id, info in infos.items():
        keys = active_keys.get(keyset_id) or mint.keys(keyset_id)[0]
        keysets[keyset_id] = Keyset.from_wire(keys, info)
    return keysets
