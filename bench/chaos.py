"""Chaos harness: wallets doing a random mix of operations while everything crashes.

Run by hand (several minutes; bounded by --max-seconds):

    .venv/bin/python bench/chaos.py --operations 200 --wallets 4 --kills 20 --seed 1 [--json]

tests/test_chaos.py runs a reduced version (40 operations, 5 kills) in the test suite.

What it sets up, all of its own (the regular test suite may run at the same time):
a Postgres database (CHAOS_DATABASE_URL, default `cashu_worker_chaos`, created if missing,
schema dropped and migrated with alembic), a redis-server subprocess on a free port (db 13,
flushed) that it can restart, two Nutshell FakeWallet mints (input fee 100 ppk) each behind
a SlowProxy (A pays melts at once; B answers melts PENDING and keeps them pending when
checked), and one `celery -A tasks worker` with short limits (time limit 18 s, lock 20 s).

The random phase: a driver (this process) sends tasks by name with a bounded wait each;
up to three operations are in flight at once, and a beat tick (recovery.run, poll_melts,
poll_mint_quotes, check_sends) goes out every few seconds. Operations: mint (quote +
issue), send (swap into a token, V3 or V4, sometimes with the receiver's fee), receive (a
token another wallet sent), melt (on A paid at once, on B pending) and rollbacks (reclaim
a pending send, cancel a prepared send or melt, reclaim a pending melt). At chosen points
the worker is SIGKILLed (its whole process group) and restarted: during a mint request
(the proxy holds /v1/mint/bolt11 answers, sometimes the quote request), during a swap
(/v1/swap, in a send or a receive), during a melt request (/v1/melt/bolt11), or at a
random moment. A dead worker's Redis locks and poller leases are dropped, as their
timeouts would. Mint B is restarted once with FAKEWALLET_PAYMENT_STATE=FAILED (its pending
melts then fail when checked), mint A once, and the harness's Redis once (everything in it
is lost: queued tasks, results, locks). An answer that does not come (a killed worker, a
lost message) is only noted: nothing is derived from task results.

Then recovery: a healthy worker, mint B restarted with FAKEWALLET_PAYMENT_STATE=SETTLED,
and recovery.run / poll_melts / poll_mint_quotes / check_sends until nothing changes.
The checks, from the database and the mints:

1. Per wallet, from its operations' final rows (the formula below) = the sum of its
   proofs not spent (spendable + reserved + pending, i.e. cashu.wallet.balance "total").
2. Every proof we hold unspent, reserved or pending is UNSPENT at the mint (checkstate,
   batches of 100), and no proof we marked spent is UNSPENT there (value we dropped).
3. No operation is left in executing or rolling_back.
4. No proof is held twice: a reserved or pending proof is held by exactly one open
   operation (used_by set, that operation not terminal), an unspent one by none, and no
   secret or Y appears twice.
5. Every evented state an operation reached has its event row: its current state, the
   state it was created in, and the states its current state implies it passed.

The balance formula, per wallet, over its operations as they are at the end:

    expected =  sum(mint finalized:      amount)
              + sum(receive finalized:   amount)            token amount - receive fee
              - sum(send finalized:      amount + receiver_fee + fee)   sent, claimed
              - sum(send pending:        fee)               the token is still ours
              - sum(send rolled_back:    fee + reclaim_fee) only when it was reclaimed
              - sum(melt finalized:      amount + effective_fee)
              - sum(melt rolled_back:    effective_fee)     a pre-swap, a reclaim swap
              - sum(melt pending:        swap_fee)          when the pre-swap went through
    (prepared operations, cancelled ones, failed receives and mints: 0)

This is sagas/history.py's rule (finalized amounts in minus out, minus every fee paid)
extended to operations still open: a pending send's token and a pending melt's inputs are
pending proofs, still counted in the total.

Exit status 1 when an invariant fails; the figures are printed either way.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO, REPO / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import redis  # noqa: E402
from celery import states  # noqa: E402
from db_harness import TEST_MNEMONIC, migrate_fresh  # noqa: E402
from mint_harness import (  # noqa: E402
    MINT_ROOT_DIR,
    RunningMint,
    free_port,
    make_invoice,
    start_mint,
)
from slow_proxy import SlowProxy  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402
from worker_harness import RunningWorker  # noqa: E402

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/cashu_worker_chaos"
REDIS_DB = 13
LOG_DIR = MINT_ROOT_DIR  # .test-mints/, git-ignored

# The worker's limits, in the order tasks/config.py requires (soft < hard < lock < visibility).
WORKER_ENV = {
    "CASHU_TASK_SOFT_TIME_LIMIT": "15",
    "CASHU_TASK_TIME_LIMIT": "18",
    "CASHU_LOCK_TIMEOUT": "20",
    "CASHU_VISIBILITY_TIMEOUT": "40",  # a killed worker's unacked task comes back after 40 s
    "CASHU_MINT_TIMEOUT": "8",
    "CASHU_MELT_TIMEOUT": "12",
}
PENDING_MELTS = {"FAKEWALLET_PAY_INVOICE_STATE": "PENDING", "FAKEWALLET_PAYMENT_STATE": "PENDING"}

CALL_TIMEOUT = 30.0  # one task of a flow; no answer by then: ambiguous, noted, moved on
SYNC_TIMEOUT = 90.0  # setup and recovery calls
MAX_IN_FLIGHT = 3  # operations at once
TICK_SECONDS = 4.0  # a beat task every so often
HOLD_SECONDS = 10.0  # how long the proxy sits on an answer the worker is killed waiting for
REACH_TIMEOUT = 25.0  # how long a kill episode waits for its request to reach the mint
DRAIN_SECONDS = 40.0
QUIESCENCE_SECONDS = 300.0
LOCK_WAIT_SECONDS = 900.0  # another chaos run on the same database: wait for it

MINT_PATH = "/v1/mint/bolt11"
MINT_QUOTE_PATH = "/v1/mint/quote/bolt11"
SWAP_PATH = "/v1/swap"
MELT_PATH = "/v1/melt/bolt11"
BEAT_TASKS = (
    "cashu.recovery.run",
    "cashu.beat.poll_melts",
    "cashu.beat.poll_mint_quotes",
    "cashu.beat.check_sends",
)
OP_WEIGHTS = {"mint": 18, "send": 25, "receive": 20, "melt": 22, "rollback": 15}
KILL_KINDS = ("mint", "swap", "melt", "random")
OPEN_STATES = ("executing", "rolling_back")
IMPLIED = {  # (kind, state) -> evented states an operation in that state must have passed
    ("mint", "executing"): {"pending"},
    ("mint", "finalized"): {"pending", "executing"},
    ("send", "pending"): {"prepared"},
    ("send", "finalized"): {"prepared", "pending"},
    ("send", "rolling_back"): {"prepared", "pending"},
}
CREATED_IN = {"send": "prepared", "melt": "prepared", "receive": "prepared"}


class Ambiguous(Exception):  # noqa: N818 - an outcome, not a failure of the harness
    """No answer in time: the worker died, Redis lost the message, or the result."""


@dataclass
class Call:
    name: str
    kwargs: dict[str, Any]
    timeout: float = CALL_TIMEOUT


def call(name: str, timeout: float = CALL_TIMEOUT, **kwargs: Any) -> Call:
    return Call(name, kwargs, timeout)


Flow = Generator[Call, Any, Any]


@dataclass
class Running:
    kind: str
    gen: Flow
    result: Any = None
    deadline: float = 0.0


@dataclass
class MintSlot:
    name: str
    mint: RunningMint
    proxy: SlowProxy
    url: str = ""  # the proxy's URL: what the worker knows the mint as


@dataclass
class Figures:
    flows: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    kills: list[dict[str, Any]] = field(default_factory=list)
    restarts: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


# --- processes ---------------------------------------------------------------------------------


class RedisServer:
    """A redis-server of the harness's own (no persistence), so it can be restarted."""

    def __init__(self) -> None:
        self.port = free_port()
        LOG_DIR.mkdir(exist_ok=True)
        self.log_path = LOG_DIR / f"chaos-redis-{os.getpid()}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = REDIS_DB) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(LOG_DIR),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        probe = redis.Redis(port=self.port, socket_connect_timeout=1)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            with contextlib.suppress(redis.RedisError):
                if probe.ping():
                    probe.close()
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, down_seconds: float) -> None:
        self.kill()
        time.sleep(down_seconds)
        self.start()


