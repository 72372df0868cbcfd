"""Chaos harness: wallets doing a random mix of operations while everything crashes.

Run by hand (about five minutes; bounded by --max-seconds):

    .venv/bin/python bench/chaos.py --operations 200 --wallets 4 --kills 20 --cuts 9 --seed 1
        [--drop-dead-holds] [--json]

tests/test_chaos.py runs a reduced version (40 operations, 5 kills, 3 cuts) in the test suite.

What it sets up, all of its own (the regular test suite may run at the same time): a
private PostgreSQL cluster (tests/pg_harness.py: initdb into a directory under .test-mints/,
a free port) holding the database `cashu_worker_chaos`, migrated with alembic; with
CHAOS_DATABASE_URL set, that database instead (created if missing, schema dropped, one run
at a time per database), and then PostgreSQL is never crashed. A redis-server subprocess on
a free port (db 13, flushed). Two Nutshell FakeWallet mints (input fee 100 ppk) each behind
a SlowProxy (A pays melts at once; B answers melts PENDING and keeps them pending when
checked). One `celery -A tasks worker` on that database and that Redis, with short limits
(time limit 18 s, visibility timeout 40 s: a killed worker's unacked task comes back).

The random phase: a driver (this process) sends tasks by name with a bounded wait each;
up to three operations are in flight at once. The driver also plays celery beat: each
entry of beat_schedule.py, under the worker's settings, is sent when due (the pollers every
5 s, recovery.run every 30 s, the event relay every 2 s, ...). Operations: mint (quote +
issue), send (swap into a token, V3 or V4, sometimes with the receiver's fee), receive (a
token another wallet sent), melt (on A paid at once, on B pending) and rollbacks (reclaim
a pending send, cancel a prepared send or melt, reclaim a pending melt). The faults, at
chosen points:

- worker SIGKILL (--kills; its whole process group, then a new worker): during a mint
  request (the proxy holds /v1/mint/bolt11 answers, every third time the quote request),
  during a swap (/v1/swap, in a send or a receive), during a melt request (/v1/melt/bolt11),
  or at a random moment;
- mint SIGKILL: mint B at 35% of the operations (started again with
  FAKEWALLET_PAYMENT_STATE=FAILED: its pending melts then fail when checked), mint A at
  55%; each killed with -9 and started again on the same port, database and keys;
- postgres crash at 45% (the private cluster only): `pg_ctl stop -m immediate`, down 1.5 s,
  started again (crash recovery);
- redis SIGKILL at 70%: the harness's redis-server killed with -9, down 1.5 s, started
  again empty (queued tasks, results and locks are lost);
- cuts (--cuts): the proxy of a mint cuts the next request on a path, while an operation
  that makes one runs: reset before the mint sees it (cut before), forwarded and then reset
  instead of answered (cut after), or answered 502 unforwarded (cut 502); on /v1/swap (a
  send with a swap, or a receive; a melt's pre-swap or a reclaim may meet it first),
  /v1/melt/bolt11 and /v1/mint/bolt11. The nine pairs in turn, the first three covering
  every path and every kind of cut.

Nothing releases what a killed worker held (its Redis locks, its pollers' leases): they
lapse as the code under test lets them. With --drop-dead-holds the harness deletes them at
each worker kill instead. An answer that does not come (a killed worker, a lost message) is
only noted: nothing is derived from task results.

Each fault is measured, in seconds from the restart (the moment the crashed process is
started again) for a crash and from the cut for a cut, to two moments:

- service: the first cashu.wallet.balance that answers (one try at a time, 5 s each, for at
  most 60 s);
- settled: polling the database every 0.5 s (for at most 90 s), no operation created
  before that moment is in executing or rolling_back, and no proof is reserved by an
  operation whose request failed after the fault, or was sent before it and is still
  unanswered.

The figures give min / median / max per kind of fault (faults overlap: a later one may
delay an earlier one's settling), and for a fault slower than 30 s to settle what it last
waited on.

Then recovery: the faults' settling waited for (within their bounds), a healthy worker,
mint B restarted with FAKEWALLET_PAYMENT_STATE=SETTLED, and recovery.run / poll_melts /
poll_mint_quotes / check_sends until nothing changes. The checks, from the database and
the mints:

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
6. Every finalized melt cost (its effective_fee) between 0 and its worst case, the
   fee_reserve + swap_fee + input_fee in its data; the figures give the largest cost /
   worst case.

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
import gc
import hashlib
import json
import os
import random
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from statistics import median
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
    make_invoice,
    start_mint,
)
from pg_harness import PrivatePostgres  # noqa: E402
from redis_harness import RedisServer  # noqa: E402
from slow_proxy import Cut, SlowProxy  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402
from worker_harness import RunningWorker  # noqa: E402

DATABASE_NAME = "cashu_worker_chaos"
REDIS_DB = 13
LOG_DIR = MINT_ROOT_DIR  # .test-mints/, git-ignored

# The worker's limits, in the order tasks/config.py requires (soft < hard < visibility).
WORKER_ENV = {
    "CASHU_TASK_SOFT_TIME_LIMIT": "15",
    "CASHU_TASK_TIME_LIMIT": "18",
    "CASHU_VISIBILITY_TIMEOUT": "40",  # a killed worker's unacked task comes back after 40 s
    "CASHU_MINT_TIMEOUT": "8",
    "CASHU_MELT_TIMEOUT": "12",
}
FIXED_LOCK_TIMEOUT = "20"  # only for code whose lock has a fixed timeout: see worker_env()
PENDING_MELTS = {"FAKEWALLET_PAY_INVOICE_STATE": "PENDING", "FAKEWALLET_PAYMENT_STATE": "PENDING"}

CALL_TIMEOUT = 30.0  # one task of a flow; no answer by then: ambiguous, noted, moved on
SYNC_TIMEOUT = 90.0  # setup and recovery calls
MAX_IN_FLIGHT = 3  # operations at once
HOLD_SECONDS = 10.0  # how long the proxy sits on an answer the worker is killed waiting for
REACH_TIMEOUT = 25.0  # how long an episode waits for its request to reach the proxy
DOWN_SECONDS = 1.5  # how long a crashed database or Redis stays down
SERVICE_PROBE = "cashu.wallet.balance"
PROBE_TIMEOUT = 5.0  # one try of the service probe
SERVICE_BOUND = 60.0  # no service this long after a restart: "not served"
SETTLE_POLL_SECONDS = 0.5
SETTLE_BOUND = 90.0  # not settled this long after a fault: "not settled"
SLOW_SETTLE_SECONDS = 30.0  # a fault settled slower than this: what it waited on is printed
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
KILL_PATHS = {"swap": SWAP_PATH, "melt": MELT_PATH}  # "mint": MINT_PATH or MINT_QUOTE_PATH
CUT_PATHS = (SWAP_PATH, MELT_PATH, MINT_PATH)
CUT_KINDS = (Cut.BEFORE, Cut.AFTER, Cut.BAD_GATEWAY)
# the nine (path, cut) pairs, in an order whose first three take every path and every cut
CUT_PLAN = tuple((CUT_PATHS[i % 3], CUT_KINDS[(i % 3 + i // 3) % 3]) for i in range(9))
WORKER_KILL, MINT_KILL, PG_CRASH, REDIS_KILL = (
    "worker SIGKILL",
    "mint SIGKILL",
    "postgres crash",
    "redis SIGKILL",
)
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
    options: dict[str, Any] = field(default_factory=dict)  # send_task's: queue, expires


def call(name: str, timeout: float = CALL_TIMEOUT, **kwargs: Any) -> Call:
    return Call(name, kwargs, timeout)


Flow = Generator[Call, Any, Any]


@dataclass
class Running:
    kind: str
    gen: Flow
    result: Any = None
    deadline: float = 0.0
    sent_at: float = 0.0  # when its current request went out
    op_id: str | None = None  # the operation, once a task answered with it


@dataclass
class MintSlot:
    name: str
    mint: RunningMint
    proxy: SlowProxy
    url: str = ""  # the proxy's URL: what the worker knows the mint as


@dataclass
class Watch:
    """One fault, and how long after it (`since`: its restart, or the cut) service came
    back and everything settled."""

    kind: str
    detail: str
    fault_at: float  # monotonic
    since: float  # monotonic: what the times are measured from
    since_what: str  # "restart" or "fault"
    wall: datetime  # `since` on the database's clock, to compare with created_at
    down: float = 0.0
    service: float | None = None
    settled: float | None = None
    gave_up: bool = False
    unsettled: int = 0  # what the last poll found unsettled
    waited_on: list[str] = field(default_factory=list)  # the last things found unsettled

    @property
    def waiting(self) -> bool:
        return self.settled is None and not self.gave_up


@dataclass
class BeatEntry:
    """One entry of the beat schedule the driver plays (beat_schedule.py)."""

    task: str
    seconds: float
    options: dict[str, Any]
    due: float = 0.0


@dataclass
class Figures:
    flows: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    kills: list[dict[str, Any]] = field(default_factory=list)
    cuts: list[dict[str, Any]] = field(default_factory=list)
    restarts: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


# --- processes ---------------------------------------------------------------------------------


def worker_settings(env: dict[str, str]) -> Any:
    """tasks.config.Settings as the worker given `env` reads them."""
    from tasks.config import Settings

    return Settings(**{key.removeprefix("CASHU_").lower(): value for key, value in env.items()})


def worker_env() -> dict[str, str]:
    """WORKER_ENV, plus CASHU_LOCK_TIMEOUT only where the code under test would refuse to
    start without it: a per-operation lock with a fixed timeout (360 s by default) that
    must lie between the task time limit and the visibility timeout. Code whose lock is a
    short lease its holder renews has no such rule and gets WORKER_ENV as it is."""
    from pydantic import ValidationError

    try:
        worker_settings(WORKER_ENV)
    except ValidationError:
        return {**WORKER_ENV, "CASHU_LOCK_TIMEOUT": FIXED_LOCK_TIMEOUT}
    return dict(WORKER_ENV)


def beat_entries(env: dict[str, str]) -> list[BeatEntry]:
    """Every entry of the beat schedule (beat_schedule.py) under the worker's settings."""
    from beat_schedule import make_beat_schedule

    schedule = make_beat_schedule(worker_settings(env))
    return [
        BeatEntry(entry["task"], entry["schedule"].total_seconds(), dict(entry["options"]))
        for entry in schedule.values()
    ]


