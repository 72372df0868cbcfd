"""What the saga tests share: registering a mint, funding a wallet, balances, faults.

Faults are injected with httpx transports in front of the real mint: the mint
acts, and the answer is lost (or never sent); or the process dies after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import select

from models import Operation, ProofState, StoredProof
from nuts.client import MintClient
from nuts.models import ProofSpentState
from sagas import mint as mint_saga
from sagas import registry
from sagas.engine import SagaContext
from sagas.proofs import balance

REPO = Path(__file__).resolve().parent.parent


def register_mint(ctx: SagaContext, url: str, trusted: bool = True) -> str:
    return registry.add_mint(ctx, url, trusted)["url"]


def fund(ctx: SagaContext, wallet: str, url: str, amount: int) -> None:
    """Mint `amount` into the wallet through the mint saga."""
    op = mint_saga.prepare(ctx, wallet, url, amount)
    assert mint_saga.execute(ctx, op["id"])["state"] == "finalized"


def bal(ctx: SagaContext, wallet: str) -> dict:
    with ctx.uow() as session:
        return balance(session, wallet)


def assert_all_spendable(ctx: SagaContext, wallet: str, amount: int) -> None:
    """The wallet holds exactly `amount` sat, all of it spendable: nothing reserved or pending."""
    assert bal(ctx, wallet) | {"by_mint": None} == {
        "spendable": amount,
        "reserved": 0,
        "pending": 0,
        "total": amount,
        "unit": "sat",
        "by_mint": None,
    }


def state_and_error(ctx: SagaContext, op_id: object) -> tuple[str, str | None]:
    """The operation's state and error code, as the database has them."""
    with ctx.uow() as session:
        op = session.get(Operation, op_id)
        assert op is not None
        return op.state, op.error_code


def no_lock(op_id: object) -> contextlib.nullcontext:
    """run_recovery's lock, for tests that run without Redis."""
    return contextlib.nullcontext()


def mint_states_of_unspent(ctx: SagaContext, wallet: str, url: str) -> set[ProofSpentState]:
    """The mint's view (checkstate) of every proof we hold as unspent."""
    with ctx.uow() as session:
        ys = session.scalars(
            select(StoredProof.y).where(
                StoredProof.wallet == wallet, StoredProof.state == ProofState.UNSPENT
            )
        ).all()
    return {s.state for s in ctx.mint_client(url).checkstate(list(ys))}


def mint_says_unspent(ctx: SagaContext, wallet: str, url: str) -> bool:
    return mint_states_of_unspent(ctx, wallet, url) <= {ProofSpentState.UNSPENT}


class LoseResponse(httpx.BaseTransport):
    """Forwards to the real mint and drops its answer on one path: the mint acted, unheard.

    With before=True the request never reaches the mint (a refused connection).
    """

    def __init__(self, path: str, *, before: bool = False) -> None:
        self.inner = httpx.HTTPTransport()
        self.path = path
        self.before = before

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == self.path and self.before:
            raise httpx.ConnectError("refused", request=request)
        response = self.inner.handle_request(request)
        if request.url.path == self.path:
            response.read()
            raise httpx.ReadTimeout("response lost", request=request)
        return response


class CutOnce(httpx.BaseTransport):
    """Cuts the first request on `path` one way, then lets every request through.

    how: "refused" (a refused connection: nothing sent), "reset" (the connection dies before
    the mint reads the request), "502" (a load balancer answers, the mint never asked),
    "lost" (the mint handles it, the answer is lost). `seen` lists every path sent on.
    """

    def __init__(self, path: str, how: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.path, self.how = path, how
        self.cut = False
        self.seen: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        first = request.url.path == self.path and not self.cut
        self.cut = self.cut or first
        if first and self.how == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if first and self.how == "reset":
            raise httpx.RemoteProtocolError("connection reset by peer", request=request)
        if first and self.how == "502":
            return httpx.Response(502, text="Bad Gateway", request=request)
        self.seen.append(request.url.path)
        response = self.inner.handle_request(request)
        if first and self.how == "lost":
            response.read()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


def with_transport(ctx: SagaContext, transport: httpx.BaseTransport) -> SagaContext:
    clients: dict[str, MintClient] = {}

    def client(url: str) -> MintClient:
        return clients.setdefault(url, MintClient(url, transport=transport))

    return dataclasses.replace(ctx, mint_client=client)


@dataclasses.dataclass
class RequestWatch:
    asked: list[str] = dataclasses.field(default_factory=list)  # every request's path
    asked_inside: list[str] = dataclasses.field(default_factory=list)  # with a unit of work open

    def clear(self) -> None:
        self.asked.clear()
        self.asked_inside.clear()


def asking_outside_transactions(ctx: SagaContext) -> tuple[SagaContext, RequestWatch]:
    """A context that records the path of every mint request, and of those made while one
    of its units of work is open (the rule: no transaction is open while the mint is asked)."""
    open_units = [0]
    watch = RequestWatch()

    @contextlib.contextmanager
    def uow():
        open_units[0] += 1
        try:
            with ctx.uow() as session:
                yield session
        finally:
            open_units[0] -= 1

    class Watching(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            watch.asked.append(request.url.path)
            if open_units[0]:
                watch.asked_inside.append(request.url.path)
            return super().handle_request(request)

    return dataclasses.replace(with_transport(ctx, Watching()), uow=uow), watch


def losing(ctx: SagaContext, path: str, *, before: bool = False) -> SagaContext:
    """A context whose mint answers on `path` are lost."""
    return with_transport(ctx, LoseResponse(path, before=before))


KILL_AFTER = """
import os, signal, sys
from functools import partial
import httpx
sys.path.insert(0, "tests")
from db_harness import TEST_MNEMONIC
from models.db import unit_of_work
from nuts.client import MintClient
from nuts.secrets import derive_wallet_seed
from sagas.engine import SagaContext
import importlib

db, saga, op_id, path = sys.argv[1:5]

class DieAfter(httpx.HTTPTransport):
    def handle_request(self, request):
        response = super().handle_request(request)
        if request.url.path == path:
            response.read()  # the mint has acted; we die before storing anything
            os.kill(os.getpid(), signal.SIGKILL)
        return response

ctx = SagaContext(
    uow=partial(unit_of_work, db),
    mint_client=lambda url: MintClient(url, transport=DieAfter()),
    wallet_seed=lambda wallet: derive_wallet_seed(TEST_MNEMONIC, wallet),
)
importlib.import_module(saga).execute(ctx, op_id)
"""


def execute_and_die_after(database_url: str, saga: str, op_id: str, path: str) -> None:
    """Run `saga`.execute in a process that is SIGKILLed right after the mint answers `path`."""
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER, database_url, saga, op_id, path],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -9, proc.stderr
