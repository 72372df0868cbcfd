"""Receiving tokens from strangers, against a real mint: forged, malformed and raced tokens.

Whatever a token is, the receive ends in a clear state with a typed error, nothing is
written for a token refusable offline (and the mint is not asked), and a token that one
receive failed on or left prepared can still be received.
"""

from __future__ import annotations

import dataclasses
import threading

import httpx
import pytest
from coincurve import PrivateKey
from mint_harness import RunningMint
from saga_helpers import bal, fund, no_lock, register_mint, state_and_error, with_transport
from sqlalchemy import func, select

from models import Operation
from nuts.errors import CashuError, InvalidTokenError
from nuts.models import Proof
from nuts.tokens import Token, decode_token, encode_token_v3, encode_token_v4
from sagas import receive as receive_saga
from sagas import registry
from sagas import send as send_saga
from sagas.engine import SagaContext
from sagas.errors import TokenAlreadySpentError, TokenRefusedError, UnknownMintError
from sagas.recovery import run_recovery

pytestmark = pytest.mark.mint


class Watching(httpx.BaseTransport):
    """Forwards to the mint and notes every path asked; `refuse` answers the first request
    on a path itself with a 400 without a NUT error code (as Nutshell does for a crash)."""

    def __init__(self, refuse: str | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.refuse = refuse
        self.asked: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.url.path)
        if request.url.path == self.refuse:
            self.refuse = None
            return httpx.Response(400, json={"detail": "internal error", "code": 0})
        return self.inner.handle_request(request)


@pytest.fixture
def mint_url(saga_context: SagaContext, test_mint: RunningMint) -> str:
    return register_mint(saga_context, test_mint.url)


def a_real_token(ctx: SagaContext, url: str, sender: str, amount: int = 40) -> str:
    fund(ctx, sender, url, 2 * amount)
    return send_saga.token(ctx, sender, url, amount)["token"]


def a_crafted_token(ctx: SagaContext, url: str, **proof: object) -> str:
    """A well-formed token (V3: its C is any text) of one proof of the mint's keyset,
    changed as asked."""
    with ctx.uow() as session:
        keyset = next(iter(registry.load_keysets(session, url)))
    fields = {"id": keyset, "amount": 8, "secret": "ab" * 32}
    fields |= {"C": PrivateKey().public_key.format().hex()} | proof
    return encode_token_v3(Token(mint=url, unit="sat", proofs=[Proof(**fields)]))


def operations_of(ctx: SagaContext, wallet: str) -> int:
    with ctx.uow() as session:
        return session.scalar(select(func.count()).where(Operation.wallet == wallet)) or 0


@pytest.mark.parametrize(
    "proof",
    [
        {"amount": 3},
        {"C": "02" + "ff" * 32},
        {"C": "not hex"},
        {"secret": "x" * 1025},
        {"secret": ""},
    ],
    ids=["amount-not-in-keyset", "C-not-a-point", "C-not-hex", "secret-too-long", "no-secret"],
)
def test_a_token_that_cannot_be_valid_is_refused_offline_and_writes_nothing(
    saga_context: SagaContext, mint_url: str, wallet_id: str, proof: dict
) -> None:
    token = a_crafted_token(saga_context, mint_url, **proof)
    watching = Watching()

    with pytest.raises(InvalidTokenError):
        receive_saga.redeem(with_transport(saga_context, watching), wallet_id, token)

    assert watching.asked == []
    assert operations_of(saga_context, wallet_id) == 0