@contextlib.contextmanager
def exclusive_database(url: str, log: Callable[[str], None]) -> Iterator[None]:
    """One chaos run per database at a time: a session advisory lock (in the maintenance
    database) for as long as the run lasts; a second run waits for it, boundedly."""
    target = make_url(url)
    digest = hashlib.sha256(f"cashu-worker chaos {target.database}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    engine = create_engine(
        target.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    conn = engine.connect()
    try:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        told = False
        while not conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}):
            if time.monotonic() > deadline:
                raise RuntimeError(f"another chaos run holds {target.database}; gave up waiting")
            if not told:
                log(f"another chaos run is using {target.database}: waiting for it")
                told = True
            time.sleep(2)
        yield
    finally:
        conn.close()  # ends the session: the lock goes with it
        engine.dispose()


# --- the harness -------------------------------------------------------------------------------


class Chaos:
    def __init__(
        self,
        operations: int,
        wallets: int,
        kills: int,
        seed: int,
        *,
        max_seconds: float,
        database_url: str,
        log: Callable[[str], None],
    ) -> None:
        self.operations, self.kills, self.seed = operations, kills, seed
        self.rng = random.Random(seed)
        self.wallets = [f"w{i}" for i in range(wallets)]
        self.max_seconds = max_seconds
        self.database_url = database_url
        self._log = log
        self.fig = Figures()
        self.active: list[Running] = []
        self.pool: list[dict[str, str]] = []  # tokens out: {token, sender, op_id}
        self.t0 = time.monotonic()
        self.redis: RedisServer | None = None
        self.worker: RunningWorker | None = None
        self.slots: list[MintSlot] = []
        self.engine: Engine | None = None
        self.next_tick = 0.0

    def log(self, message: str) -> None:
        self._log(f"[chaos {time.monotonic() - self.t0:6.1f}s] {message}")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    # --- lifecycle ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        with exclusive_database(self.database_url, self.log):
            self.t0 = time.monotonic()
            ok = False
            try:
                self.setup()
                self.fund()
                self.random_phase()
                quiescence = self.settle()
                figures = self.check(quiescence)
                ok = figures["ok"]
                return figures
            finally:
                self.teardown(keep_logs=not ok)

    def setup(self) -> None:
        self.log(f"database {make_url(self.database_url).database}: drop, migrate")
        migrate_fresh(self.database_url)
        self.engine = create_engine(self.database_url, pool_pre_ping=True, pool_size=2)
        self.redis = RedisServer().start()
        self.redis_client = redis.Redis.from_url(self.redis.url())
        self.redis_client.flushdb()
        self.log(f"redis-server on port {self.redis.port}; starting two mints")
        mint_a = start_mint(input_fee_ppk=100)
        self.slots.append(MintSlot("A", mint_a, SlowProxy(mint_a.url).start()))
        mint_b = start_mint(input_fee_ppk=100, env_overrides=dict(PENDING_MELTS))
        self.slots.append(MintSlot("B", mint_b, SlowProxy(mint_b.url).start()))
        self.worker = RunningWorker(
            database_url=self.database_url,
            redis_url=self.redis.url(),
            mnemonic=TEST_MNEMONIC,
            concurrency=3,
            env_overrides=WORKER_ENV,
        ).start()
        self.client = self.worker.client
        for slot in self.slots:
            slot.url = self.call("cashu.mints.add", url=slot.proxy.url)["url"]
        self.log(f"worker up ({self.worker.log_path.name}); mints A and B behind proxies")

    def teardown(self, keep_logs: bool) -> None:
        for slot in self.slots:
            with contextlib.suppress(Exception):
                slot.proxy.release()
                slot.proxy.stop()
        if self.worker is not None:
            with contextlib.suppress(Exception):
                self.worker.kill_hard()
        for slot in self.slots:
            with contextlib.suppress(Exception):
                slot.mint.stop(remove_db=not keep_logs)
        if self.redis is not None:
            self.redis.kill()
            if not keep_logs:
                with contextlib.suppress(OSError):
                    self.redis.log_path.unlink()
        if self.engine is not None:
            self.engine.dispose()
        if keep_logs:
            self.log(
                "kept for post-mortem: "
                + ", ".join(
                    [str(s.mint.db_dir) for s in self.slots]
                    + ([str(self.worker.log_path)] if self.worker else [])
                )
            )

    # --- talking to the worker ---------------------------------------------------------------

    def call(self, name: str, timeout: float = SYNC_TIMEOUT, **kwargs: Any) -> Any:
        """Send one task and wait for it (pumping the flows meanwhile); raise what it raised."""
        result = self.client.send_task(name, kwargs=kwargs)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = _state(result)
            if state == states.SUCCESS:
                return result.result
            if state in states.READY_STATES:
                raise _as_exception(result.result, state)
            self.pump()
            time.sleep(0.05)
        raise Ambiguous(f"{name}: no answer in {timeout:.0f}s")

    def launch(self, kind: str, gen: Flow) -> None:
        self._advance(Running(kind, gen))

    def _advance(self, run: Running, value: Any = None, exc: BaseException | None = None) -> None:
        for _ in range(10):  # a send that fails is thrown back into the flow, boundedly
            try:
                request = run.gen.throw(exc) if exc is not None else run.gen.send(value)
            except StopIteration as stop:
                self.fig.flows[run.kind][str(stop.value or "ok")] += 1
                return
            except Exception as error:  # noqa: BLE001 - a flow ends on any error: noted
                self.fig.flows[run.kind][type(error).__name__] += 1
                return
            try:
                run.result = self.client.send_task(request.name, kwargs=request.kwargs)
            except Exception as error:  # noqa: BLE001 - Redis down while publishing
                value, exc = None, Ambiguous(f"could not send {request.name}: {error}")
                continue
            run.deadline = time.monotonic() + request.timeout
            self.active.append(run)
            return
        self.fig.flows[run.kind]["Ambiguous"] += 1

    def pump(self) -> None:
        """Move on every flow whose task answered (or ran out of time)."""
        now = time.monotonic()
        for run in list(self.active):
            state = _state(run.result)
            if state in states.READY_STATES:
                self.active.remove(run)
                if state == states.SUCCESS:
                    self._advance(run, value=run.result.result)
                else:
                    self._advance(run, exc=_as_exception(run.result.result, state))
            elif now > run.deadline:
                self.active.remove(run)
                self._advance(run, exc=Ambiguous("no answer in time"))

    def in_flight(self) -> int:
        return sum(1 for run in self.active if run.kind != "beat")

    def idle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump()
            self.maybe_tick()
            time.sleep(0.05)

    def maybe_tick(self) -> None:
        if time.monotonic() >= self.next_tick:
            self.next_tick = time.monotonic() + TICK_SECONDS
            self.launch("beat", self.beat_flow(self.rng.choice(BEAT_TASKS)))

    # --- flows: one operation each, a generator of task calls -------------------------------

    def mint_flow(self, wallet: str, slot: MintSlot, amount: int | None = None) -> Flow:
        amount = amount or self.rng.choice([32, 64, 100, 128, 200, 256, 300])
        op = yield call("cashu.mint.prepare", wallet=wallet, mint_url=slot.url, amount=amount)
        done = yield call("cashu.mint.execute", operation_id=op["id"])
        return done["state"]

    def send_flow(self, wallet: str, slot: MintSlot, force_swap: bool = False) -> Flow:
        kwargs: dict[str, Any] = {"amount": self.rng.randint(1, 64)}
        if force_swap or self.rng.random() < 0.2:
            kwargs["include_receiver_fee"] = True
        op = yield call("cashu.send.prepare", wallet=wallet, mint_url=slot.url, **kwargs)
        version = 3 if self.rng.random() < 0.2 else 4
        sent = yield call("cashu.send.execute", operation_id=op["id"], token_version=version)
        if sent.get("token"):
            self.pool.append({"token": sent["token"], "sender": wallet, "op_id": sent["id"]})
        return sent["state"]

    def receive_flow(self, token: dict[str, str], receiver: str) -> Flow:
        got = yield call("cashu.receive.redeem", wallet=receiver, token=token["token"])
        return got["state"]

    def melt_flow(self, wallet: str, slot: MintSlot) -> Flow:
        invoice = make_invoice(self.rng.randint(5, 60))
        op = yield call("cashu.melt.prepare", wallet=wallet, mint_url=slot.url, invoice=invoice)
        done = yield call("cashu.melt.execute", operation_id=op["id"])
        return done["state"]

    def rollback_flow(self, wallet: str, slot: MintSlot) -> Flow:
        choice = self.rng.choices(
            ["send_reclaim", "send_cancel", "melt_cancel", "melt_reclaim"], [40, 20, 20, 20]
        )[0]
        if choice == "send_reclaim":
            op_id = self._open_op("send", "pending")
            if op_id is not None:
                if self.rng.random() < 0.7:  # else a receive of it later fails: claimed back
                    self.pool = [t for t in self.pool if t["op_id"] != op_id]
                done = yield call("cashu.send.rollback", operation_id=op_id)
                return f"send reclaim: {done['state']}"
            choice = "send_cancel"
        if choice == "melt_reclaim":
            op_id = self._open_op("melt", "pending")
            if op_id is not None:
                done = yield call("cashu.melt.reclaim", operation_id=op_id)
                return f"melt reclaim: {done['state']}"
            choice = "melt_cancel"
        if choice == "send_cancel":
            amount = self.rng.randint(1, 40)
            op = yield call("cashu.send.prepare", wallet=wallet, mint_url=slot.url, amount=amount)
            done = yield call("cashu.send.rollback", operation_id=op["id"])
            return f"send cancel: {done['state']}"
        invoice = make_invoice(self.rng.randint(5, 40))
        op = yield call("cashu.melt.prepare", wallet=wallet, mint_url=slot.url, invoice=invoice)
        done = yield call("cashu.melt.cancel", operation_id=op["id"])
        return f"melt cancel: {done['state']}"

    def beat_flow(self, name: str) -> Flow:
        yield call(name)
        return name.rsplit(".", 1)[-1]

    def _open_op(self, kind: str, state: str) -> str | None:
        assert self.engine is not None
        with self.engine.connect() as conn:
            ids = conn.scalars(
                text("SELECT id FROM operations WHERE kind = :k AND state = :s"),
                {"k": kind, "s": state},
            ).all()
        return str(self.rng.choice(ids)) if ids else None

    def _token_to_receive(self) -> dict[str, str] | None:
        if self.pool:
            return self.pool.pop(self.rng.randrange(len(self.pool)))
        assert self.engine is not None
        with self.engine.connect() as conn:  # sends recovery brought to pending: tokens too
            rows = conn.execute(
                text(
                    "SELECT id, wallet, data->>'token' FROM operations "
                    "WHERE kind = 'send' AND state = 'pending' AND data ? 'token'"
                )
            ).all()
        if not rows:
            return None
        op_id, sender, token = self.rng.choice(rows)
        return {"token": token, "sender": sender, "op_id": str(op_id)}

    def random_flow(self, kind: str) -> tuple[str, Flow]:
        wallet = self.rng.choice(self.wallets)
        slot = self.slots[0] if self.rng.random() < 0.55 else self.slots[1]
        if kind == "receive":
            token = self._token_to_receive()
            if token is not None:
                others = [w for w in self.wallets if w != token["sender"]] or self.wallets
                return kind, self.receive_flow(token, self.rng.choice(others))
            kind = "send"
        if kind == "mint":
            return kind, self.mint_flow(wallet, slot)
        if kind == "send":
            return kind, self.send_flow(wallet, slot)
        if kind == "melt":
            return kind, self.melt_flow(wallet, slot)
        return kind, self.rollback_flow(wallet, slot)

    # --- phases -------------------------------------------------------------------------------

    def fund(self) -> None:
        for wallet in self.wallets:
            for slot, amount in zip(self.slots, (512, 256), strict=True):
                self.launch("funding", self.mint_flow(wallet, slot, amount))
        self.drain(SYNC_TIMEOUT)
        self.log(f"funded {len(self.wallets)} wallets: {dict(self.fig.flows['funding'])}")

    def random_phase(self) -> None:
        n = self.operations
        rng = self.rng
        kill_points = sorted(rng.sample(range(2, n), min(self.kills, max(n - 2, 0))))
        kinds = [KILL_KINDS[i % len(KILL_KINDS)] for i in range(len(kill_points))]
        rng.shuffle(kinds)
        if kinds and "mint" not in kinds[:1]:  # the first kill lands during a mint request
            first_mint = kinds.index("mint")
            kinds[0], kinds[first_mint] = kinds[first_mint], kinds[0]
        kills = dict(zip(kill_points, kinds, strict=True))
        happenings = {
            max(1, int(n * 0.35)): "mint B restart (FAILED)",
            max(1, int(n * 0.55)): "mint A restart",
            max(1, int(n * 0.70)): "redis restart",
        }
        budget = self.max_seconds * 0.6
        self.next_tick = time.monotonic() + TICK_SECONDS
        for i in range(n):
            if self.elapsed() > budget:
                self.fig.notes.append(f"random phase stopped by the time bound after {i} ops")
                break
            while self.in_flight() >= MAX_IN_FLIGHT:
                self.idle(0.05)
            if i in happenings:
                self.happening(happenings[i])
            if i in kills:
                self.kill_episode(kills[i], i)
            else:
                kind = rng.choices(list(OP_WEIGHTS), list(OP_WEIGHTS.values()))[0]
                self.launch(*self.random_flow(kind))
            self.idle(rng.uniform(0.0, 0.3))
            if (i + 1) % 10 == 0:
                self.log(f"{i + 1}/{n} operations, {len(self.fig.kills)} kills")

    def happening(self, what: str) -> None:
        self.log(what)
        if what.startswith("mint B"):
            self.slots[1].mint.restart({"FAKEWALLET_PAYMENT_STATE": "FAILED"})
            self.fig.restarts["mint B"] += 1
        elif what.startswith("mint A"):
            self.slots[0].mint.restart()
            self.fig.restarts["mint A"] += 1
        else:
            assert self.redis is not None
            self.redis.restart(down_seconds=1.5)
            self.fig.restarts["redis"] += 1
            self.ensure_worker("after the redis restart")

    def kill_episode(self, kind: str, at: int) -> None:
        """Start an operation, let its request reach the mint, SIGKILL the worker meanwhile."""
        wallet = self.rng.choice(self.wallets)
        slot = self.rng.choice(self.slots)
        path: str | None
        # variants alternate: every third mint kill holds the quote request (an operation
        # left in init), every other swap kill a receive's swap rather than a send's
        episode = sum(1 for k in self.fig.kills if k["kind"] == kind)
        if kind == "mint":
            path = MINT_QUOTE_PATH if episode % 3 == 2 else MINT_PATH
            during, flow = f"mint request ({path})", self.mint_flow(wallet, slot)
        elif kind == "swap":
            token = self._token_to_receive() if episode % 2 == 1 else None
            if token is not None:
                others = [w for w in self.wallets if w != token["sender"]] or self.wallets
                mint_url = _token_mint(token["token"])
                slot = next((s for s in self.slots if s.url == mint_url), slot)
                receiver = self.rng.choice(others)
                during, flow = "swap in a receive", self.receive_flow(token, receiver)
                kind = "receive"
            else:
                during, flow = "swap in a send", self.send_flow(wallet, slot, force_swap=True)
                kind = "send"
            path = SWAP_PATH
        elif kind == "melt":
            path, during, flow = MELT_PATH, "melt request", self.melt_flow(wallet, slot)
        else:
            path, during = None, "random moment"
            op_kind = self.rng.choices(list(OP_WEIGHTS), list(OP_WEIGHTS.values()))[0]
            self.launch(*self.random_flow(op_kind))
            flow = None
        reached = False
        if path is not None:
            slot.proxy.hold(path, HOLD_SECONDS)
            assert flow is not None
            self.launch(kind, flow)
            deadline = time.monotonic() + REACH_TIMEOUT
            while not slot.proxy.answered.is_set() and time.monotonic() < deadline:
                self.pump()
                time.sleep(0.02)
            reached = slot.proxy.answered.is_set()
        else:
            self.idle(self.rng.uniform(0.05, 1.5))
        in_flight = self.in_flight()
        self.crash_worker()
        if path is not None:
            slot.proxy.release()
        self.fig.kills.append(
            {
                "at_op": at,
                "kind": kind if kind in KILL_KINDS else "swap",
                "during": during,
                "mint": slot.name,
                "reached_mint": reached if path else None,
                "in_flight": in_flight,
            }
        )
        self.log(
            f"kill {len(self.fig.kills)}: {during} at mint {slot.name}"
            + (f", request {'reached' if reached else 'did NOT reach'} the mint" if path else "")
            + f", {in_flight} op(s) in flight"
        )

    def crash_worker(self) -> None:
        assert self.worker is not None
        self.worker.kill_hard()
        self.drop_dead_workers_holds()
        self.start_worker()

    def start_worker(self) -> None:
        assert self.worker is not None
        for attempt in range(3):
            try:
                self.worker.start()
                self.fig.restarts["worker"] += 1
                return
            except Exception as exc:  # noqa: BLE001 - e.g. Redis still coming up: try again
                self.worker.kill_hard()
                if attempt == 2:
                    raise
                self.log(f"worker did not start ({type(exc).__name__}); again")
                time.sleep(2)

    def drop_dead_workers_holds(self) -> None:
        """What a SIGKILLed worker held lapses by timeout (locks 20 s, leases 60 s): now."""
        assert self.engine is not None
        with contextlib.suppress(redis.RedisError):
            for key in self.redis_client.scan_iter("cashu:lock:op:*"):
                self.redis_client.delete(key)
        with self.engine.begin() as conn:
            conn.execute(
                text("UPDATE operations SET claimed_until = NULL WHERE claimed_until IS NOT NULL")
            )

    def ensure_worker(self, why: str) -> None:
        """The worker answers a ping within 30 s, or it is replaced."""
        assert self.worker is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.worker.running and self.client.control.ping(timeout=1.0):
                    return
            self.pump()
            time.sleep(0.5)
        self.log(f"worker silent {why}: replaced")
        self.fig.notes.append(f"worker replaced {why} (did not answer a ping in 30 s)")
        self.crash_worker()

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self.active and time.monotonic() < end:
            self.pump()
            time.sleep(0.05)
        for run in self.active:
            self.fig.flows[run.kind]["abandoned"] += 1
            run.gen.close()
        self.active.clear()

    def settle(self) -> dict[str, Any]:
        """A healthy worker, pending melts settled at the mint, recovery until nothing moves."""
        for slot in self.slots:
            slot.proxy.release()
        self.log(f"random phase over; draining {self.in_flight()} op(s) in flight")
        self.drain(DRAIN_SECONDS)
        assert self.worker is not None
        self.worker.kill_hard()  # whatever it was doing: a fresh, healthy worker
        self.drop_dead_workers_holds()
        self.start_worker()
        self.slots[1].mint.restart({"FAKEWALLET_PAYMENT_STATE": "SETTLED"})
        self.fig.restarts["mint B"] += 1
        self.log("mint B restarted with FAKEWALLET_PAYMENT_STATE=SETTLED; recovering")
        start = time.monotonic()
        previous, stable, rounds = None, 0, 0
        while time.monotonic() - start < QUIESCENCE_SECONDS:
            rounds += 1
            moved = 0
            for name in BEAT_TASKS:
                try:
                    counts = self.call(name)
                except Exception as exc:  # noqa: BLE001 - a sweep racing a mint startup
                    self.fig.notes.append(f"recovery round {rounds}: {name} {type(exc).__name__}")
                    moved += 1
                    continue
                moved += counts.get("skipped", 0)
            snapshot = self.snapshot()
            settleable = snapshot["settleable"]
            if snapshot == previous and not settleable and not moved:
                stable += 1
                if stable >= 2:
                    break
            else:
                stable = 0
            previous = snapshot
            time.sleep(1.0)
        seconds = time.monotonic() - start
        reached = stable >= 2
        self.log(f"quiescence {'reached' if reached else 'NOT reached'} after {rounds} rounds")
        return {"reached": reached, "rounds": rounds, "seconds": round(seconds, 1)}

    def snapshot(self) -> dict[str, Any]:
        assert self.engine is not None
        with self.engine.connect() as conn:
            ops = conn.execute(
                text(
                    "SELECT kind, state, count(*), sum(version) FROM operations "
                    "GROUP BY kind, state ORDER BY kind, state"
                )
            ).all()
            proofs = conn.execute(
                text("SELECT state, count(*), sum(amount) FROM proofs GROUP BY state ORDER BY 1")
            ).all()
        settleable = sum(
            n
            for kind, state, n, _ in ops
            if state in OPEN_STATES or (kind in ("melt", "mint") and state == "pending")
        )
        return {
            "ops": [tuple(r) for r in ops],
            "proofs": [tuple(r) for r in proofs],
            "settleable": settleable,
        }

    # --- the checks ----------------------------------------------------------------------------

    def check(self, quiescence: dict[str, Any]) -> dict[str, Any]:
        from sagas import melt, mint, receive, send  # noqa: F401 - registers the specs
        from sagas.engine import SPECS, event_type

        assert self.engine is not None
        with self.engine.connect() as conn:
            ops = conn.execute(
                text("SELECT id, wallet, kind, state, amount, data FROM operations")
            ).all()
            proofs = conn.execute(
                text("SELECT wallet, mint_url, amount, state, y, secret, used_by FROM proofs")
            ).all()
            events = conn.execute(text("SELECT operation_id, type FROM events ORDER BY id")).all()
        op_state = {op.id: op.state for op in ops}
        op_kind = {op.id: op.kind for op in ops}
        invariants: dict[str, dict[str, Any]] = {}

        # 1. balances
        expected: Counter = Counter()
        for op in ops:
            expected[op.wallet] += expected_effect(op.kind, op.state, op.amount or 0, op.data)
        held: Counter = Counter()
        for p in proofs:
            if p.state != "spent":
                held[p.wallet] += p.amount
        balances: dict[str, dict[str, int]] = {}
        for wallet in sorted(set(self.wallets) | set(expected) | set(held)):
            try:
                total = self.call("cashu.wallet.balance", wallet=wallet)["total"]
            except Exception:  # noqa: BLE001 - the database sum stands in
                total = None
            balances[wallet] = {"expected": expected[wallet], "actual": held[wallet], "task": total}
        wrong = {w: b for w, b in balances.items() if not b["expected"] == b["actual"] == b["task"]}
        invariants["1 balance = formula"] = {"ok": not wrong, "detail": wrong or None}

        # 2. the mint agrees
        by_url = {slot.url: slot.mint.url for slot in self.slots}
        verdicts: Counter = Counter()
        for url in sorted({p.mint_url for p in proofs}):
            ours = [p for p in proofs if p.mint_url == url]
            states_at_mint = checkstate(by_url.get(url, url), [p.y for p in ours])
            for p in ours:
                verdicts[(p.state, states_at_mint.get(p.y, "?"))] += 1
        bad = {
            f"{ours} here, {theirs} at mint": n
            for (ours, theirs), n in verdicts.items()
            if (ours == "spent") == (theirs == "UNSPENT")
        }
        invariants["2 held proofs UNSPENT at mint"] = {
            "ok": not bad,
            "detail": bad or None,
            "checked": {f"{o}/{t}": n for (o, t), n in sorted(verdicts.items())},
        }

        # 3. nothing left mid-way
        stuck = [
            {"id": str(op.id), "kind": op.kind, "state": op.state, "wallet": op.wallet}
            for op in ops
            if op.state in OPEN_STATES
        ]
        invariants["3 none executing/rolling_back"] = {"ok": not stuck, "detail": stuck or None}

        # 4. one holder per proof
        problems: Counter = Counter()
        for p in proofs:
            if p.state in ("reserved", "pending"):
                holder = op_state.get(p.used_by) if p.used_by else None
                if holder is None:
                    problems[f"{p.state} proof without a holder"] += 1
                elif holder in SPECS[op_kind[p.used_by]].terminal:
                    problems[f"{p.state} proof held by a {holder} operation"] += 1
            elif p.state == "unspent" and p.used_by is not None:
                problems["unspent proof still marked used_by"] += 1
        for column in ("y", "secret"):
            seen = Counter(getattr(p, column) for p in proofs)
            dupes = sum(1 for n in seen.values() if n > 1)
            if dupes:
                problems[f"{column} appearing twice"] += dupes
        invariants["4 one holder per proof"] = {
            "ok": not problems,
            "detail": dict(problems) or None,
        }

        # 5. events
        types: dict[Any, list[str]] = defaultdict(list)
        for op_id, kind in events:
            types[op_id].append(kind)
        missing: list[dict[str, Any]] = []
        for op in ops:
            spec = SPECS[op.kind]
            need = set(IMPLIED.get((op.kind, op.state), set())) | {op.state}
            if op.kind in CREATED_IN:
                need.add(CREATED_IN[op.kind])
            if op.kind == "mint" and op.state == "failed" and (op.data or {}).get("request"):
                need.add("pending")
            need &= spec.evented
            have = types.get(op.id, [])
            lacking = sorted(s for s in need if event_type(spec, s) not in have)
            last_wrong = (
                op.state in spec.evented and have and have[-1] != event_type(spec, op.state)
            )
            if lacking or last_wrong:
                missing.append(
                    {"id": str(op.id), "kind": op.kind, "state": op.state, "lacking": lacking}
                )
        invariants["5 an event per state reached"] = {
            "ok": not missing,
            "detail": missing[:10] or None,
            "events": len(events),
        }

        by_kind_state: dict[str, Counter] = defaultdict(Counter)
        for op in ops:
            by_kind_state[op.kind][op.state] += 1
        kills_by = Counter(k["during"] for k in self.fig.kills)
        ok = all(inv["ok"] for inv in invariants.values())
        return {
            "ok": ok,
            "seed": self.seed,
            "wallets": len(self.wallets),
            "operations_requested": self.operations,
            "operations_launched": sum(
                sum(c.values()) for k, c in self.fig.flows.items() if k not in ("beat", "funding")
            ),
            "flows": {k: dict(c) for k, c in sorted(self.fig.flows.items())},
            "operations_by_kind_state": {k: dict(c) for k, c in sorted(by_kind_state.items())},
            "kills": {
                "total": len(self.fig.kills),
                "by_moment": dict(kills_by),
                "request_reached_mint": sum(1 for k in self.fig.kills if k["reached_mint"]),
                "list": self.fig.kills,
            },
            "restarts": dict(self.fig.restarts),
            "quiescence": quiescence,
            "balances": balances,
            "proofs": {
                state: {"count": sum(1 for p in proofs if p.state == state), "sat": amount}
                for state, amount in sorted(_sums(proofs).items())
            },
            "invariants": invariants,
            "notes": self.fig.notes,
            "wall_seconds": round(self.elapsed(), 1),
        }


