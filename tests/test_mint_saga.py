"""The mint saga step by step against a real Nutshell mint, with faults injected.

Every test ends on balances: ours (the proofs table) and the mint's (checkstate).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest
from mint_harness import RunningMint
from protocol_wallet import ProtocolWallet, wait_until_paid
from saga_helpers import (
    bal,
    execute_and_die_after,
    losing,
    mint_states_of_unspent,
    no_lock,
    register_mint,
    with_transport,
)
from sqlalchemy import func, select

from models import Operation
from nuts.models import MintQuote, MintQuoteState, ProofSpentState
from sagas import mint as mint_saga
from sagas import registry
from sagas.engine import SagaContext
from sagas.errors import (
    InvalidAmountError,
    InvalidStateError,
    QuoteIssuedElsewhereError,
    UnknownMintError,
    UntrustedMintError,
)
from sagas.recovery import run_recovery

pytestmark = pytest.mark.mint


@pytest.fixture
def mint_url(saga_context: SagaContext, test_mint: RunningMint) -> str:
    return register_mint(saga_context, test_mint.url)


def test_prepare_then_execute_mints_the_amount(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    prepared = mint_saga.prepare(saga_context, wallet_id, mint_url, 1000)
    done = mint_saga.execute(saga_context, prepared["id"])

    assert prepared["state"] == "pending" and prepared["request"].startswith("lnbc")
    assert done["state"] == "finalized" and done["error"] is None
    assert bal(saga_context, wallet_id)["spendable"] == 1000
    assert mint_states_of_unspent(saga_context, wallet_id, mint_url) == {ProofSpentState.UNSPENT}


def test_refresh_issues_a_paid_quote(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    prepared = mint_saga.prepare(saga_context, wallet_id, mint_url, 64)

    refreshed = mint_saga.refresh(saga_context, prepared["id"])

    assert refreshed["state"] == "finalized"
    assert bal(saga_context, wallet_id)["spendable"] == 64


@pytest.mark.parametrize("amount", [0, -5, 1.5, True, "100", 10**20])
def test_an_invalid_amount_is_refused_and_creates_nothing(
    saga_context: SagaContext, mint_url: str, wallet_id: str, amount: object
) -> None:
    with pytest.raises(InvalidAmountError):
        mint_saga.prepare(saga_context, wallet_id, mint_url, amount)  # type: ignore[arg-type]

    with saga_context.uow() as session:
        assert session.scalar(select(func.count()).where(Operation.wallet == wallet_id)) == 0


def test_an_unknown_mint_is_refused(saga_context: SagaContext, wallet_id: str) -> None:
    with pytest.raises(UnknownMintError):
        mint_saga.prepare(saga_context, wallet_id, "http://127.0.0.1:9", 10)


def test_an_untrusted_mint_is_never_contacted(
    saga_context: SagaContext, fresh_mint: Callable[..., RunningMint], wallet_id: str
) -> None:
    mint = fresh_mint()
    url = register_mint(saga_context, mint.url)
    prepared = mint_saga.prepare(saga_context, wallet_id, url, 10)
    with saga_context.uow() as session:
        registry.set_trusted(session, url, False)
    mint.stop()  # any contact would now fail with an ambiguous error, not a trust error

    with pytest.raises(UntrustedMintError):
        mint_saga.refresh(saga_context, prepared["id"])
    with pytest.raises(UntrustedMintError):
        mint_saga.execute(saga_context, prepared["id"])
    counts = run_recovery(saga_context, lock=no_lock, kinds={"mint"})
    with pytest.raises(UntrustedMintError):
        mint_saga.prepare(saga_context, wallet_id, url, 10)

    assert counts["failed"] == 0
    with saga_context.uow() as session:
        op = session.get(Operation, prepared["id"])
        assert op is not None and (op.state, op.error_code) == ("pending", None)
    assert bal(saga_context, wallet_id)["total"] == 0


def test_a_lost_mint_response_is_finalized_by_restore(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    prepared = mint_saga.prepare(saga_context, wallet_id, mint_url, 100)
    faulty = losing(saga_context, "/v1/mint/bolt11")

    after_fault = mint_saga.execute(faulty, prepared["id"])
    recovered = mint_saga.refresh(saga_context, prepared["id"])

    assert after_fault["state"] == "executing"
    assert after_fault["error"]["code"] == "MINT_TIMEOUT"
    assert recovered["state"] == "finalized" and recovered["error"] is None
    assert bal(saga_context, wallet_id)["spendable"] == 100
    assert mint_states_of_unspent(saga_context, wallet_id, mint_url) == {ProofSpentState.UNSPENT}


def test_an_issued_quote_whose_outputs_do_not_restore_stays_open_as_critical(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    prepared = mint_saga.prepare(saga_context, wallet_id, mint_url, 100)
    faulty = losing(saga_context, "/v1/mint/bolt11")
    mint_saga.execute(faulty, prepared["id"])

    class EmptyRestore(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v1/restore":
                return httpx.Response(200, json={"outputs": [], "signatures": []})
            return httpx.HTTPTransport().handle_request(request)

    result = mint_saga.refresh(with_transport(saga_context, EmptyRestore()), prepared["id"])

    assert result["state"] == "executing"
    assert result["error"]["code"] == "PROOFS_NOT_RECOVERED"
    assert result["error"]["severity"] == "CRITICAL"
    assert bal(saga_context, wallet_id)["total"] == 0
    # The mint still holds our signatures: a later pass with a healthy mint finishes.
    assert mint_saga.refresh(saga_context, prepared["id"])["state"] == "finalized"
    assert bal(saga_context, wallet_id)["spendable"] == 100


def test_twenty_concurrent_imports_of_one_quote_make_one_operation(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    quote = saga_context.mint_client(mint_url).create_mint_quote(21, "sat")
    barrier = threading.Barrier(20)
    results: list[dict] = []

    def imp() -> None:
        barrier.wait()
        results.append(mint_saga.import_quote(saga_context, wallet_id, mint_url, quote.quote))

    threads = [threading.Thread(target=imp) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert len(results) == 20 and len({r["id"] for r in results}) == 1
    with saga_context.uow() as session:
        assert session.scalar(select(func.count()).where(Operation.quote_id == quote.quote)) == 1


def test_concurrent_imports_of_one_quote_by_many_wallets_never_hand_one_another_s_operation(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    quote = saga_context.mint_client(mint_url).create_mint_quote(21, "sat")
    wallets = [f"{wallet_id}-{n}" for n in range(10)]
    barrier = threading.Barrier(len(wallets))
    outcomes: dict[str, object] = {}

    def imp(wallet: str) -> None:
        barrier.wait()
        try:
            outcomes[wallet] = mint_saga.import_quote(saga_context, wallet, mint_url, quote.quote)
        except InvalidStateError as exc:
            outcomes[wallet] = exc

    threads = [threading.Thread(target=imp, args=(w,)) for w in wallets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    views = {w: o for w, o in outcomes.items() if isinstance(o, dict)}
    assert len(outcomes) == len(wallets) and len(views) == 1
    [(owner, view)] = views.items()
    assert view["wallet"] == owner


def test_two_concurrent_executes_mint_once(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    prepared = mint_saga.prepare(saga_context, wallet_id, mint_url, 50)
    barrier = threading.Barrier(2)
    results: list[object] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(mint_saga.execute(saga_context, prepared["id"]))
        except Exception as exc:  # a lost compare-and-set is an acceptable outcome
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert any(isinstance(r, dict) and r["state"] == "finalized" for r in results), results
    assert bal(saga_context, wallet_id)["spendable"] == 50


def test_importing_an_issued_quote_we_hold_no_outputs_for_is_refused(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    elsewhere = ProtocolWallet(saga_context.mint_client(mint_url))
    quote = elsewhere.client.create_mint_quote(8, "sat")
    wait_until_paid(elsewhere.client, quote.quote)
    elsewhere.client.mint(quote.quote, [o.blinded_message for o in elsewhere.outputs([8])])

    with pytest.raises(QuoteIssuedElsewhereError):
        mint_saga.import_quote(saga_context, wallet_id, mint_url, quote.quote)
    with saga_context.uow() as session:
        assert session.scalar(select(func.count()).where(Operation.wallet == wallet_id)) == 0


def test_importing_a_quote_another_wallet_holds_is_refused(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    other = mint_saga.prepare(saga_context, f"{wallet_id}-other", mint_url, 8)

    with pytest.raises(InvalidStateError):
        mint_saga.import_quote(saga_context, wallet_id, mint_url, other["quote_id"])
    assert bal(saga_context, wallet_id)["total"] == 0


def test_a_stale_unpaid_check_cannot_overwrite_a_newer_state(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    prepared = mint_saga.prepare(saga_context, wallet_id, mint_url, 16)
    mint_saga.execute(saga_context, prepared["id"])
    stale = MintQuote(quote=prepared["quote_id"], request="", state=MintQuoteState.UNPAID)

    result = mint_saga._settle_from_quote(saga_context, prepared["id"], "pending", stale)

    assert result["state"] == "finalized"
    assert bal(saga_context, wallet_id)["spendable"] == 16


def test_an_expired_unpaid_quote_fails_instead_of_polling_forever(
    saga_context: SagaContext, fresh_mint: Callable[..., RunningMint], wallet_id: str
) -> None:
    mint = fresh_mint(env_overrides={"FAKEWALLET_BRR": "FALSE", "MINT_QUOTE_TTL": "1"})
    url = register_mint(saga_context, mint.url)
    prepared = mint_saga.prepare(saga_context, wallet_id, url, 10)
    time.sleep(2)

    result = mint_saga.refresh(saga_context, prepared["id"])

    assert result["state"] == "failed" and result["error"]["code"] == "QUOTE_EXPIRED"
    assert result["error"]["severity"] == "LOW"
    assert result["error"]["message"] == f"quote {prepared['quote_id']} expired unpaid"
    assert bal(saga_context, wallet_id)["total"] == 0


def test_recovery_sees_an_executing_operation_again_once_it_drops_to_pending(
    saga_context: SagaContext, fresh_mint: Callable[..., RunningMint], wallet_id: str
) -> None:
    mint = fresh_mint(env_overrides={"FAKEWALLET_BRR": "FALSE"})
    url = register_mint(saga_context, mint.url)
    prepared = mint_saga.prepare(saga_context, wallet_id, url, 10)
    refused = losing(saga_context, "/v1/mint/bolt11", before=True)
    assert mint_saga.execute(refused, prepared["id"])["state"] == "executing"

    visits: list[object] = []

    def recording_lock(op_id: object) -> object:
        visits.append(op_id)
        return no_lock(op_id)

    run_recovery(saga_context, lock=recording_lock, kinds={"mint"})

    # executing -> pending (quote UNPAID), then the pending pass of the same sweep saw it.
    assert [str(v) for v in visits].count(prepared["id"]) == 2
    with saga_context.uow() as session:
        op = session.get(Operation, prepared["id"])
        assert op is not None and op.state == "pending" and op.data["outputs"]
    assert bal(saga_context, wallet_id)["total"] == 0


def test_a_process_killed_after_the_mint_signed_loses_nothing(
    saga_context: SagaContext, database_url: str, mint_url: str, wallet_id: str
) -> None:
    prepared = mint_saga.prepare(saga_context, wallet_id, mint_url, 300)

    execute_and_die_after(database_url, "sagas.mint", prepared["id"], "/v1/mint/bolt11")
    with saga_context.uow() as session:
        op = session.get(Operation, prepared["id"])
        assert op is not None and op.state == "executing"
    assert bal(saga_context, wallet_id)["total"] == 0

    counts = run_recovery(saga_context, lock=no_lock, kinds={"mint"})

    assert counts["recovered"] >= 1
    assert bal(saga_context, wallet_id)["spendable"] == 300
    assert mint_states_of_unspent(saga_context, wallet_id, mint_url) == {ProofSpentState.UNSPENT}