def test_a_token_holding_one_proof_twice_is_refused_offline(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    real = decode_token(a_real_token(saga_context, mint_url, f"{wallet_id}-sender"))
    doubled = encode_token_v4(dataclasses.replace(real, proofs=real.proofs * 2))
    watching = Watching()

    with pytest.raises(InvalidTokenError):
        receive_saga.redeem(with_transport(saga_context, watching), wallet_id, doubled)

    assert watching.asked == []
    assert operations_of(saga_context, wallet_id) == 0


def test_a_forged_token_the_mint_refuses_ends_rolled_back_with_a_typed_error(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    forged = a_crafted_token(saga_context, mint_url)  # a point, an amount: a bad signature

    with pytest.raises(TokenRefusedError):
        receive_saga.redeem(saga_context, wallet_id, forged)
    run_recovery(saga_context, lock=no_lock, kinds={"receive"})

    [(state, code)] = _states_and_errors(saga_context, wallet_id)
    assert state == "rolled_back" and code
    assert bal(saga_context, wallet_id)["total"] == 0


def test_a_swap_refused_without_a_code_rolls_back_once_checkstate_says_the_inputs_are_unspent(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    token = a_real_token(saga_context, mint_url, f"{wallet_id}-sender")

    with pytest.raises(TokenRefusedError):
        receive_saga.redeem(with_transport(saga_context, Watching("/v1/swap")), wallet_id, token)

    [(state, code)] = _states_and_errors(saga_context, wallet_id)
    assert (state, code) == ("rolled_back", "MINT_REFUSED_WITHOUT_CODE")
    assert bal(saga_context, wallet_id)["total"] == 0


def test_a_token_whose_receive_was_refused_can_be_received_again(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    token = a_real_token(saga_context, mint_url, f"{wallet_id}-sender")
    with pytest.raises(TokenRefusedError):
        receive_saga.redeem(with_transport(saga_context, Watching("/v1/swap")), wallet_id, token)

    received = receive_saga.redeem(saga_context, wallet_id, token)

    assert received["state"] == "finalized"
    assert bal(saga_context, wallet_id)["spendable"] == 40 - received["fee"]


def test_a_token_one_wallet_left_prepared_is_received_by_another(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    alice, bob = f"{wallet_id}-alice", f"{wallet_id}-bob"
    token = a_real_token(saga_context, mint_url, f"{wallet_id}-sender")
    left = receive_saga.prepare(saga_context, alice, token)

    received = receive_saga.redeem(saga_context, bob, token)
    with pytest.raises(TokenAlreadySpentError):
        receive_saga.execute(saga_context, left["id"])

    assert received["state"] == "finalized"
    assert state_and_error(saga_context, left["id"])[0] == "failed"
    assert bal(saga_context, bob)["spendable"] == 40 - received["fee"]
    assert bal(saga_context, alice)["total"] == 0


def test_a_token_already_received_is_refused_without_asking_the_mint(
    saga_context: SagaContext, mint_url: str, wallet_id: str
) -> None:
    token = a_real_token(saga_context, mint_url, f"{wallet_id}-sender")
    receive_saga.redeem(saga_context, wallet_id, token)
    watching = Watching()

    with pytest.raises(TokenAlreadySpentError):
        receive_saga.redeem(with_transport(saga_context, watching), f"{wallet_id}-2", token)

    assert "/v1/swap" not in watching.asked
    assert operations_of(saga_context, f"{wallet_id}-2") == 0


@pytest.mark.parametrize("wallets", [1, 5], ids=["one-wallet", "five-wallets"])
def test_one_token_redeemed_five_times_at_once_is_received_once_and_raises_nothing_raw(
    saga_context: SagaContext, mint_url: str, wallet_id: str, wallets: int
) -> None:
    token = a_real_token(saga_context, mint_url, f"{wallet_id}-sender")
    names = [f"{wallet_id}-{n % wallets}" for n in range(5)]
    barrier = threading.Barrier(len(names))
    outcomes: list[object] = []

    def redeem(wallet: str) -> None:
        barrier.wait()
        try:
            outcomes.append(receive_saga.redeem(saga_context, wallet, token))
        except Exception as exc:  # the test asserts which
            outcomes.append(exc)

    threads = [threading.Thread(target=redeem, args=(name,)) for name in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    run_recovery(saga_context, lock=no_lock, kinds={"receive"})

    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(outcomes) == 5 and all(isinstance(e, CashuError) for e in errors), errors
    finalized = [o for o in outcomes if isinstance(o, dict) and o["state"] == "finalized"]
    assert finalized, outcomes
    fee = finalized[0]["fee"]
    assert sum(bal(saga_context, name)["total"] for name in set(names)) == 40 - fee


def _states_and_errors(ctx: SagaContext, wallet: str) -> list[tuple[str, str | None]]:
    with ctx.uow() as session:
        rows = session.execute(
            select(Operation.state, Operation.error_code).where(Operation.wallet == wallet)
        )
        return [(state, code) for state, code in rows]


def test_a_token_for_an_unregistered_mint_is_refused_without_contacting_it(
    saga_context: SagaContext, wallet_id: str
) -> None:
    stranger = "http://127.0.0.1:9"  # nobody we know; nothing listens there either
    token = encode_token_v4(
        Token(
            mint=stranger,
            unit="sat",
            proofs=[Proof(id="00" * 8, amount=8, secret="ab" * 32, C="02" + "11" * 32)],
        )
    )
    watching = Watching()

    with pytest.raises(UnknownMintError):
        receive_saga.redeem(with_transport(saga_context, watching), wallet_id, token)

    assert watching.asked == []
    assert operations_of(saga_context, wallet_id) == 0