# --- helpers -----------------------------------------------------------------------------------


def expected_effect(kind: str, state: str, amount: int, data: dict | None) -> int:
    """What one operation, as it is now, did to its wallet's total (see the module doc)."""
    d = data or {}
    if kind in ("mint", "receive"):
        return amount if state == "finalized" else 0
    if kind == "send":
        fee = d.get("fee", 0)
        if state == "finalized":
            return -(amount + d.get("receiver_fee", 0) + fee)
        if state == "rolled_back":
            return -(fee + d["reclaim_fee"]) if "reclaim_fee" in d else 0
        if state in ("pending", "rolling_back"):
            return -fee
        return 0
    if kind == "melt":
        if state == "finalized":
            return -(amount + d["effective_fee"])
        if state == "rolled_back":
            return -d.get("effective_fee", 0)
        if state in ("pending", "rolling_back"):
            swapped = d.get("needs_swap") and d.get("phase") == "melt"
            return -(d.get("swap_fee", 0) if swapped else 0)
        return 0
    return 0


def checkstate(mint_url: str, ys: list[str]) -> dict[str, str]:
    from nuts.client import MintClient

    found: dict[str, str] = {}
    with MintClient(mint_url, timeout=30) as client:
        for start in range(0, len(ys), 100):
            for s in client.checkstate(ys[start : start + 100]):
                found[s.Y] = str(s.state)
    return found


