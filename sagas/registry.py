"""The mint registry: which mints we know, which we trust, and their verified keysets.

A mint that is not trusted is never contacted (docs/design.md rule 8): every step
that talks to a mint first calls `require_trusted_mint`. Keyset sync stores
keysets only after their ids were verified against their keys, and never
touches a counter.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import Mint, Operation, ProofState, StoredKeyset, StoredProof
from nuts.client import normalize_mint_url
from nuts.errors import CashuError
from nuts.keysets import Keyset, fetch_keysets
from nuts.models import KeysetInfo, KeysetKeys
from sagas.engine import SagaContext
from sagas.errors import (
    MintInUseError,
    UnknownMintError,
    UnsupportedUnitError,
    UntrustedMintError,
)


def mint_view(mint: Mint, keysets: list[StoredKeyset]) -> dict[str, Any]:
    return {
        "url": mint.url,
        "trusted": mint.trusted,
        "info": mint.info,
        "keysets": [
            {
                "id": k.id,
                "unit": k.unit,
                "active": k.active,
                "input_fee_ppk": k.input_fee_ppk,
                "final_expiry": k.final_expiry,
            }
            for k in sorted(keysets, key=lambda k: (k.unit, not k.active, k.id))
        ],
    }


def add_mint(ctx: SagaContext, url: str, trusted: bool = True) -> dict:
    """Register (or refresh) a mint: its NUT-06 info and its verified keysets, asked for
    before the transaction that stores them (none is open while the mint is asked)."""
    url = normalize_mint_url(url)
    client = ctx.mint_client(url)
    info, keysets = client.info().model_dump(exclude_none=True), fetch_keysets(client)
    with ctx.uow() as session:
        session.execute(
            insert(Mint)
            .values(url=url, trusted=trusted, info=info)
            .on_conflict_do_update(index_elements=["url"], set_={"trusted": trusted, "info": info})
        )
        _store_keysets(session, url, keysets)
        return get_mint(session, url)


def sync_keysets(ctx: SagaContext, url: str) -> dict[str, Keyset]:
    """Fetch and verify the mint's keysets, then store them (active flags and fees may
    change)."""
    keysets = fetch_keysets(ctx.mint_client(url))
    with ctx.uow() as session:
        _store_keysets(session, url, keysets)
    return keysets


def _store_keysets(session: Session, url: str, keysets: dict[str, Keyset]) -> None:
    for keyset in keysets.values():
        values = {
            "unit": keyset.unit,
            "active": keyset.active,
            "input_fee_ppk": keyset.input_fee_ppk,
            "final_expiry": keyset.final_expiry,
        }
        session.execute(
            insert(StoredKeyset)
            .values(
                mint_url=url,
                id=keyset.id,
                keys={str(a): k for a, k in keyset.keys_hex.items()},
                **values,
            )
            .on_conflict_do_update(index_elements=["mint_url", "id"], set_=values)
        )
    # A keyset the mint no longer lists is not one to make new outputs for (a rotation,
    # another mint now at this URL): kept, for the proofs of it we may hold, but inactive.
    session.execute(
        update(StoredKeyset)
        .where(
            StoredKeyset.mint_url == url, StoredKeyset.id.not_in(list(keysets)), StoredKeyset.active
        )
        .values(active=False)
    )


def refresh_all_keysets(ctx: SagaContext) -> dict[str, Any]:
    """Re-sync the keysets of every trusted mint (rotations, fee changes); counters untouched.

    One mint failing does not stop the others; it is reported and tried next time.
    """
    with ctx.uow() as session:
        urls = list(session.scalars(select(Mint.url).where(Mint.trusted).order_by(Mint.url)))
    refreshed, failed = [], {}
    for url in urls:
        try:
            sync_keysets(ctx, url)
            refreshed.append(url)
        except (CashuError, ValueError) as exc:
            failed[url] = str(exc)
    return {"refreshed": refreshed, "failed": failed}


# Nutshell serves asynchronous melts (NUT-05 prefer_async) from 0.20.2, but only from 0.20.3
# on does it commit PENDING before it answers: before, a check right after the answer could
# read the quote UNPAID and the inputs unspent, and a wallet would release inputs the mint
# was about to spend. Other mints: the pay step waits for the payment (cashu.lightning).
ASYNC_MELTS_SINCE = {"Nutshell": (0, 20, 3)}


def pays_in_background(session: Session, url: str) -> bool:
    """Whether the mint, as its info names it, pays a melt in the background safely."""
    info = session.scalar(select(Mint.info).where(Mint.url == url)) or {}
    name, _, version = str(info.get("version") or "").partition("/")
    since = ASYNC_MELTS_SINCE.get(name)
    try:
        parts = tuple(int(part) for part in version.split(".")[:3])
    except ValueError:
        return False
    return since is not None and parts >= since


def get_mint(session: Session, url: str) -> dict:
    url = normalize_mint_url(url)
    mint = session.get(Mint, url)
    if mint is None:
        raise UnknownMintError(f"mint {url} is not registered")
    keysets = list(session.scalars(select(StoredKeyset).where(StoredKeyset.mint_url == url)))
    return mint_view(mint, keysets)


def list_mints(session: Session) -> list[dict]:
    return [
        get_mint(session, mint.url) for mint in session.scalars(select(Mint).order_by(Mint.url))
    ]


def set_trusted(session: Session, url: str, trusted: bool) -> dict:
    url = normalize_mint_url(url)
    mint = session.get(Mint, url, with_for_update=True)
    if mint is None:
        raise UnknownMintError(f"mint {url} is not registered")
    mint.trusted = trusted
    session.flush()
    return get_mint(session, url)


def remove_mint(session: Session, url: str) -> dict:
    """Forget a mint nothing of ours depends on any more: no proof of value there, no
    operation open. Its keysets go with it; finished operations keep their history. A mint
    that is gone while it still holds money stays, untrusted (set_trusted), on the books."""
    url = normalize_mint_url(url)
    mint = session.get(Mint, url, with_for_update=True)
    if mint is None:
        raise UnknownMintError(f"mint {url} is not registered")
    held = session.scalar(
        select(func.coalesce(func.sum(StoredProof.amount), 0)).where(
            StoredProof.mint_url == url, StoredProof.state != ProofState.SPENT
        )
    )
    open_ops = session.scalar(
        select(func.count())
        .select_from(Operation)
        .where(
            Operation.mint_url == url,
            Operation.state.not_in(("finalized", "rolled_back", "failed")),
        )
    )
    if held or open_ops:
        raise MintInUseError(
            f"mint {url} still holds {held} (in its units) of ours and has {open_ops} open "
            "operation(s): settle them, or untrust the mint to keep it on the books"
        )
    view = get_mint(session, url)
    session.execute(delete(StoredKeyset).where(StoredKeyset.mint_url == url))
    session.delete(mint)
    session.flush()
    return view


def require_trusted_mint(session: Session, url: str) -> str:
    """The normalized URL of a registered, trusted mint; otherwise a typed error."""
    url = normalize_mint_url(url)
    _check_trust(url, session.scalar(select(Mint.trusted).where(Mint.url == url)))
    return url


def trusted_keysets(session: Session, url: str) -> tuple[str, dict[str, Keyset]]:
    """require_trusted_mint and load_keysets in one query: the URL and the keysets."""
    url = normalize_mint_url(url)
    rows = session.connection().execute(_TRUSTED_WITH_KEYSETS, {"url": url}).all()
    _check_trust(url, rows[0].trusted if rows else None)
    return url, _keysets(session, url, [row for row in rows if row.id is not None])


def _check_trust(url: str, trusted: bool | None) -> None:
    if trusted is None:
        raise UnknownMintError(f"mint {url} is not registered; add it first")
    if not trusted:
        raise UntrustedMintError(f"mint {url} is not trusted; it will not be contacted")


# Keys never change under a verified id, so parsed keysets are cached per process.
_parsed: dict[tuple[str, str], Keyset] = {}
_parsed_lock = threading.Lock()
_KEYSET_COLUMNS = (
    StoredKeyset.id,
    StoredKeyset.unit,
    StoredKeyset.active,
    StoredKeyset.input_fee_ppk,
    StoredKeyset.final_expiry,
)
_TRUSTED_WITH_KEYSETS = (
    select(Mint.trusted, *_KEYSET_COLUMNS)
    .outerjoin(StoredKeyset, StoredKeyset.mint_url == Mint.url)
    .where(Mint.url == bindparam("url"))
)
_KEYSETS_OF_MINT = select(*_KEYSET_COLUMNS).where(StoredKeyset.mint_url == bindparam("url"))


def load_keysets(session: Session, url: str) -> dict[str, Keyset]:
    """The mint's stored keysets as nuts Keysets (active flag and fee as last synced).

    Only the small columns are read each time; a keyset's keys once per process.
    """
    rows = session.connection().execute(_KEYSETS_OF_MINT, {"url": url}).all()
    return _keysets(session, url, rows)


def _keysets(session: Session, url: str, rows: Sequence[Any]) -> dict[str, Keyset]:
    keysets = {}
    for row in rows:
        with _parsed_lock:
            cached = _parsed.get((url, row.id))
        if cached is None:
            keys = session.scalar(
                select(StoredKeyset.keys).where(
                    StoredKeyset.mint_url == url, StoredKeyset.id == row.id
                )
            )
            cached = Keyset.from_wire(
                KeysetKeys(id=row.id, unit=row.unit, keys=keys, final_expiry=row.final_expiry),
                KeysetInfo(
                    id=row.id,
                    unit=row.unit,
                    active=row.active,
                    input_fee_ppk=row.input_fee_ppk,
                    final_expiry=row.final_expiry,
                ),
            )
            with _parsed_lock:
                _parsed[(url, row.id)] = cached
        keysets[row.id] = Keyset(
            id=cached.id,
            unit=cached.unit,
            keys=cached.keys,
            input_fee_ppk=row.input_fee_ppk,
            active=row.active,
            final_expiry=row.final_expiry,
            keys_hex=cached.keys_hex,
        )
    return keysets


def active_keyset(keysets: dict[str, Keyset], unit: str, url: str) -> Keyset:
    """The keyset new outputs go to: active, of this unit, cheapest input fee."""
    active = [k for k in keysets.values() if k.active and k.unit == unit]
    if not active:
        raise UnsupportedUnitError(f"mint {url} has no active keyset for unit {unit!r}")
    return min(active, key=lambda k: (k.input_fee_ppk, k.id))


def fee_ppk(keysets: dict[str, Keyset]) -> dict[str, int]:
    return {k.id: k.input_fee_ppk for k in keysets.values()}
