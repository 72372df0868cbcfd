"""Send and receive sagas against a real Nutshell mint (input fee 100 ppk).

Balances are checked to the sat at the end of every test: ours, and the
mint's view where it matters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from mint_harness import RunningMint
from nutshell_wallet import nutshell_mint_and_send, nutshell_p2pk_lock_and_send, nutshell_receive
from saga_helpers import (
    CutOnce,
    assert_all_spendable,
    bal,
    fund,
    losing,
    mint_says_unspent,
    no_lock,
    register_mint,
    state_and_error,
    with_transport,
)
from sqlalchemy import func, select

from models import Operation
from nuts.errors import InvalidTokenError, MintUnreachableError
from nuts.secrets import wallet_p2pk_key
from nuts.tokens import decode_token
from sagas import receive as receive_saga
from sagas import registry
from sagas import send as send_saga
from sagas.engine import SagaContext
from sagas.errors import (
    InsufficientBalanceError,
    InvalidAmountError,
    InvalidStateError,
    TokenAlreadySpentError,
    TokenLockedError,
    UnknownMintError,
)
from sagas.recovery import run_recovery

pytestmark = pytest.mark.mint


@pytest.fixture
def mint_url(saga_context: SagaContext, test_mint: RunningMint) -> str:
    return register_mint(saga_context, test_mint.url)


def test_send_then_receive_moves_the_amount_exactly_fees_included(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    alice, bob = wallet_id, f"{wallet_id}-bob"
    fund(saga_context, alice, mint_url, 1000)

    prepared = send_saga.prepare(saga_context, alice, mint_url, 100, memo="lunch")
    sent = send_saga.execute(saga_context, prepared["id"])
    received = receive_saga.redeem(saga_context, bob, sent["token"])

    assert prepared["fee"] == (1 if prepared["needs_swap"] else 0)
    assert sent["state"] == "pending" and decode_token(sent["token"]).memo == "lunch"
    assert received["state"] == "finalized"
    assert received["amount"] == 100 - received["fee"]
    assert bal(saga_context, bob)["spendable"] == 100 - received["fee"]
    assert bal(saga_context, alice) | {"by_mint": None} == {
        "spendable": 1000 - 100 - prepared["fee"],
        "reserved": 0,
        "pending": 100,
        "total": 1000 - prepared["fee"],
        "unit": "sat",
        "by_mint": None,
    }
    assert send_saga.refresh(saga_context, prepared["id"])["state"] == "finalized"
    assert bal(saga_context, alice)["total"] == 900 - prepared["fee"]
    assert mint_says_unspent(saga_context, alice, mint_url)
    assert mint_says_unspent(saga_context, bob, mint_url)


def test_proofs_that_match_exactly_go_out_without_swap_or_fee(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 96)

    prepared = send_saga.prepare(saga_context, wallet_id, mint_url, 32)
    sent = send_saga.execute(saga_context, prepared["id"])

    assert (prepared["needs_swap"], prepared["fee"], prepared["input_amount"]) == (False, 0, 32)
    assert decode_token(sent["token"]).amount == 32
    assert bal(saga_context, wallet_id)["spendable"] == 64
    assert bal(saga_context, wallet_id)["pending"] == 32


def test_token_in_one_call_hands_over_exact_proofs_without_a_swap(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 96)

    sent = send_saga.token(saga_context, wallet_id, mint_url, 32)

    assert (sent["state"], sent["needs_swap"], sent["fee"]) == ("pending", False, 0)
    assert decode_token(sent["token"]).amount == 32
    assert bal(saga_context, wallet_id)["spendable"] == 64
    assert bal(saga_context, wallet_id)["pending"] == 32
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def test_token_in_one_call_swaps_and_keeps_the_change(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)

    sent = send_saga.token(  # the receiver's fee on top: never the proofs as they are
        saga_context, wallet_id, mint_url, 7, memo="tip", include_receiver_fee=True, token_version=3
    )

    token, sent_amount = decode_token(sent["token"]), sent["send_amount"]
    assert (sent["state"], sent["needs_swap"], sent_amount) == ("pending", True, 8)
    assert sent["token"].startswith("cashuA")
    assert (token.amount, token.memo) == (sent_amount, "tip")
    assert bal(saga_context, wallet_id)["spendable"] == 100 - sent_amount - sent["fee"]
    assert bal(saga_context, wallet_id)["pending"] == sent_amount
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def test_a_token_with_the_receivers_fee_leaves_the_receiver_the_whole_amount(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    # 4094 at 100 ppk: a token of 4095 (12 proofs) costs its receiver 2, one of 4096 costs 1
    fund(saga_context, wallet_id, mint_url, 4200)
    sent = send_saga.token(saga_context, wallet_id, mint_url, 4094, include_receiver_fee=True)
    receiver = wallet_id + "-r"

    received = receive_saga.redeem(saga_context, receiver, sent["token"])

    assert received["state"] == "finalized"
    assert received["fee"] <= sent["receiver_fee"]
    assert bal(saga_context, receiver)["spendable"] >= 4094
    assert bal(saga_context, wallet_id)["spendable"] == 4200 - sent["send_amount"] - sent["fee"]


def test_a_send_too_small_to_cover_the_receivers_fee_is_refused(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 8)

    with pytest.raises(InvalidAmountError):
        send_saga.prepare(saga_context, wallet_id, mint_url, 1)
    covered = send_saga.prepare(saga_context, wallet_id, mint_url, 1, include_receiver_fee=True)

    assert covered["send_amount"] == 2
    assert bal(saga_context, wallet_id)["total"] == 8


def test_cancelling_a_prepared_send_releases_its_inputs(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 50)
    prepared = send_saga.prepare(saga_context, wallet_id, mint_url, 20)
    assert bal(saga_context, wallet_id)["reserved"] > 0

    cancelled = send_saga.rollback(saga_context, prepared["id"])

    assert cancelled["state"] == "rolled_back"
    assert bal(saga_context, wallet_id)["spendable"] == 50


def test_reclaiming_an_unclaimed_token_returns_it_minus_the_swap_fee(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 21)
    send_saga.execute(saga_context, op["id"])
    after_send = bal(saga_context, wallet_id)["total"]

    reclaimed = send_saga.rollback(saga_context, op["id"])

    assert reclaimed["state"] == "rolled_back"
    assert reclaimed["reclaimed_amount"] == 21 - reclaimed["reclaim_fee"]
    assert bal(saga_context, wallet_id)["spendable"] == after_send - reclaimed["reclaim_fee"]
    assert bal(saga_context, wallet_id)["pending"] == 0
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def test_reclaiming_a_claimed_token_finalizes_the_send(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 21)
    token = send_saga.execute(saga_context, op["id"])["token"]
    receive_saga.redeem(saga_context, f"{wallet_id}-bob", token)

    result = send_saga.rollback(saga_context, op["id"])

    assert result["state"] == "finalized"
    assert (result["reclaim_fee"], result["reclaimed_amount"]) == (0, 0)  # nothing reclaimed
    assert bal(saga_context, wallet_id)["total"] == 100 - 21 - op["fee"]


def test_rolling_back_a_finalized_send_is_refused_and_a_rolled_back_one_is_returned(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    claimed = send_saga.token(saga_context, wallet_id, mint_url, 21)
    receive_saga.redeem(saga_context, f"{wallet_id}-bob", claimed["token"])
    assert send_saga.refresh(saga_context, claimed["id"])["state"] == "finalized"
    cancelled = send_saga.prepare(saga_context, wallet_id, mint_url, 5)
    send_saga.rollback(saga_context, cancelled["id"])

    with pytest.raises(InvalidStateError):
        send_saga.rollback(saga_context, claimed["id"])
    again = send_saga.rollback(saga_context, cancelled["id"])

    assert again["state"] == "rolled_back"
    assert bal(saga_context, wallet_id)["total"] == 100 - 21 - claimed["fee"]


def test_a_second_receive_of_one_token_fails_clearly(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 30)
    token = send_saga.execute(saga_context, op["id"])["token"]
    receive_saga.redeem(saga_context, f"{wallet_id}-bob", token)

    with pytest.raises(TokenAlreadySpentError):
        receive_saga.redeem(saga_context, f"{wallet_id}-carol", token)
    assert bal(saga_context, f"{wallet_id}-carol")["total"] == 0


def test_a_token_claimed_outside_our_system_ends_failed(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 30)
    token = send_saga.execute(saga_context, op["id"])["token"]
    nutshell_receive(mint_url, token)
    prepared = receive_saga.prepare(saga_context, f"{wallet_id}-bob", token)

    with pytest.raises(TokenAlreadySpentError):
        receive_saga.execute(saga_context, prepared["id"])
    with saga_context.uow() as session:
        failed = session.get(Operation, prepared["id"])
        assert failed is not None and failed.state == "failed"
        assert failed.error_code == "TOKEN_ALREADY_SPENT"
    assert bal(saga_context, f"{wallet_id}-bob")["total"] == 0


def test_include_receiver_fee_gives_the_receiver_exactly_the_amount(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 200)

    op = send_saga.prepare(saga_context, wallet_id, mint_url, 50, include_receiver_fee=True)
    token = send_saga.execute(saga_context, op["id"])["token"]
    received = receive_saga.redeem(saga_context, f"{wallet_id}-bob", token)

    assert received["amount"] == 50
    assert bal(saga_context, f"{wallet_id}-bob")["spendable"] == 50
    assert send_saga.refresh(saga_context, op["id"])["state"] == "finalized"
    assert bal(saga_context, wallet_id)["total"] == 200 - 50 - op["receiver_fee"] - op["fee"]


def test_a_token_locked_to_another_wallet_cannot_be_reclaimed_and_is_received_by_it(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    bob = f"{wallet_id}-bob"
    bob_key = wallet_p2pk_key(saga_context.wallet_seed(bob)).public_key.format().hex()
    fund(saga_context, wallet_id, mint_url, 100)
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 40, p2pk_pubkey=bob_key)
    token = send_saga.execute(saga_context, op["id"])["token"]

    with pytest.raises(TokenLockedError):
        send_saga.rollback(saga_context, op["id"])
    with pytest.raises(TokenLockedError):
        receive_saga.prepare(saga_context, f"{wallet_id}-carol", token)
    received = receive_saga.redeem(saga_context, bob, token)

    assert received["state"] == "finalized"
    assert bal(saga_context, bob)["spendable"] == 40 - received["fee"]
    assert send_saga.refresh(saga_context, op["id"])["state"] == "finalized"
    assert bal(saga_context, wallet_id)["total"] == 100 - 40 - op["fee"]


def _token_with(mint_url: str, keyset_id: str, amount: int) -> str:
    """A well-formed V4 token whose proof is wrong in content, not in form."""
    from coincurve import PrivateKey

    from nuts.models import Proof
    from nuts.tokens import Token, encode_token_v4

    proof = Proof(
        id=keyset_id, amount=amount, secret="ab" * 32, C=PrivateKey().public_key.format().hex()
    )
    return encode_token_v4(Token(mint=mint_url, unit="sat", proofs=[proof]))


@pytest.mark.parametrize(
    ("keyset", "amount"),
    [("01" + "ee" * 32, 8), ("01" + "ee" * 7, 8), (None, 2**63)],
    ids=["unknown-keyset", "unknown-short-keyset", "huge-amount"],
)
def test_a_token_wrong_in_content_is_refused_and_changes_nothing(
    saga_context: SagaContext, mint_url: str, wallet_id: str, keyset: str | None, amount: int
) -> None:
    with saga_context.uow() as session:
        known = next(iter(registry.load_keysets(session, mint_url)))
    token = _token_with(mint_url, keyset or known, amount)

    with pytest.raises(InvalidTokenError):
        receive_saga.prepare(saga_context, wallet_id, token)

    with saga_context.uow() as session:
        assert session.scalar(select(func.count()).where(Operation.wallet == wallet_id)) == 0
    assert bal(saga_context, wallet_id)["total"] == 0


@pytest.mark.parametrize(
    "token",
    [
        "",
        "cashuC" + "A" * 40,
        "cashuBo2F0gaJhaUgArSaMTR9YJmFwgaNhYQFhc3hAOWE2ZGJiODQ3YmQy",  # truncated
        "cashuB" + "////",  # not CBOR
        "cashuAeyJ0b2tlbiI6W3s",  # truncated JSON
        "cashuAWyJub3QiLCAiYSB0b2tlbiJd",  # JSON of the wrong shape
    ],
    ids=["empty", "wrong-prefix", "truncated-v4", "bad-cbor", "bad-json", "wrong-shape"],
)
def test_a_malformed_token_is_refused_and_changes_nothing(
    saga_context: SagaContext, mint_url: str, wallet_id: str, token: str
) -> None:
    with pytest.raises(InvalidTokenError):
        receive_saga.prepare(saga_context, wallet_id, token)

    with saga_context.uow() as session:
        assert session.scalar(select(func.count()).where(Operation.wallet == wallet_id)) == 0


def test_a_token_from_an_unknown_mint_is_refused_unless_trusted_explicitly(
    saga_context: SagaContext, fresh_mint: Callable[..., RunningMint], wallet_id: str
) -> None:
    other = fresh_mint()
    token = nutshell_mint_and_send(other.url, 16, 8, version=4)

    with pytest.raises(UnknownMintError):
        receive_saga.prepare(saga_context, wallet_id, token)
    received = receive_saga.redeem(saga_context, wallet_id, token, trust_mint=True)

    assert received["state"] == "finalized"
    assert bal(saga_context, wallet_id)["spendable"] == 8 - received["fee"]


@pytest.mark.parametrize("version", [3, 4])
def test_nutshells_tokens_are_received_here(
    saga_context: SagaContext, mint_url: str, wallet_id: str, version: int
) -> None:
    token = nutshell_mint_and_send(mint_url, 64, 21, version=version)

    received = receive_saga.redeem(saga_context, wallet_id, token)

    assert bal(saga_context, wallet_id)["spendable"] == 21 - received["fee"]
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def test_a_p2pk_token_nutshell_locked_to_our_wallet_key_is_received(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    ours = wallet_p2pk_key(saga_context.wallet_seed(wallet_id)).public_key.format().hex()
    token = nutshell_p2pk_lock_and_send(mint_url, 13, ours)

    received = receive_saga.redeem(saga_context, wallet_id, token)

    assert bal(saga_context, wallet_id)["spendable"] == 13 - received["fee"]


def test_our_send_token_is_received_by_nutshell(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 25)
    token = send_saga.execute(saga_context, op["id"])["token"]

    assert nutshell_receive(mint_url, token) == 25 - 1
    assert send_saga.refresh(saga_context, op["id"])["state"] == "finalized"
    assert bal(saga_context, wallet_id)["total"] == 100 - 25 - op["fee"]


def test_a_lost_swap_response_on_send_is_settled_by_recovery(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    # include_receiver_fee: the token is split anew, so the send swaps
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 30, include_receiver_fee=True)
    sent = op["send_amount"]

    stuck = send_saga.execute(losing(saga_context, "/v1/swap"), op["id"])
    run_recovery(saga_context, lock=no_lock, kinds={"send"}, states={"executing"})

    with saga_context.uow() as session:
        state = session.get(Operation, op["id"]).state  # type: ignore[union-attr]
    assert stuck["state"] == "executing" and stuck["error"]["code"] == "MINT_TIMEOUT"
    assert state == "pending"
    assert bal(saga_context, wallet_id) | {"by_mint": None} == {
        "spendable": 100 - sent - op["fee"],
        "reserved": 0,
        "pending": sent,
        "total": 100 - op["fee"],
        "unit": "sat",
        "by_mint": None,
    }


def test_a_lost_swap_response_on_receive_is_settled_by_recovery(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    token = nutshell_mint_and_send(mint_url, 64, 40, version=4)
    prepared = receive_saga.prepare(saga_context, wallet_id, token)

    stuck = receive_saga.execute(losing(saga_context, "/v1/swap"), prepared["id"])
    run_recovery(saga_context, lock=no_lock, kinds={"receive"})

    assert stuck["state"] == "executing"
    with saga_context.uow() as session:
        assert session.get(Operation, prepared["id"]).state == "finalized"  # type: ignore[union-attr]
    assert bal(saga_context, wallet_id)["spendable"] == 40 - prepared["fee"]
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def test_a_send_whose_swap_connection_was_refused_releases_its_inputs_with_a_typed_error(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 30, include_receiver_fee=True)

    with pytest.raises(MintUnreachableError):
        send_saga.execute(with_transport(saga_context, CutOnce("/v1/swap", "refused")), op["id"])

    assert state_and_error(saga_context, op["id"]) == ("rolled_back", "MINT_UNREACHABLE")
    assert_all_spendable(saga_context, wallet_id, 100)
    assert mint_says_unspent(saga_context, wallet_id, mint_url)


def test_a_replayed_send_swap_whose_connection_is_refused_keeps_its_inputs_for_recovery(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 30, include_receiver_fee=True)
    send_saga.execute(losing(saga_context, "/v1/swap"), op["id"])  # the mint swapped, unheard

    replay = send_saga.execute(
        with_transport(saga_context, CutOnce("/v1/swap", "refused")), op["id"]
    )
    run_recovery(saga_context, lock=no_lock, kinds={"send"}, states={"executing"})

    assert (replay["state"], replay["error"]["code"]) == ("executing", "MINT_UNREACHABLE")
    assert state_and_error(saga_context, op["id"]) == ("pending", None)
    assert bal(saga_context, wallet_id)["total"] == 100 - op["fee"]
    assert bal(saga_context, wallet_id)["pending"] == op["send_amount"]


def test_a_reclaim_whose_connection_was_refused_leaves_the_token_pending_with_a_typed_error(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    op = send_saga.prepare(saga_context, wallet_id, mint_url, 21)
    send_saga.execute(saga_context, op["id"])
    after_send = bal(saga_context, wallet_id)

    with pytest.raises(MintUnreachableError):
        send_saga.rollback(with_transport(saga_context, CutOnce("/v1/swap", "refused")), op["id"])

    assert state_and_error(saga_context, op["id"]) == ("pending", "MINT_UNREACHABLE")
    assert bal(saga_context, wallet_id) == after_send


def test_the_watcher_finalizes_claimed_sends_in_batches(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 500)
    tokens = []
    for amount in (10, 20, 30):
        op = send_saga.prepare(saga_context, wallet_id, mint_url, amount)
        tokens.append(send_saga.execute(saga_context, op["id"])["token"])
    for token in tokens:
        receive_saga.redeem(saga_context, f"{wallet_id}-bob", token)

    result = send_saga.watch_pending_sends(saga_context)

    assert result["finalized"] >= 3
    assert bal(saga_context, wallet_id)["pending"] == 0


def test_the_watcher_leaves_an_unclaimed_send_pending_for_its_next_tick(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 100)
    sends = []
    for amount in (10, 20):
        op = send_saga.prepare(saga_context, wallet_id, mint_url, amount)
        sends.append(send_saga.execute(saga_context, op["id"]))
    claimed, unclaimed = sends
    got = [receive_saga.redeem(saga_context, f"{wallet_id}-bob", claimed["token"])]

    send_saga.watch_pending_sends(saga_context)

    with saga_context.uow() as session:
        first = session.get(Operation, claimed["id"])
        second = session.get(Operation, unclaimed["id"])
        assert first is not None and first.state == "finalized"
        assert second is not None and (second.state, second.claimed_until) == ("pending", None)
    assert bal(saga_context, wallet_id)["pending"] == unclaimed["input_amount"]

    got.append(receive_saga.redeem(saga_context, f"{wallet_id}-bob", unclaimed["token"]))
    send_saga.watch_pending_sends(saga_context)

    with saga_context.uow() as session:
        assert session.get(Operation, unclaimed["id"]).state == "finalized"  # type: ignore[union-attr]
    assert bal(saga_context, wallet_id)["pending"] == 0
    assert bal(saga_context, wallet_id)["spendable"] == 100 - 10 - 20 - sum(s["fee"] for s in sends)
    assert bal(saga_context, f"{wallet_id}-bob")["spendable"] == sum(r["amount"] for r in got)


def test_fifty_concurrent_sends_never_share_a_proof_and_balance_exactly(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    fund(saga_context, wallet_id, mint_url, 2000)
    results: list[object] = []
    barrier = threading.Barrier(50)

    def send_one() -> None:
        barrier.wait()
        try:
            op = send_saga.prepare(saga_context, wallet_id, mint_url, 7)
            results.append(send_saga.execute(saga_context, op["id"]))
        except Exception as exc:  # only a balance shortfall is acceptable; asserted below
            results.append(exc)

    threads = [threading.Thread(target=send_one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    sent = [r for r in results if isinstance(r, dict)]
    failures = [r for r in results if not isinstance(r, dict)]
    assert all(isinstance(f, InsufficientBalanceError) for f in failures), failures
    assert all(r["state"] == "pending" for r in sent)
    fees = sum(r["fee"] for r in sent)
    final = bal(saga_context, wallet_id)
    assert final["pending"] == 7 * len(sent)
    assert final["total"] == 2000 - fees
    assert final["reserved"] == 0
    assert mint_says_unspent(saga_context, wallet_id, mint_url)