def kill_mint(mint: RunningMint) -> None:
    """SIGKILL (-9) a mint's process group. RunningMint.restart then finds it dead, and
    starts it again on the same port, database and keys."""
    assert mint.proc is not None
    os.killpg(mint.proc.pid, signal.SIGKILL)
    mint.proc.wait(timeout=10)


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
        cuts: int,
        seed: int,
        *,
        max_seconds: float,
        database_url: str | None,
        drop_dead_holds: bool,
        log: Callable[[str], None],
    ) -> None:
        self.operations, self.kills, self.cuts, self.seed = operations, kills, cuts, seed
        self.rng = random.Random(seed)
        self.wallets = [f"w{i}" for i in range(wallets)]
        self.max_seconds = max_seconds
        self.shared_database_url = database_url  # None: a private cluster, crashed once
        self.database_url = ""
        self.drop_dead_holds = drop_dead_holds
        self._log = log
        self.fig = Figures()
        self.active: list[Running] = []
        self.pool: list[dict[str, str]] = []  # tokens out: {token, sender, op_id}
        self.t0 = time.monotonic()
        self.pg: PrivatePostgres | None = None
        self.redis: RedisServer | None = None
        self.worker: RunningWorker | None = None
        self.slots: list[MintSlot] = []
        self.engine: Engine | None = None
        self.beat: list[BeatEntry] = []
        self.watches: list[Watch] = []
        self.failed_ops: dict[str, float] = {}  # operation id -> when a request of it failed
        self.next_poll = 0.0

    def log(self, message: str) -> None:
        self._log(f"[chaos {time.monotonic() - self.t0:6.1f}s] {message}")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    # --- lifecycle ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        with self.database():
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

    @contextlib.contextmanager
    def database(self) -> Iterator[None]:
        """The shared database given, held for this run alone; else a private cluster."""
        if self.shared_database_url is not None:
            self.database_url = self.shared_database_url
            with exclusive_database(self.database_url, self.log):
                yield
            return
        self.pg = PrivatePostgres().start()
        self.database_url = self.pg.url(DATABASE_NAME)
        yield

    def setup(self) -> None:
        where = f"private cluster on port {self.pg.port}" if self.pg else "shared"
        self.log(f"database {make_url(self.database_url).database} ({where}): drop, migrate")
        migrate_fresh(self.database_url)
        self.engine = create_engine(self.database_url, pool_pre_ping=True, pool_size=2)
        self.redis = RedisServer().start()
        self.redis_client = redis.Redis.from_url(self.redis.url(REDIS_DB))
        self.redis_client.flushdb()
        self.log(f"redis-server on port {self.redis.port}; starting two mints")
        mint_a = start_mint(input_fee_ppk=100)
        self.slots.append(MintSlot("A", mint_a, SlowProxy(mint_a.url).start()))
        mint_b = start_mint(input_fee_ppk=100, env_overrides=dict(PENDING_MELTS))
        self.slots.append(MintSlot("B", mint_b, SlowProxy(mint_b.url).start()))
        env = worker_env()
        if "CASHU_LOCK_TIMEOUT" in env:
            self.fig.notes.append(
                "the code under test has a fixed-timeout lock: CASHU_LOCK_TIMEOUT="
                f"{env['CASHU_LOCK_TIMEOUT']} so that it fits the short limits"
            )
        self.beat = beat_entries(env)
        self.worker = RunningWorker(
            database_url=self.database_url,
            redis_url=self.redis.url(REDIS_DB),
            mnemonic=TEST_MNEMONIC,
            concurrency=3,
            env_overrides=env,
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
            self.active.clear()
            gc.collect()  # task results left in cycles unsubscribe now, while Redis answers
            self.redis.kill()
            if not keep_logs:
                with contextlib.suppress(OSError):
                    self.redis.log_path.unlink()
        if self.engine is not None:
            self.engine.dispose()
        if self.pg is not None:
            with contextlib.suppress(Exception):
                if keep_logs:
                    self.pg.stop()
                else:
                    self.pg.cleanup()
        if keep_logs:
            self.log(
                "kept for post-mortem: "
                + ", ".join(
                    [str(s.mint.db_dir) for s in self.slots]
                    + ([str(self.worker.log_path)] if self.worker else [])
                    + ([str(self.pg.dir)] if self.pg else [])
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
        if exc is not None and run.op_id is not None:
            self.failed_ops[run.op_id] = time.monotonic()
        if run.op_id is None and run.kind != "beat" and isinstance(value, dict):
            run.op_id = str(value["id"]) if value.get("id") else None
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
                run.result = self.client.send_task(
                    request.name, kwargs=request.kwargs, **request.options
                )
            except Exception as error:  # noqa: BLE001 - Redis down while publishing
                value, exc = None, Ambiguous(f"could not send {request.name}: {error}")
                continue
            run.sent_at = time.monotonic()
            run.deadline = run.sent_at + request.timeout
            self.active.append(run)
            return
        self.fig.flows[run.kind]["Ambiguous"] += 1

    def pump(self) -> None:
        """Move on every flow whose task answered (or ran out of time); watch the faults."""
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
        self.poll_settled()

    def in_flight(self) -> int:
        return sum(1 for run in self.active if run.kind != "beat")

    def idle(self, seconds: float, tick: bool = True) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump()
            if tick:
                self.maybe_tick()
            time.sleep(0.05)

    def wait_until(self, done: Callable[[], bool], seconds: float = REACH_TIMEOUT) -> bool:
        """Pump the flows until `done()` or `seconds` passed; the last `done()`."""
        deadline = time.monotonic() + seconds
        while not done() and time.monotonic() < deadline:
            self.pump()
            time.sleep(0.02)
        return done()

    def start_beat(self) -> None:
        """The beat's first ticks, one interval from now (as celery beat starts)."""
        for entry in self.beat:
            entry.due = time.monotonic() + entry.seconds

    def maybe_tick(self) -> None:
        """Send every beat task that is due (the driver plays celery beat)."""
        now = time.monotonic()
        for entry in self.beat:
            if now >= entry.due:
                entry.due = now + entry.seconds
                self.launch("beat", self.beat_flow(entry))

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

    def beat_flow(self, entry: BeatEntry) -> Flow:
        yield Call(entry.task, {}, options=entry.options)
        return entry.task.rsplit(".", 1)[-1]

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

    def random_kind(self) -> str:
        return self.rng.choices(list(OP_WEIGHTS), list(OP_WEIGHTS.values()))[0]

    def random_flow(self, kind: str) -> tuple[str, Flow]:
        wallet = self.rng.choice(self.wallets)
        slot = self.slots[0] if self.rng.random() < 0.55 else self.slots[1]
        if kind == "receive":
            token = self._token_to_receive()
            if token is not None:
                return kind, self.receive_flow(token, self._receiver(token))
            kind = "send"
        if kind == "mint":
            return kind, self.mint_flow(wallet, slot)
        if kind == "send":
            return kind, self.send_flow(wallet, slot)
        if kind == "melt":
            return kind, self.melt_flow(wallet, slot)
        return kind, self.rollback_flow(wallet, slot)

    def _receiver(self, token: dict[str, str]) -> str:
        others = [w for w in self.wallets if w != token["sender"]] or self.wallets
        return self.rng.choice(others)

    def path_flow(self, path: str, variant: int) -> tuple[str, str, Flow, MintSlot]:
        """An operation that makes a request on `path`: its kind, what it is, its flow and
        its mint. A swap is a send's (even variants) or a receive's (odd, if a token is out)."""
        wallet = self.rng.choice(self.wallets)
        slot = self.rng.choice(self.slots)
        if path in (MINT_PATH, MINT_QUOTE_PATH):
            return "mint", f"mint request ({path})", self.mint_flow(wallet, slot), slot
        if path == MELT_PATH:
            return "melt", "melt request", self.melt_flow(wallet, slot), slot
        token = self._token_to_receive() if variant % 2 == 1 else None
        if token is None:
            flow = self.send_flow(wallet, slot, force_swap=True)
            return "send", "swap in a send", flow, slot
        mint_url = _token_mint(token["token"])
        slot = next((s for s in self.slots if s.url == mint_url), slot)
        return "receive", "swap in a receive", self.receive_flow(token, self._receiver(token)), slot

    # --- phases -------------------------------------------------------------------------------

    def fund(self) -> None:
        for wallet in self.wallets:
            for slot, amount in zip(self.slots, (512, 256), strict=True):
                self.launch("funding", self.mint_flow(wallet, slot, amount))
        self.drain(SYNC_TIMEOUT)
        self.log(f"funded {len(self.wallets)} wallets: {dict(self.fig.flows['funding'])}")

    def random_phase(self) -> None:
        n = self.operations
        episodes = self.plan_episodes(n)  # operations that are a worker kill's or a cut's
        crashes: dict[int, list[Callable[[], None]]] = defaultdict(list)
        crashes[max(1, int(n * 0.35))].append(
            partial(self.crash_mint, self.slots[1], {"FAKEWALLET_PAYMENT_STATE": "FAILED"})
        )
        if self.pg is not None:
            crashes[max(1, int(n * 0.45))].append(self.crash_postgres)
        crashes[max(1, int(n * 0.55))].append(partial(self.crash_mint, self.slots[0]))
        crashes[max(1, int(n * 0.70))].append(self.crash_redis)
        budget = self.max_seconds * 0.6
        self.start_beat()
        for i in range(n):
            if self.elapsed() > budget:
                self.fig.notes.append(f"random phase stopped by the time bound after {i} ops")
                break
            while self.in_flight() >= MAX_IN_FLIGHT:
                self.idle(0.05)
            for crash in crashes.get(i, []):
                crash()
            if i in episodes:
                episodes[i](i)
            else:
                self.launch(*self.random_flow(self.random_kind()))
            self.idle(self.rng.uniform(0.0, 0.3))
            if (i + 1) % 10 == 0:
                self.log(f"{i + 1}/{n} operations, {len(self.fig.kills)} kills")

    def plan_episodes(self, n: int) -> dict[int, Callable[[int], None]]:
        """The operations (from the third on) that are a worker kill's, and among the rest
        those that are a cut's: operation number -> its episode."""
        points = list(range(2, n))
        kill_points = sorted(self.rng.sample(points, min(self.kills, len(points))))
        kinds = [KILL_KINDS[i % len(KILL_KINDS)] for i in range(len(kill_points))]
        self.rng.shuffle(kinds)
        if kinds and "mint" not in kinds[:1]:  # the first kill lands during a mint request
            first_mint = kinds.index("mint")
            kinds[0], kinds[first_mint] = kinds[first_mint], kinds[0]
        rest = [p for p in points if p not in kill_points]
        cut_points = sorted(self.rng.sample(rest, min(self.cuts, len(rest))))
        episodes: dict[int, Callable[[int], None]] = {
            p: partial(self.kill_episode, kind) for p, kind in zip(kill_points, kinds, strict=True)
        }
        for j, p in enumerate(cut_points):
            episodes[p] = partial(self.cut_episode, *CUT_PLAN[j % len(CUT_PLAN)])
        return episodes

    # --- faults: one function per kind ------------------------------------------------------

    def kill_episode(self, kind: str, at: int) -> None:
        """Worker SIGKILL: start an operation, let its request reach the mint, SIGKILL the
        worker meanwhile (or at a random moment), start a new worker."""
        # variants alternate: every third mint kill holds the quote request (an operation
        # left in init), every other swap kill a receive's swap rather than a send's
        episode = sum(1 for k in self.fig.kills if k["kind"] == kind)
        slot: MintSlot | None = None
        reached: bool | None = None
        if kind == "random":
            during = detail = "random moment"
            self.launch(*self.random_flow(self.random_kind()))
            self.idle(self.rng.uniform(0.05, 1.5))
        else:
            path = KILL_PATHS.get(kind) or (MINT_QUOTE_PATH if episode % 3 == 2 else MINT_PATH)
            op_kind, during, flow, slot = self.path_flow(path, episode)
            slot.proxy.hold(path, HOLD_SECONDS)
            self.launch(op_kind, flow)
            reached = self.wait_until(slot.proxy.answered.is_set)
            reach = "reached" if reached else "did NOT reach"
            detail = f"{during} at mint {slot.name} (request {reach} the mint)"
        in_flight = self.in_flight()
        self.fig.kills.append(
            {
                "at_op": at,
                "kind": kind,
                "during": during,
                "mint": slot.name if slot else "-",
                "reached_mint": reached,
                "in_flight": in_flight,
            }
        )

        def kill() -> None:
            self.kill_worker()
            if slot is not None:
                slot.proxy.release()

        self.crash(WORKER_KILL, f"{detail}, {in_flight} in flight", kill, self.start_worker)

    def crash_mint(self, slot: MintSlot, env: dict[str, str | None] | None = None) -> None:
        """Mint SIGKILL: kill -9 a mint, start it again on its port, database and keys."""
        detail = f"mint {slot.name}" + "".join(f", then {k}={v}" for k, v in (env or {}).items())
        kill, restart = partial(kill_mint, slot.mint), partial(slot.mint.restart, env)
        self.crash(MINT_KILL, detail, kill, restart)
        self.fig.restarts[f"mint {slot.name}"] += 1

    def crash_postgres(self) -> None:
        """Postgres crash: `pg_ctl stop -m immediate` on the private cluster, start it again."""
        assert self.pg is not None
        self.crash(PG_CRASH, "stop -m immediate", self.pg.crash, self.pg.start, DOWN_SECONDS)
        self.fig.restarts["postgres"] += 1

    def crash_redis(self) -> None:
        """Redis SIGKILL: kill -9 the harness's redis-server, start it again, empty."""
        assert self.redis is not None
        self.crash(REDIS_KILL, "redis-server", self.redis.kill, self.redis.start, DOWN_SECONDS)
        self.fig.restarts["redis"] += 1
        self.ensure_worker("after the redis restart")

    def cut_episode(self, path: str, how: Cut, at: int) -> None:
        """Cut: the proxy cuts the next request on `path` at a mint (before it reaches the
        mint, after the mint handled it, or with a 502) while an operation makes one."""
        variant = sum(1 for c in self.fig.cuts if c["path"] == path)
        op_kind, during, flow, slot = self.path_flow(path, variant)
        made = len(slot.proxy.cut_made)
        slot.proxy.cut(path, how)
        self.launch(op_kind, flow)
        cut = self.wait_until(lambda: len(slot.proxy.cut_made) > made)
        if not cut:
            slot.proxy.cuts.pop(path, None)  # withdrawn: no later request meets it
        self.fig.cuts.append(
            {
                "at_op": at,
                "path": path,
                "cut": how.value,
                "during": during,
                "mint": slot.name,
                "made": cut,
            }
        )
        if cut:
            now = time.monotonic()
            detail = f"{path} at mint {slot.name}, {during}"
            self.watch(f"cut {how.value}", detail, now, now, datetime.now(UTC), "fault")
        else:
            self.log(f"cut {how.value} {path} at mint {slot.name}: no request came; withdrawn")

    def crash(
        self,
        kind: str,
        detail: str,
        kill: Callable[[], Any],
        restart: Callable[[], Any],
        down: float = 0.0,
    ) -> None:
        """kill(), `down` seconds (the flows pumped, no beat), restart(); then measured."""
        fault_at = time.monotonic()
        kill()
        self.idle(down, tick=False)
        since, wall = time.monotonic(), datetime.now(UTC)
        restart()
        self.watch(kind, detail, fault_at, since, wall, "restart", down=since - fault_at)

    def watch(
        self,
        kind: str,
        detail: str,
        fault_at: float,
        since: float,
        wall: datetime,
        since_what: str,
        down: float = 0.0,
    ) -> None:
        """A fault to measure: time to service now (the probe), to settled from pump()."""
        watch = Watch(kind, detail, fault_at, since, since_what, wall, down=down)
        self.watches.append(watch)
        deadline = since + SERVICE_BOUND
        while time.monotonic() < deadline:
            try:
                self.call(SERVICE_PROBE, timeout=PROBE_TIMEOUT, wallet=self.wallets[0])
            except Exception:  # noqa: BLE001 - not served yet: again
                self.idle(0.2, tick=False)
                continue
            watch.service = time.monotonic() - since
            break
        served = f"{watch.service:.2f} s" if watch.service is not None else "NOT served"
        self.log(f"{kind} {len(self.watches)}: {detail}; service after {served}")

    def poll_settled(self) -> None:
        """Every 0.5 s while a fault is not settled: is it settled now (see the module doc)?"""
        now = time.monotonic()
        for w in self.watches:
            if w.waiting and now - w.since > SETTLE_BOUND:
                w.gave_up = True
                self.log(f"{w.kind} ({w.detail}): {w.unsettled} thing(s) not settled in time")
        waiting = [w for w in self.watches if w.waiting]
        if not waiting or now < self.next_poll:
            return
        self.next_poll = now + SETTLE_POLL_SECONDS
        assert self.engine is not None
        try:
            with self.engine.connect() as conn:
                busy = conn.execute(
                    text(
                        "SELECT id::text, kind, state, created_at FROM operations "
                        "WHERE state = ANY(:open)"
                    ),
                    {"open": list(OPEN_STATES)},
                ).all()
                holders = conn.execute(
                    text(
                        "SELECT DISTINCT o.id::text, o.kind, o.state FROM proofs p "
                        "JOIN operations o ON o.id = p.used_by WHERE p.state = 'reserved'"
                    )
                ).all()
        except SQLAlchemyError:  # the database is down: not settled
            return
        for w in waiting:
            unanswered = {r.op_id for r in self.active if r.op_id and r.sent_at < w.fault_at}
            failed = {op for op, at in self.failed_ops.items() if at >= w.fault_at}
            left = {
                op: f"{kind} {op[:8]} {state}"
                for op, kind, state, created in busy
                if created <= w.wall
            }
            for op, kind, state in holders:
                if op not in left and (op in failed or op in unanswered):
                    request = "failed" if op in failed else "unanswered"
                    left[op] = f"{kind} {op[:8]} {state} reserving, its request {request}"
            w.unsettled = len(left)
            if left:
                w.waited_on = list(left.values())[:4]
            else:
                w.settled = time.monotonic() - w.since

    def kill_worker(self) -> None:
        assert self.worker is not None
        self.worker.kill_hard()
        if self.drop_dead_holds:
            self.drop_dead_workers_holds()

    def replace_worker(self) -> None:
        self.kill_worker()
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
        """--drop-dead-holds: what a SIGKILLed worker held (its operations' Redis locks, its
        pollers' leases), deleted now rather than left to lapse."""
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
        self.replace_worker()

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
        """The faults settled (boundedly), then a healthy worker, pending melts settled at
        the mint, and recovery until nothing moves."""
        for slot in self.slots:
            slot.proxy.release()
        self.log(f"random phase over; draining {self.in_flight()} op(s) in flight")
        self.drain(DRAIN_SECONDS)
        waiting = sum(1 for w in self.watches if w.waiting)
        if waiting:
            self.log(f"waiting for {waiting} fault(s) to settle (at most {SETTLE_BOUND:.0f} s)")
        while any(w.waiting for w in self.watches):
            self.idle(0.5)
        self.drain(DRAIN_SECONDS)  # the beat ticks sent meanwhile
        self.replace_worker()  # whatever it was doing: a fresh, healthy worker
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

        # 6. melt costs
        costs = melt_costs(ops)
        invariants["6 melt cost within 0..worst case"] = {
            "ok": not costs["out_of_range"],
            "detail": costs["out_of_range"][:10] or None,
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
            "cuts": {
                "total": len(self.fig.cuts),
                "made": sum(1 for c in self.fig.cuts if c["made"]),
                "list": self.fig.cuts,
            },
            "restarts": dict(self.fig.restarts),
            "faults": fault_figures(self.watches, self.t0),
            "melt_costs": costs,
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


def melt_costs(ops: list[Any]) -> dict[str, Any]:
    """Every finalized melt's cost (effective_fee) against its worst case (fee_reserve +
    swap_fee + input_fee, as prepare reported them): out of 0..worst case is a failure."""
    rows: list[dict[str, Any]] = []
    out_of_range: list[dict[str, Any]] = []
    for op in ops:
        if op.kind != "melt" or op.state != "finalized":
            continue
        d = op.data or {}
        cost = d.get("effective_fee")
        worst = sum(d.get(key) or 0 for key in ("fee_reserve", "swap_fee", "input_fee"))
        known = isinstance(cost, int)
        row = {"id": str(op.id), "amount": op.amount, "cost": cost, "worst_case": worst}
        row["ratio"] = round(cost / worst, 3) if known and worst else None
        rows.append(row)
        if not (known and 0 <= cost <= worst):
            out_of_range.append(row)
    rated = [r for r in rows if r["ratio"] is not None]
    largest = max(rated, key=lambda r: r["ratio"], default=None)
    return {
        "finalized": len(rows),
        "cost_sat": sum(r["cost"] for r in rows if isinstance(r["cost"], int)),
        "worst_case_sat": sum(r["worst_case"] for r in rows),
        "max_cost_over_worst_case": largest["ratio"] if largest else None,
        "largest": largest,
        "out_of_range": out_of_range,
    }


def fault_figures(watches: list[Watch], t0: float) -> dict[str, Any]:
    """Per fault and per kind of fault: seconds to service and to settled (min/median/max)."""
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(w.kind for w in watches):
        of_kind = [w for w in watches if w.kind == kind]
        by_kind[kind] = {
            "count": len(of_kind),
            "from": of_kind[0].since_what,
            "service_s": _spread([w.service for w in of_kind]),
            "settled_s": _spread([w.settled for w in of_kind]),
            "not_served": sum(1 for w in of_kind if w.service is None),
            "not_settled": sum(1 for w in of_kind if w.settled is None),
        }
    return {
        "measured": (
            f"seconds from the restart (a crash) or from the cut; service: the first "
            f"{SERVICE_PROBE} answered (bound {SERVICE_BOUND:.0f} s); settled: nothing "
            f"executing or rolling_back, nothing reserved by a failed request "
            f"(bound {SETTLE_BOUND:.0f} s)"
        ),
        "by_kind": by_kind,
        "list": [
            {
                "kind": w.kind,
                "detail": w.detail,
                "at_s": round(w.fault_at - t0, 1),
                "from": w.since_what,
                "down_s": round(w.down, 2),
                "service_s": _round(w.service),
                "settled_s": _round(w.settled),
                "unsettled_left": 0 if w.settled is not None else w.unsettled,
                "waited_on": w.waited_on,
            }
            for w in watches
        ],
    }


def _spread(values: list[float | None]) -> dict[str, float] | None:
    known = [v for v in values if v is not None]
    if not known:
        return None
    return {"min": _round(min(known)), "median": _round(median(known)), "max": _round(max(known))}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


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
    cuts = fig["cuts"]
    withdrawn = [
        f"op {c['at_op']} cut {c['cut']} {c['path']} at mint {c['mint']}"
        for c in cuts["list"]
        if not c["made"]
    ]
    lines.append(
        f"cuts: {cuts['made']} made of {cuts['total']}"
        + (f" (no request came, withdrawn: {'; '.join(withdrawn)})" if withdrawn else "")
    )
    lines.append("restarts: " + ", ".join(f"{k} {n}" for k, n in sorted(fig["restarts"].items())))
    faults = fig["faults"]
    lines.append(f"faults ({faults['measured']}):")
    lines.append(
        f"  {'kind':<15} {'n':>3}  {'from':<8} {'to service min/median/max':<27} "
        "to settled min/median/max  (not settled)"
    )
    for kind, k in faults["by_kind"].items():
        lines.append(
            f"  {kind:<15} {k['count']:>3}  {k['from']:<8} {_spread_text(k['service_s']):<27} "
            f"{_spread_text(k['settled_s']):<26} ({k['not_settled']})"
        )
    for w in faults["list"]:
        lines.append(
            f"  {w['at_s']:>7.1f}s {w['kind']:<15} down {w['down_s']:>5.2f}  service "
            f"{_seconds_text(w['service_s'])}  settled {_seconds_text(w['settled_s'])}  "
            f"{w['detail']}"
        )
        if w["settled_s"] is None or w["settled_s"] > SLOW_SETTLE_SECONDS:
            lines.append(f"{'':>12}last waited on: {'; '.join(w['waited_on'])}")
    melts = fig["melt_costs"]
    largest = melts["largest"]
    lines.append(
        f"melt costs: {melts['finalized']} finalized, {melts['cost_sat']} sat paid in fees of "
        f"{melts['worst_case_sat']} worst case; max cost / worst case "
        f"{melts['max_cost_over_worst_case']}"
        + (f" (fee {largest['cost']} of {largest['worst_case']})" if largest else "")
    )
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


def _spread_text(spread: dict[str, float] | None) -> str:
    if spread is None:
        return "-"
    return f"{spread['min']:.2f} / {spread['median']:.2f} / {spread['max']:.2f}"


def _seconds_text(seconds: float | None) -> str:
    return f"{seconds:>6.2f}" if seconds is not None else "  none"


def run_chaos(
    operations: int = 200,
    wallets: int = 4,
    kills: int = 20,
    seed: int = 1,
    *,
    cuts: int = 9,
    max_seconds: float = 1800.0,
    database_url: str | None = None,
    drop_dead_holds: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole campaign; returns the figures (figures["ok"]: every invariant held).
    Without a database_url (nor CHAOS_DATABASE_URL), on a private PostgreSQL cluster."""
    chaos = Chaos(
        operations,
        wallets,
        kills,
        cuts,
        seed,
        max_seconds=max_seconds,
        database_url=database_url or os.environ.get("CHAOS_DATABASE_URL") or None,
        drop_dead_holds=drop_dead_holds,
        log=log or (lambda line: print(line, file=sys.stderr, flush=True)),
    )
    return chaos.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operations", type=int, default=200)
    parser.add_argument("--wallets", type=int, default=4)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--cuts", type=int, default=9)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument(
        "--drop-dead-holds",
        action="store_true",
        help="delete a killed worker's Redis locks and poller leases (default: let them lapse)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = run_chaos(
        args.operations,
        args.wallets,
        args.kills,
        args.seed,
        cuts=args.cuts,
        max_seconds=args.max_seconds,
        drop_dead_holds=args.drop_dead_holds,
    )
    print(json.dumps(figures, indent=2, default=str) if args.json else format_figures(figures))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
