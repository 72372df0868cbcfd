"""Wallet restore from the seed (NUT-09/13) and proof reconciliation (NUT-07), real mint."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mint_harness import RunningMint
from saga_helpers import bal, fund, mint_says_unspent, register_mint
from sqlalchemy import delete, select, update

from models import KeysetCounter, Operation, ProofState, StoredProof
from sagas import restore as restore_saga
from sagas import send as send_saga
from sagas.counters import next_counter
from sagas.engine import SagaContext

pytestmark = pytest.mark.mint


@pytest.fixture
def mint_url(saga_context: SagaContext, test_mint: RunningMint) -> str:
    return register_mint(saga_context, test_mint.url)


def counters_of(ctx: SagaContext, wallet: str) -> dict[str, int]:
    with ctx.uow() as session:
        rows = session.execute(
            select(KeysetCounter.keyset_id, KeysetCounter.next_counter).where(
                KeysetCounter.wallet == wallet
            )
        )
        return {keyset_id: counter for keyset_id, counter in rows}


def wipe(ctx: SagaContext, wallet: str) -> None:
    """The disaster: every row this wallet had is gone."""
    with ctx.uow() as session:
        session.execute(delete(StoredProof).where(StoredProof.wallet == wallet))
        session.execute(delete(KeysetCounter).where(KeysetCounter.wallet == wallet))
        ops = select(Operation.id).where(Operation.wallet == wallet)
        from models import Event
        from models.operations import AuditRecord

        session.execute(delete(Event).where(Event.operation_id.in_(ops)))
        session.execute(delete(AuditRecord).where(AuditRecord.operation_id.in_(ops)))
        session.execute(delete(Operation).where(Operation.wallet == wallet))


def test_a_wiped_wallet_is_restored_exactly_from_its_seed(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 500)
    # include_receiver_fee makes the send swap, so some proofs are spent at the mint
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 99, include_receiver_fee=True)
    assert op["needs_swap"]
    send_saga.execute(saga_context, op["id"])  # a token out, not yet claimed
    before = bal(saga_context, wallet_id)
    counters_before = counters_of(saga_context, wallet_id)
    wipe(saga_context, wallet_id)

    report = restore_saga.restore_wallet(saga_context, wallet_id, mint_url)

    # The unclaimed token's proofs are unspent at the mint: they come back as ours.
    assert bal(saga_context, wallet_id)["spendable"] == before["spendable"] + before["pending"]
    assert report["restored_amount"] == before["total"]
    assert report["spent"] >= 1  # the inputs the send swapped away
    assert counters_of(saga_context, wallet_id) == counters_before
    fund(saga_context, wallet_id, mint_url, 10)  # the next outputs are fresh: no 11003
    assert bal(saga_context, wallet_id)["spendable"] == before["total"] + 10


def test_restoring_a_live_wallet_adds_nothing_and_keeps_held_proofs_held(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 300)
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 50)  # inputs reserved
    before = bal(saga_context, wallet_id)

    report = restore_saga.restore_wallet(saga_context, wallet_id, mint_url)

    assert report["restored"] == 0 and report["already_known"] >= 1
    assert bal(saga_context, wallet_id) == before
    assert send_saga.rollback(saga_context, op["id"])["state"] == "rolled_back"
    assert bal(saga_context, wallet_id)["spendable"] == 300


def test_restore_never_lowers_a_counter(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 64)
    with saga_context.uow() as session:
        session.execute(
            update(KeysetCounter)
            .where(KeysetCounter.wallet == wallet_id)
            .values(next_counter=KeysetCounter.next_counter + 1000)
        )
    raised = counters_of(saga_context, wallet_id)

    restore_saga.restore_wallet(saga_context, wallet_id, mint_url)

    assert counters_of(saga_context, wallet_id) == raised
    with saga_context.uow() as session:
        keyset_id = next(iter(raised))
        assert next_counter(session, wallet_id, keyset_id) >= 1000
    assert bal(saga_context, wallet_id)["spendable"] == 64


def test_check_proofs_finds_and_corrects_a_proof_spent_behind_our_back(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    from protocol_wallet import ProtocolWallet, swap_to

    from sagas.proofs import to_wire

    fund(saga_context, wallet_id, mint_url, 96)
    with saga_context.uow() as session:
        row = session.scalars(
            select(StoredProof)
            .where(StoredProof.wallet == wallet_id)
            .order_by(StoredProof.amount.desc())
        ).first()
        assert row is not None
        stolen = to_wire(row)
    swap_to(ProtocolWallet(saga_context.mint_client(mint_url)), [stolen])

    report = restore_saga.check_proofs(saga_context, wallet_id, mint_url)

    assert report["discrepancies"]["DB_UNSPENT_MINT_SPENT"] == {
        "severity": "HIGH",
        "count": 1,
        "amount": stolen.amount,
    }
    assert report["corrected"] == 1
    assert bal(saga_context, wallet_id)["spendable"] == 96 - stolen.amount
    again = restore_saga.check_proofs(saga_context, wallet_id, mint_url)
    assert again["discrepancies"] == {} and again["corrected"] == 0


def test_check_proofs_of_a_consistent_wallet_reports_nothing(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)

    report = restore_saga.check_proofs(saga_context, wallet_id, mint_url)

    assert report["discrepancies"] == {} and report["checked"] >= 1
    with saga_context.uow() as session:
        states = set(
            session.scalars(select(StoredProof.state).where(StoredProof.wallet == wallet_id))
        )
    assert states == {ProofState.UNSPENT}
    assert bal(saga_context, wallet_id)["spendable"] == 100


def test_refreshing_keysets_touches_no_counter_and_skips_untrusted_mints(
    saga_context: SagaContext,
    mint_url: str,
    wallet_id: str,
    fresh_mint: Callable[..., RunningMint],
) -> None:
    from sagas.registry import refresh_all_keysets, set_trusted

    fund(saga_context, wallet_id, mint_url, 40)
    counters = counters_of(saga_context, wallet_id)
    other = fresh_mint()
    other_url = register_mint(saga_context, other.url)
    with saga_context.uow() as session:
        set_trusted(session, other_url, False)
    other.stop()  # contacting it would now fail, and show up under "failed"

    report = refresh_all_keysets(saga_context)

    assert mint_url in report["refreshed"]
    assert other_url not in report["refreshed"] and other_url not in report["failed"]
    assert counters_of(saga_context, wallet_id) == counters
    assert bal(saga_context, wallet_id)["spendable"] == 40


def test_nutshell_restores_the_same_balance_from_a_wallets_derived_mnemonic(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    from db_harness import TEST_MNEMONIC
    from nutshell_wallet import nutshell_restore

    from nuts.secrets import derive_wallet_mnemonic

    fund(saga_context, wallet_id, mint_url, 300)
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 77)
    send_saga.execute(saga_context, op["id"])
    send_saga.rollback(saga_context, op["id"])  # reclaimed: swaps on both sides
    ours = bal(saga_context, wallet_id)

    theirs = nutshell_restore(mint_url, derive_wallet_mnemonic(TEST_MNEMONIC, wallet_id))

    assert ours["pending"] == ours["reserved"] == 0
    assert theirs == ours["spendable"]


def test_every_wallet_comes_back_into_an_empty_database(
    saga_context: SagaContext, database_url: str, mint_url: str, wallet_id: str
) -> None:
    """The disaster: the database is gone. A new, empty one, the master mnemonic and the
    mint bring each wallet back to the sat."""
    import dataclasses
    from functools import partial

    from db_harness import migrate_fresh

    from models.db import unit_of_work

    wallets = {f"{wallet_id}-{n}": amount for n, amount in enumerate((300, 128, 77))}
    for wallet, amount in wallets.items():
        fund(saga_context, wallet, mint_url, amount)
    op = send_saga.prepare(saga_context, f"{wallet_id}-0", mint_url, 99)
    send_saga.execute(saga_context, op["id"])  # a token out and unclaimed: still ours
    before = {wallet: bal(saga_context, wallet)["total"] for wallet in wallets}
    empty = migrate_fresh(database_url.rsplit("/", 1)[0] + "/cashu_worker_test_disaster")
    fresh = dataclasses.replace(saga_context, uow=partial(unit_of_work, empty))

    for wallet in wallets:
        restore_saga.restore_wallet(fresh, wallet, mint_url)  # registers the mint itself

    assert {wallet: bal(fresh, wallet)["spendable"] for wallet in wallets} == before
    for wallet in wallets:
        assert mint_says_unspent(fresh, wallet, mint_url)