def _sums(proofs: list[Any]) -> dict[str, int]:
    sums: Counter = Counter()
    for p in proofs:
        sums[p.state] += p.amount
    return dict(sums)


def _token_mint(token: str) -> str:
    from nuts.tokens import decode_token

    return decode_token(token).mint.rstrip("/")


def _state(result: Any) -> str | None:
    try:
        return result.state
    except Exception:  # noqa: BLE001 - Redis down or restarting: not known yet
        return None


def _as_exception(value: Any, state: str) -> BaseException:
    return value if isinstance(value, BaseException) else Ambiguous(f"task {state}: {value!r}")


# --- output ------------------------------------------------------------------------------------


def format_figures(fig: dict[str, Any]) -> str:
    lines = [
        f"chaos run: seed {fig['seed']}, {fig['wallets']} wallets, "
        f"{fig['operations_launched']} operations launched ({fig['operations_requested']} asked), "
        f"wall time {fig['wall_seconds']} s",
        "",
        "operations by kind and final state (database):",
    ]
    for kind, by_state in fig["operations_by_kind_state"].items():
        parts = ", ".join(f"{s} {n}" for s, n in sorted(by_state.items()))
        lines.append(f"  {kind:<8} {sum(by_state.values()):>4}   {parts}")
    lines.append("flow outcomes as the driver saw them (Ambiguous = no answer in time):")
    for kind, outcomes in fig["flows"].items():
        parts = ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items(), key=lambda x: -x[1]))
        lines.append(f"  {kind:<8} {parts}")
    kills = fig["kills"]
    lines.append(
        f"kills: {kills['total']} (request reached the mint in {kills['request_reached_mint']})"
    )
    for during, n in sorted(kills["by_moment"].items()):
        lines.append(f"  {n:>3}  during {during}")
    for k in kills["list"]:
        reached = {True: "reached the mint", False: "did not reach the mint", None: "-"}
        lines.append(
            f"       op {k['at_op']:>3}: {k['during']} at mint {k['mint']}, "
            f"{reached[k['reached_mint']]}, {k['in_flight']} op(s) in flight"
        )
    lines.append("restarts: " + ", ".join(f"{k} {n}" for k, n in sorted(fig["restarts"].items())))
    q = fig["quiescence"]
    lines.append(
        f"recovery to quiescence: {'reached' if q['reached'] else 'NOT reached'} "
        f"in {q['rounds']} rounds, {q['seconds']} s"
    )
    lines.append("balances (sat): wallet  expected  actual(db)  actual(cashu.wallet.balance)")
    for wallet, b in fig["balances"].items():
        mark = "ok" if b["expected"] == b["actual"] == b["task"] else "MISMATCH"
        lines.append(f"  {wallet:<6} {b['expected']:>9} {b['actual']:>11} {b['task']!s:>9}  {mark}")
    lines.append(
        "proofs: "
        + ", ".join(f"{s} {v['count']} ({v['sat']} sat)" for s, v in fig["proofs"].items())
    )
    lines.append("invariants:")
    for name, inv in fig["invariants"].items():
        extra = f"  {inv['detail']}" if inv["detail"] else ""
        lines.append(f"  {'PASS' if inv['ok'] else 'FAIL'}  {name}{extra}")
    checked = fig["invariants"]["2 held proofs UNSPENT at mint"]["checked"]
    lines.append("  (ours/mint: " + ", ".join(f"{k} {n}" for k, n in checked.items()) + ")")
    for note in fig["notes"]:
        lines.append(f"note: {note}")
    lines.append("RESULT: " + ("every invariant holds" if fig["ok"] else "INVARIANT FAILED"))
    return "\n".join(lines)


def run_chaos(
    operations: int = 200,
    wallets: int = 4,
    kills: int = 20,
    seed: int = 1,
    *,
    max_seconds: float = 1800.0,
    database_url: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole campaign; returns the figures (figures["ok"]: every invariant held)."""
    chaos = Chaos(
        operations,
        wallets,
        kills,
        seed,
        max_seconds=max_seconds,
        database_url=database_url or os.environ.get("CHAOS_DATABASE_URL", DEFAULT_DATABASE_URL),
        log=log or (lambda line: print(line, file=sys.stderr, flush=True)),
    )
    return chaos.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operations", type=int, default=200)
    parser.add_argument("--wallets", type=int, default=4)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = run_chaos(
        args.operations, args.wallets, args.kills, args.seed, max_seconds=args.max_seconds
    )
    print(json.dumps(figures, indent=2, default=str) if args.json else format_figures(figures))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
