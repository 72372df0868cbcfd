"""Multi-host campaign: two worker hosts and a beat host of their own (network namespaces),
one PostgreSQL and one Redis, a random mix of operations, and one worker host cut off the
network in the middle of its steps, several times.

Run by hand (as root: it creates network namespaces; about three minutes):

    .venv/bin/python bench/multi_host.py --operations 100 --wallets 4 --cuts 4 --seed 1
        [--cut-seconds 8,15,22,30] [--json]

tests/test_multi_host.py runs a reduced version (30 operations, 2 cuts) in the test suite.

The hosts (tests/netns_harness.py): a bridge in the root namespace holding the gateway
address (10.77.N.1/24) and one namespace per host on a veth pair: hostA (.11) and hostB
(.12), each running `celery -A tasks worker -Q cashu,cashu.beat,cashu.lightning` (prefork,
-c 2), and beat (.13) running `celery -A tasks beat`, the only beat: nothing here plays it.
In the root namespace, on the gateway address: a private PostgreSQL cluster (database
`cashu_worker_multi_host`), a redis-server (db 13) and two Nutshell FakeWallet mints (input
fee 100 ppk): A pays melts after 2 s (a melt's payment request is a long step), B answers
melts PENDING and keeps them pending when checked, as in bench/chaos.py. The driver (this
process, root namespace) sends tasks by name, as a caller would: the flows, the limits and
the checks of bench/chaos.py, imported from it (its Chaos class, with hosts in place of its
one worker and network cuts in place of its kills).

A cut: at a chosen operation the driver waits (at most 15 s, launching a melt at mint A,
the slow step, every 1.5 s meanwhile) until hostA's worker has a task running, records
what it runs (celery inspect), its database sessions (pg_stat_activity) and the operations
in flight, then sets hostA's link down (the root end of its veth): its connections to
PostgreSQL, Redis and the mints hang, new ones fail. The random mix goes on meanwhile (hostB
serves it). After the cut's seconds (--cut-seconds, in turn: shorter than the operation
lock's 10 s lease, longer than the lease, than the task soft and hard time limits (15/18 s),
up to the driver's 30 s wait for an answer) the link comes up again and hostA carries on
with whatever it was doing. Measured per cut, in seconds:

- service: from the cut, the first cashu.wallet.balance answered (by hostB: hostA can reach
  nothing), probed once per 5 s;
- settled: from the cut, nothing created before it executing or rolling_back, and nothing
  reserved by an operation whose request failed after it or was unanswered when it came
  (bench/chaos.py's rule); "after link up" is that minus the cut's length (0 if it settled
  while the host was still cut off);
- carried on: the transitions (operation_audit rows) and the operations finalized while
  hostA was cut off, all of them hostB's (hostA could not reach the database);
- rejoined: from link up, the first ping hostA's worker answers;
- the tasks sent while hostA was cut off, and which host stored each one's result: one
  done by hostA was done only after it came back (its broker fetch was pending when the
  link went down and Redis handed it the task, or the task was still queued at link up);
  one with no result at the end was lost (kombu's Redis transport records a task as
  unacknowledged only once the consumer has read it: a task Redis handed to a fetch whose
  connection is then dropped is in no queue, and no visibility timeout brings it back).

Then recovery: the chaos settling (faults settled, mint B restarted with
FAKEWALLET_PAYMENT_STATE=SETTLED, sweeps to quiescence); then every send still pending is
received by another wallet or reclaimed, and the beat host's cancel-stale
(CASHU_PREPARED_MAX_AGE_SECONDS=20, every 10 s) cancels what was prepared and never
executed (a caller whose answer did not come); the chaos settling again. The checks:
bench/chaos.py's six invariants, and

7. every operation settled: finalized, rolled_back or failed; none left anywhere else;
8. the books equal what the mint restores from the seed: each wallet, restored at each
   mint from the master mnemonic alone into an empty database (sagas/restore.py, as in
   the disaster case), holds exactly the proofs (the same Ys, the same sat) our database
   holds unspent;
9. nothing done twice at the mint (its SQLite database): no mint quote signed for more
   than its amount, no invoice paid by two melt quotes, every quote the mint issued or
   paid is one finalized operation of ours (and every finalized one's quote is issued or
   paid), no two operations share a quote, and per mint issued - redeemed = what our
   wallets hold there;
10. hostB carried on during every cut: the probe answered before the link came back, and
   operations moved meanwhile;
11. hostA came back after every cut: it answered a ping after its link came up.

Exit status 1 when an invariant fails; the figures are printed either way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO, REPO / "tests", REPO / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import redis  # noqa: E402
from celery import states  # noqa: E402
from celery.result import AsyncResult  # noqa: E402
from chaos import (  # noqa: E402
    PENDING_MELTS,
    PROBE_TIMEOUT,
    REDIS_DB,
    SERVICE_PROBE,
    SYNC_TIMEOUT,
    Chaos,
    Flow,
    MintSlot,
    Watch,
    _round,
    _spread,
    _spread_text,
    _state,
    call,
    format_figures,
    worker_env,
)
from db_harness import TEST_MNEMONIC, migrate_fresh  # noqa: E402
from netns_harness import (  # noqa: E402
    BridgePostgres,
    BridgeRedis,
    NetnsBeat,
    NetnsWorker,
    Network,
    start_bridge_mint,
)
from slow_proxy import SlowProxy  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from worker_harness import make_client  # noqa: E402

DATABASE_NAME = "cashu_worker_multi_host"
RESTORE_DATABASE = "cashu_worker_multi_host_restore"  # the empty database restores go to
HOSTS = ("hostA", "hostB", "beat")
CUT_HOST, OTHER_HOST, BEAT_HOST = HOSTS
CONCURRENCY = 2
# bench/chaos.py's worker limits, and the sweeps a bit sooner: cancel-stale (every
# CASHU_RECOVERY_SECONDS) cancels prepared operations untouched for 20 s
MULTI_HOST_ENV = {"CASHU_RECOVERY_SECONDS": "10", "CASHU_PREPARED_MAX_AGE_SECONDS": "20"}
MELT_DELAY = "2"  # mint A's FakeWallet pays an invoice after this many seconds
# shorter than the 10 s lock lease; longer than it; than the soft and hard time limits
# (15 / 18 s); as long as the driver waits for an answer (30 s)
CUT_SECONDS = (8.0, 15.0, 22.0, 30.0)
IN_FLIGHT = 4  # operations at once (two hosts of two processes)
CUT_GAP_SECONDS = 5.0  # the least time between a cut's end and the next cut
MID_STEP_WAIT = 15.0  # how long a cut waits for hostA to be running a task
SLOW_STEPS = 6  # melts at mint A launched meanwhile (one per SLOW_STEP_EVERY), at most
SLOW_STEP_EVERY = 1.5
INSPECT_TIMEOUT = 0.5
PING_EVERY = 2.0
REJOIN_BOUND = 60.0  # hostA not answering a ping this long after its link came up: not back
CLOSE_BOUND = 120.0  # how long the close-out waits for prepared operations to be cancelled
HOST_CUT = "host cut"
IDLE_TASKS = {SERVICE_PROBE, "cashu.events.relay"}  # not steps of an operation
SETTLED_STATES = {"finalized", "rolled_back", "failed"}


@dataclass
class HostCut:
    """One cut of hostA: what it was doing, and what happened until it was back."""

    number: int
    at_op: int
    seconds: float  # planned
    watch: Watch
    active: list[dict[str, Any]]  # hostA's tasks running at the cut
    sessions: dict[str, int]  # hostA's database sessions by state at the cut
    open_ops: int  # operations executing or rolling_back at the cut
    in_flight: int  # the driver's operations waiting for an answer
    down_wall: datetime
    up_at: float | None = None
    up_wall: datetime | None = None
    sessions_at_up: dict[str, int] = field(default_factory=dict)
    probe: Any = None
    probe_sent: float = 0.0
    probes: list[tuple[Any, float]] = field(default_factory=list)  # (result, sent at)
    sent: list[tuple[Any, str, float]] = field(default_factory=list)  # every task sent meanwhile
    next_ping: float = 0.0
    rejoined: float | None = None
    transitions: int = 0  # operation_audit rows written while cut off (all hostB's)
    finalized: int = 0  # operations finalized while cut off

    @property
    def down_at(self) -> float:
        return self.watch.fault_at


class MultiHost(Chaos):
    """bench/chaos.py's campaign on hosts of their own, with network cuts of hostA."""

    def __init__(
        self,
        operations: int,
        wallets: int,
        cuts: int,
        seed: int,
        *,
        cut_seconds: tuple[float, ...],
        max_seconds: float,
        log: Callable[[str], None],
    ) -> None:
        super().__init__(
            operations,
            wallets,
            kills=0,
            cuts=0,
            seed=seed,
            max_seconds=max_seconds,
            database_url=None,
            drop_dead_holds=False,
            log=log,
        )
        self.host_cut_count = cuts
        self.cut_seconds = cut_seconds
        self.net: Network | None = None
        self.workers: dict[str, NetnsWorker] = {}
        self.beat_host: NetnsBeat | None = None
        self.host_cuts: list[HostCut] = []
        self.settlings: list[dict[str, Any]] = []
        self.close_out_figures: dict[str, Any] = {}
        self._ticking = False

    def log(self, message: str) -> None:
        self._log(f"[multi-host {time.monotonic() - self.t0:6.1f}s] {message}")

    # --- hosts ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def database(self) -> Iterator[None]:
        """The network first (the servers listen on its gateway), then a private cluster on
        it; the network goes last, whatever happened."""
        self.net = Network(list(HOSTS)).start()
        try:
            self.pg = BridgePostgres(self.net).start()
            self.database_url = self.pg.url(DATABASE_NAME)
            yield
        finally:
            self.net.restore_all()
            for proc in (*self.workers.values(), self.beat_host):
                if proc is not None:
                    with contextlib.suppress(Exception):
                        proc.kill_hard()
            if self.pg is not None:
                with contextlib.suppress(Exception):
                    self.pg.stop()
            self.net.stop()
            left = self.net.leftovers()
            if left:
                self.log(f"network NOT fully removed: {left}")

    def setup(self) -> None:
        assert self.net is not None and self.pg is not None
        self.log(f"{self.net}; postgres on {self.net.gateway}:{self.pg.port}: migrate")
        migrate_fresh(self.database_url)
        self.engine = create_engine(self.database_url, pool_pre_ping=True, pool_size=2)
        self.redis = BridgeRedis(self.net).start()
        self.redis_client = redis.Redis.from_url(self.redis.url(REDIS_DB))
        self.redis_client.flushdb()
        self.log(f"redis-server on {self.net.gateway}:{self.redis.port}; starting two mints")
        slow = {"FAKEWALLET_DELAY_OUTGOING_PAYMENT": MELT_DELAY}
        for name, env in (("A", slow), ("B", dict(PENDING_MELTS))):
            mint = start_bridge_mint(self.net, input_fee_ppk=100, env_overrides=env)
            # chaos's slots have a proxy; here the hosts reach the mint itself (never started)
            self.slots.append(MintSlot(name, mint, SlowProxy(mint.url)))
        env = {**worker_env(), **MULTI_HOST_ENV}
        self.beat = []  # the beat host sends the periodic tasks, not the driver
        common: dict[str, Any] = {
            "database_url": self.database_url,
            "redis_url": self.redis.url(REDIS_DB),
            "mnemonic": TEST_MNEMONIC,
            "env_overrides": env,
        }
        for host in (CUT_HOST, OTHER_HOST):
            worker = NetnsWorker(self.net, host, concurrency=CONCURRENCY, **common)
            self.workers[host] = worker.start()
        self.worker = self.workers[OTHER_HOST]  # chaos's single worker, where it asks for one
        self.client = make_client(self.redis.url(REDIS_DB), self.database_url)
        self.client.send_task = self.recording(self.client.send_task)  # type: ignore[method-assign]
        for slot in self.slots:
            slot.url = self.call("cashu.mints.add", url=slot.mint.url)["url"]
        self.beat_host = NetnsBeat(self.net, BEAT_HOST, **common).start()
        self.log(
            "hosts up: "
            + ", ".join(
                f"{host} {self.net.addresses[host]} ({proc.nodename or 'beat'})"
                for host, proc in (*self.workers.items(), (BEAT_HOST, self.beat_host))
            )
        )

    def recording(self, send: Callable[..., Any]) -> Callable[..., Any]:
        """send_task, noting every task sent while a cut is on (to tell later which host
        took it, and when it was done)."""

        def send_task(name: str, *args: Any, **kwargs: Any) -> Any:
            result = send(name, *args, **kwargs)
            for cut in self.host_cuts:
                if cut.up_at is None:
                    cut.sent.append((result, name, round(time.monotonic() - cut.down_at, 2)))
            return result

        return send_task

    def teardown(self, keep_logs: bool) -> None:
        if self.net is not None:
            self.net.restore_all()
        for worker in self.workers.values():
            if worker is not self.worker:
                with contextlib.suppress(Exception):
                    worker.kill_hard()
        if self.beat_host is not None:
            with contextlib.suppress(Exception):
                self.beat_host.cleanup()
        super().teardown(keep_logs)
        if keep_logs:
            self.log(
                "host logs: "
                + ", ".join(
                    str(p.log_path)
                    for p in (*self.workers.values(), self.beat_host)
                    if p is not None
                )
            )

    def replace_worker(self) -> None:
        """Where chaos replaces its worker: here every host must be up and answering; one
        that is not is a finding, noted, and started again."""
        assert self.net is not None
        self.net.restore_all()
        for host, worker in self.workers.items():
            if worker.running and self.answers(worker, 30.0):
                continue
            self.fig.notes.append(f"{host}'s worker did not answer a ping: started again")
            self.log(f"{host}'s worker silent: started again")
            worker.kill_hard()
            worker.start()
            self.fig.restarts[host] += 1
        if self.beat_host is not None and not self.beat_host.running:
            self.fig.notes.append("the beat host's beat had exited: started again")
            self.beat_host.start()
            self.fig.restarts["beat"] += 1

    def answers(self, worker: NetnsWorker, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.client.control.ping(destination=[worker.nodename], timeout=1.0):
                    return True
            self.pump()
        return False

    # --- the random phase, with cuts ------------------------------------------------------------

    def random_phase(self) -> None:
        """The random mix, paced so that the cuts fall among the operations (each cut and
        a gap after it span the operations up to the next cut point); a cut point reached
        while a cut is still on is taken as soon as that cut is over."""
        n = self.operations
        plan = self.plan_cuts(n)
        longest = max(plan.values(), default=0.0)
        pace = len(plan) * (longest + CUT_GAP_SECONDS) / n if plan else 0.0
        budget = self.max_seconds * 0.6
        waiting = list(plan)  # cut points not reached yet, in order
        start = time.monotonic()
        for i in range(n):
            if self.elapsed() > budget:
                self.fig.notes.append(f"random phase stopped by the time bound after {i} ops")
                break
            while self.in_flight() >= IN_FLIGHT or time.monotonic() < start + i * pace:
                self.idle(0.05)
            if waiting and i >= waiting[0] and not self.cut_on():
                self.begin_cut(i, plan[waiting.pop(0)])
            self.launch(*self.random_flow(self.random_kind()))
            self.idle(self.rng.uniform(0.0, 0.3))
            if (i + 1) % 10 == 0:
                self.log(f"{i + 1}/{n} operations, {len(self.host_cuts)} cuts")
        while self.cut_on():  # the last cut runs its time, the mix stopped
            self.idle(0.1)
        if waiting:
            self.fig.notes.append(f"{len(waiting)} cut(s) not made: the operations ran out")

    def plan_cuts(self, n: int) -> dict[int, float]:
        """Cut points evenly spread over the operations (the first at 10%), each with its
        length: --cut-seconds in an order the seed shuffles."""
        count = min(self.host_cut_count, n)
        if count <= 0:
            return {}
        lengths = [self.cut_seconds[i % len(self.cut_seconds)] for i in range(count)]
        self.rng.shuffle(lengths)
        points = [n // 10 + (n * k) // count for k in range(count)]
        return dict(zip(points, lengths, strict=True))

    def cut_on(self) -> bool:
        return any(cut.up_at is None for cut in self.host_cuts)

    def pump(self) -> None:
        super().pump()
        if not self._ticking:
            self._ticking = True
            try:
                self.tick_cuts()
            finally:
                self._ticking = False

    def active_steps(self) -> list[dict[str, Any]]:
        """What hostA's worker is running now (celery inspect), its idle tasks left out."""
        node = self.workers[CUT_HOST].nodename
        try:
            replies = self.client.control.inspect(
                destination=[node], timeout=INSPECT_TIMEOUT, limit=1
            ).active()
        except Exception:  # noqa: BLE001 - no answer: nothing known to run
            return []
        tasks = (replies or {}).get(node) or []
        return [
            {"id": t["id"], "name": t["name"], "started": t.get("time_start")}
            for t in tasks
            if t.get("name") not in IDLE_TASKS
        ]

    def begin_cut(self, at: int, seconds: float) -> None:
        """Wait until hostA runs a step (a slow melt at mint A launched if none), then cut."""
        assert self.net is not None
        deadline = time.monotonic() + MID_STEP_WAIT
        launched, last_launch = 0, 0.0
        active = self.active_steps()
        while not active and time.monotonic() < deadline:
            if launched < SLOW_STEPS and time.monotonic() - last_launch > SLOW_STEP_EVERY:
                wallet = self.rng.choice(self.wallets)
                self.launch("melt", self.melt_flow(wallet, self.slots[0]))
                launched, last_launch = launched + 1, time.monotonic()
            self.idle(0.2)
            active = self.active_steps()
        sessions = self.sessions_of(CUT_HOST)
        open_ops = self.count("SELECT count(*) FROM operations WHERE state = ANY(:s)")
        in_flight = self.in_flight()
        self.net.cut(CUT_HOST)
        down_at, wall = time.monotonic(), datetime.now(UTC)
        number = len(self.host_cuts) + 1
        what = ", ".join(sorted(t["name"] for t in active)) or "nothing"
        detail = f"{CUT_HOST} cut {number} for {seconds:.0f} s at op {at}, running {what}"
        watch = Watch(HOST_CUT, detail, down_at, down_at, "cut", wall)
        self.watches.append(watch)
        self.host_cuts.append(
            HostCut(number, at, seconds, watch, active, sessions, open_ops, in_flight, wall)
        )
        self.log(f"{detail}; its db sessions {sessions}; {in_flight} op(s) in flight")

    def tick_cuts(self) -> None:
        """From pump(): a cut's service probe, its end when due, hostA's rejoining."""
        now = time.monotonic()
        for cut in self.host_cuts:
            if cut.up_at is None:
                self.probe(cut, now)
                if now - cut.down_at >= cut.seconds:
                    self.end_cut(cut)
            elif cut.rejoined is None and now >= cut.next_ping and now - cut.up_at < REJOIN_BOUND:
                cut.next_ping = now + PING_EVERY
                worker = self.workers[CUT_HOST]
                with contextlib.suppress(Exception):
                    if self.client.control.ping(destination=[worker.nodename], timeout=0.5):
                        cut.rejoined = time.monotonic() - cut.up_at
                        self.log(f"{CUT_HOST} answers again, {cut.rejoined:.1f} s after link up")

    def probe(self, cut: HostCut, now: float) -> None:
        """One cashu.wallet.balance at a time (5 s each) until one answers: the service."""
        if cut.watch.service is not None:
            return
        state = _state(cut.probe) if cut.probe is not None else None
        if state == states.SUCCESS:
            cut.watch.service = now - cut.watch.since
            self.log(f"cut {cut.number}: served after {cut.watch.service:.2f} s")
            return
        if (
            cut.probe is None
            or state in states.READY_STATES
            or now - cut.probe_sent > PROBE_TIMEOUT
        ):
            with contextlib.suppress(Exception):
                cut.probe = self.client.send_task(SERVICE_PROBE, kwargs={"wallet": self.wallets[0]})
                cut.probe_sent = now
                cut.probes.append((cut.probe, round(now - cut.down_at, 2)))

    def end_cut(self, cut: HostCut) -> None:
        assert self.net is not None
        cut.sessions_at_up = self.sessions_of(CUT_HOST)
        self.net.restore(CUT_HOST)
        cut.up_at, cut.up_wall = time.monotonic(), datetime.now(UTC)
        cut.watch.down = cut.up_at - cut.down_at
        window = {"down": cut.down_wall, "up": cut.up_wall}
        cut.transitions = self.count(
            "SELECT count(*) FROM operation_audit WHERE at >= :down AND at < :up", window
        )
        cut.finalized = self.count(
            "SELECT count(*) FROM operations WHERE finalized_at >= :down AND finalized_at < :up",
            window,
        )
        cut.next_ping = cut.up_at
        self.log(
            f"cut {cut.number}: link up after {cut.watch.down:.1f} s; meanwhile {cut.transitions} "
            f"transitions, {cut.finalized} finalized; its db sessions then {cut.sessions_at_up}"
        )

    def sessions_of(self, host: str) -> dict[str, int]:
        """The host's PostgreSQL sessions by state (active, idle in transaction, ...)."""
        assert self.engine is not None and self.net is not None
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity "
                        "WHERE client_addr = CAST(:ip AS inet) GROUP BY 1"
                    ),
                    {"ip": self.net.addresses[host]},
                ).all()
        except Exception:  # noqa: BLE001 - not known
            return {}
        return {state: n for state, n in rows}

    def count(self, query: str, params: dict[str, Any] | None = None) -> int:
        assert self.engine is not None
        params = params if params is not None else {"s": ["executing", "rolling_back"]}
        with self.engine.connect() as conn:
            return int(conn.scalar(text(query), params) or 0)

    # --- settling --------------------------------------------------------------------------------

    def settle(self) -> dict[str, Any]:
        """chaos's settling; the close-out (pending sends received or reclaimed, prepared
        operations left to the beat's cancel-stale); chaos's settling again."""
        assert self.net is not None
        self.net.restore_all()
        first = super().settle()
        self.settlings.append(first)
        self.close_out_figures = self.close_out()
        second = super().settle()
        self.settlings.append(second)
        return second

    def close_out(self) -> dict[str, Any]:
        """Every send still pending: its token received by another wallet (half of them) or
        reclaimed; then wait for the beat host to cancel what was prepared and never
        executed. Bounded; what is left is for the checks to report."""
        assert self.engine is not None
        start = time.monotonic()
        with self.engine.connect() as conn:
            pending = conn.execute(
                text(
                    "SELECT id::text, wallet, data->>'token' FROM operations "
                    "WHERE kind = 'send' AND state = 'pending'"
                )
            ).all()
        outcome: Counter = Counter()
        for op_id, sender, token in pending:
            while self.in_flight() >= IN_FLIGHT:
                self.idle(0.05)
            if token and self.rng.random() < 0.5:
                entry = {"token": token, "sender": sender, "op_id": op_id}
                self.launch("close: receive", self.receive_flow(entry, self._receiver(entry)))
                outcome["received"] += 1
            else:
                self.launch("close: reclaim", self.reclaim_flow(op_id))
                outcome["reclaimed"] += 1
        self.drain(SYNC_TIMEOUT)
        prepared = "SELECT count(*) FROM operations WHERE state = 'prepared'"
        left = self.count(prepared)
        self.log(f"close-out: {dict(outcome)} pending sends; waiting for {left} prepared op(s)")
        while left and time.monotonic() - start < CLOSE_BOUND:
            self.idle(1.0)
            left = self.count(prepared)
        return {
            "pending_sends": dict(outcome),
            "prepared_left": left,
            "seconds": round(time.monotonic() - start, 1),
        }

    def reclaim_flow(self, op_id: str) -> Flow:
        done = yield call("cashu.send.rollback", operation_id=op_id)
        return f"reclaim: {done['state']}"

    # --- checks ---------------------------------------------------------------------------------

    def check(self, quiescence: dict[str, Any]) -> dict[str, Any]:
        figures = super().check(quiescence)
        assert self.engine is not None
        with self.engine.connect() as conn:
            ops = conn.execute(
                text("SELECT id, wallet, kind, state, amount, quote_id, mint_url FROM operations")
            ).all()
            proofs = conn.execute(
                text("SELECT wallet, mint_url, amount, state, y FROM proofs WHERE state <> 'spent'")
            ).all()
        invariants = figures["invariants"]

        # 7. every operation settled
        unsettled = Counter(f"{op.kind} {op.state}" for op in ops if op.state not in SETTLED_STATES)
        invariants["7 every operation settled"] = {
            "ok": not unsettled,
            "detail": dict(unsettled) or None,
        }

        # 8. the books equal what the mint restores from the seed
        invariants["8 books = restore from the seed"] = self.check_restore(proofs)

        # 9. nothing done twice at the mint
        invariants["9 nothing done twice at the mint"] = self.check_mints(ops, proofs)

        # 10. / 11. the other host carried on; the cut host came back
        stalled = [
            {"cut": c.number, "service_s": c.watch.service, "transitions": c.transitions}
            for c in self.host_cuts
            if c.watch.service is None or c.watch.service > c.watch.down or not c.transitions
        ]
        invariants[f"10 {OTHER_HOST} carried on during every cut"] = {
            "ok": bool(self.host_cuts) and not stalled,
            "detail": stalled or (None if self.host_cuts else "no cut made"),
        }
        gone = [c.number for c in self.host_cuts if c.rejoined is None]
        invariants[f"11 {CUT_HOST} came back after every cut"] = {
            "ok": not gone,
            "detail": {"did not answer a ping after cut": gone} if gone else None,
        }
        figures["ok"] = all(inv["ok"] for inv in invariants.values())
        figures["hosts"] = self.host_figures()
        figures["host_cuts"] = self.cut_figures()
        figures["close_out"] = self.close_out_figures
        figures["settlings"] = self.settlings
        figures["operations_random_phase"] = sum(
            sum(c.values())
            for kind, c in self.fig.flows.items()
            if kind not in ("beat", "funding") and not kind.startswith("close")
        )
        return figures

    def check_restore(self, proofs: list[Any]) -> dict[str, Any]:
        """Each wallet restored at each mint from the seed alone into an empty database
        (sagas/restore.py): the same proofs as our books hold unspent there."""
        from models.db import engine as db_engine
        from models.db import unit_of_work
        from nuts.client import get_mint_client
        from nuts.secrets import derive_wallet_seed
        from sagas.engine import SagaContext
        from sagas.restore import restore_wallet

        assert self.pg is not None
        empty = migrate_fresh(self.pg.url(RESTORE_DATABASE))
        seeds: dict[str, bytes] = {}

        def seed(wallet: str) -> bytes:
            if wallet not in seeds:
                seeds[wallet] = derive_wallet_seed(TEST_MNEMONIC, wallet)
            return seeds[wallet]

        fresh = SagaContext(
            uow=partial(unit_of_work, empty), mint_client=get_mint_client, wallet_seed=seed
        )
        reports: dict[str, Any] = {}
        for wallet in self.wallets:
            for slot in self.slots:
                report = restore_wallet(fresh, wallet, slot.mint.url)
                reports[f"{wallet}@{slot.name}"] = {
                    k: report[k] for k in ("found", "restored", "restored_amount", "spent")
                }
        with db_engine(empty).connect() as conn:
            restored = conn.execute(text("SELECT wallet, mint_url, amount, y FROM proofs")).all()
        db_engine(empty).dispose()
        names = {slot.url: slot.name for slot in self.slots}
        books: dict[str, dict[str, int]] = defaultdict(dict)
        mint_side: dict[str, dict[str, int]] = defaultdict(dict)
        for rows, into in ((proofs, books), (restored, mint_side)):
            for p in rows:
                into[f"{p.wallet}@{names.get(p.mint_url, p.mint_url)}"][p.y] = p.amount
        per: dict[str, dict[str, Any]] = {}
        wrong: dict[str, dict[str, Any]] = {}
        for key in sorted(set(books) | set(mint_side) | set(reports)):
            ours, theirs = books.get(key, {}), mint_side.get(key, {})
            row = {"books_sat": sum(ours.values()), "restored_sat": sum(theirs.values())}
            only_ours = set(ours) - set(theirs)
            only_theirs = set(theirs) - set(ours)
            if only_ours or only_theirs:
                row["only_in_books"] = [len(only_ours), sum(ours[y] for y in only_ours)]
                row["only_at_mint"] = [len(only_theirs), sum(theirs[y] for y in only_theirs)]
                wrong[key] = row
            per[key] = row
        return {
            "ok": not wrong and bool(per),
            "detail": wrong or None,
            "per_wallet_and_mint": per,
            "restore_reports": reports,
        }

    def check_mints(self, ops: list[Any], proofs: list[Any]) -> dict[str, Any]:
        """The mints' own databases against our operations: nothing issued or paid twice,
        nothing issued or paid that is not one finalized operation of ours, and what is
        outstanding at each mint is what our wallets hold there."""
        problems: list[str] = []
        figures: dict[str, Any] = {}
        quotes = Counter((op.mint_url, op.kind, op.quote_id) for op in ops if op.quote_id)
        for (url, kind, quote), n in quotes.items():
            if n > 1:
                problems.append(f"{kind} quote {quote[:12]} at {url} used by {n} operations")
        for slot in self.slots:
            ledger = mint_ledger(slot.mint.db_dir)
            ours = {op.quote_id: op for op in ops if op.mint_url == slot.url and op.quote_id}
            held = sum(p.amount for p in proofs if p.mint_url == slot.url)
            name = f"mint {slot.name}"
            for quote, (amount, state, signed) in ledger["mint_quotes"].items():
                op = ours.get(quote)
                if signed > amount:
                    problems.append(f"{name}: mint quote {quote[:12]} signed {signed} > {amount}")
                if state == "ISSUED" and (op is None or op.state != "finalized"):
                    what = "no operation" if op is None else f"operation {op.state}"
                    problems.append(f"{name}: mint quote {quote[:12]} ISSUED, ours: {what}")
            for quote, (_request, state) in ledger["melt_quotes"].items():
                op = ours.get(quote)
                if state == "PAID" and (op is None or op.state != "finalized"):
                    what = "no operation" if op is None else f"operation {op.state}"
                    problems.append(f"{name}: melt quote {quote[:12]} PAID, ours: {what}")
            for request, n in ledger["paid_per_invoice"].items():
                if n > 1:
                    problems.append(f"{name}: invoice {request[:24]}... paid by {n} melt quotes")
            for op in ours.values():
                if op.state != "finalized" or op.kind not in ("mint", "melt"):
                    continue
                table = "mint_quotes" if op.kind == "mint" else "melt_quotes"
                state = (ledger[table].get(op.quote_id) or (None, None))[1]
                if state != ("ISSUED" if op.kind == "mint" else "PAID"):
                    problems.append(f"{name}: finalized {op.kind} {op.quote_id[:12]} is {state}")
            outstanding = ledger["issued"] - ledger["redeemed"]
            if outstanding != held or ledger["pending_proofs"]:
                problems.append(
                    f"{name}: issued - redeemed = {outstanding}, our wallets hold {held}, "
                    f"{ledger['pending_proofs']} proof(s) pending at the mint"
                )
            figures[name] = {
                "issued_sat": ledger["issued"],
                "redeemed_sat": ledger["redeemed"],
                "outstanding_sat": outstanding,
                "held_by_our_wallets_sat": held,
                "mint_quotes_issued": sum(
                    1 for _, s, _ in ledger["mint_quotes"].values() if s == "ISSUED"
                ),
                "melt_quotes_paid": sum(
                    1 for _, s in ledger["melt_quotes"].values() if s == "PAID"
                ),
                "refusals_in_log": ledger_refusals(slot.mint.log_path),
            }
        return {"ok": not problems, "detail": problems[:20] or None, "mints": figures}

    # --- figures --------------------------------------------------------------------------------

    def host_figures(self) -> dict[str, Any]:
        assert self.net is not None
        nodes = {host: worker.nodename for host, worker in self.workers.items()}
        return {
            "network": self.net.cidr,
            "gateway": self.net.gateway,
            "addresses": dict(self.net.addresses),
            "worker_nodes": nodes,
            "mints": [slot.mint.url for slot in self.slots],
            "database": make_url(self.database_url).render_as_string(hide_password=True),
            "redis": self.redis.url(REDIS_DB) if self.redis else None,
        }

    def cut_figures(self) -> dict[str, Any]:
        listed = []
        for cut in self.host_cuts:
            settled = cut.watch.settled
            steps = [self.step_outcome(t, cut) for t in cut.active]
            sent = [
                {**self.step_outcome({"id": r.id, "name": name}, cut), "sent_s": at}
                for r, name, at in cut.sent
            ]
            taken = [t for t in sent if t.get("by") == CUT_HOST]
            never = [t for t in sent if t.get("state") == states.PENDING]
            listed.append(
                {
                    "cut": cut.number,
                    "at_op": cut.at_op,
                    "at_s": round(cut.down_at - self.t0, 1),
                    "seconds": round(cut.watch.down, 1),
                    "mid_step": bool(cut.active),
                    # a step running at the cut that ended after it (or never): cut mid-step
                    "mid_step_confirmed": any(
                        (t.get("done_after_cut_s") or 0) > 0 or t.get("done_after_cut_s") is None
                        for t in steps
                    ),
                    "running": [t["name"] for t in cut.active],
                    "steps": steps,
                    "tasks_sent_while_cut": len(sent),
                    # sent after the cut, yet done by the cut host, after it came back: its
                    # broker fetch was pending at the cut, or the task still queued at link up
                    "taken_by_cut_host": taken,
                    "never_done": never,  # no result at the end: the message was lost
                    "probes": [
                        {
                            **self.step_outcome({"id": r.id, "name": SERVICE_PROBE}, cut),
                            "sent_s": at,
                        }
                        for r, at in cut.probes
                    ],
                    "db_sessions_at_cut": cut.sessions,
                    "db_sessions_at_link_up": cut.sessions_at_up,
                    "open_operations_at_cut": cut.open_ops,
                    "in_flight_at_cut": cut.in_flight,
                    "service_s": _round(cut.watch.service),
                    "settled_s": _round(settled),
                    "settled_after_link_up_s": (
                        None if settled is None else _round(max(0.0, settled - cut.watch.down))
                    ),
                    "transitions_while_cut": cut.transitions,
                    "finalized_while_cut": cut.finalized,
                    "rejoined_s": _round(cut.rejoined),
                    "waited_on": cut.watch.waited_on if settled is None else [],
                }
            )
        return {
            "total": len(listed),
            "mid_step": sum(1 for c in listed if c["mid_step"]),
            "mid_step_confirmed": sum(1 for c in listed if c["mid_step_confirmed"]),
            "tasks_sent_while_cut": sum(c["tasks_sent_while_cut"] for c in listed),
            "taken_by_cut_host": sum(len(c["taken_by_cut_host"]) for c in listed),
            "never_done": sum(len(c["never_done"]) for c in listed),
            "settled_s": _spread([c["settled_s"] for c in listed]),
            "settled_after_link_up_s": _spread([c["settled_after_link_up_s"] for c in listed]),
            "service_s": _spread([c["service_s"] for c in listed]),
            "rejoined_s": _spread([c["rejoined_s"] for c in listed]),
            "list": listed,
        }

    def step_outcome(self, task: dict[str, Any], cut: HostCut) -> dict[str, Any]:
        """How a task hostA was running at the cut ended: its result's state, the node that
        stored it, and whether that was after the cut (it was cut mid-step)."""
        result = AsyncResult(task["id"], app=self.client)
        out: dict[str, Any] = {"name": task["name"], "id": task["id"][:8]}
        try:
            out["state"] = result.state
            done = result.date_done
            worker = result.worker
        except Exception as exc:  # noqa: BLE001 - not known
            out["state"] = f"unknown ({type(exc).__name__})"
            return out
        if isinstance(done, str):
            done = datetime.fromisoformat(done)
        if done is not None and done.tzinfo is None:
            done = done.replace(tzinfo=UTC)
        out["done_after_cut_s"] = (
            None if done is None else round((done - cut.down_wall).total_seconds(), 1)
        )
        out["by"] = (worker or "").split("@")[0].rsplit("-", 1)[0] or None
        if result.state == states.FAILURE:
            out["error"] = type(result.result).__name__
        return out


# --- the mints' books ------------------------------------------------------------------------


def mint_ledger(db_dir: Path) -> dict[str, Any]:
    """What a Nutshell mint's SQLite database says it issued, redeemed, and did with every
    quote (read-only, while it runs)."""
    path = db_dir / "mint.sqlite3"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(promises)")}
        signed = "c_ IS NOT NULL" if "c_" in columns else "1 = 1"
        issued = conn.execute(f"SELECT coalesce(sum(amount), 0) FROM promises WHERE {signed}")
        redeemed = conn.execute("SELECT coalesce(sum(amount), 0) FROM proofs_used")
        per_quote: dict[str, int] = {}
        if "mint_quote" in columns:
            per_quote = dict(
                conn.execute(
                    f"SELECT mint_quote, sum(amount) FROM promises "
                    f"WHERE mint_quote IS NOT NULL AND {signed} GROUP BY mint_quote"
                ).fetchall()
            )
        mint_quotes = {
            quote: (amount, str(state).upper(), per_quote.get(quote, 0))
            for quote, amount, state in conn.execute("SELECT quote, amount, state FROM mint_quotes")
        }
        melt_quotes = {
            quote: (request, str(state).upper())
            for quote, request, state in conn.execute(
                "SELECT quote, request, state FROM melt_quotes"
            )
        }
        paid = Counter(request for request, state in melt_quotes.values() if state == "PAID")
        pending = conn.execute("SELECT count(*) FROM proofs_pending").fetchone()[0]
        return {
            "issued": int(issued.fetchone()[0]),
            "redeemed": int(redeemed.fetchone()[0]),
            "mint_quotes": mint_quotes,
            "melt_quotes": melt_quotes,
            "paid_per_invoice": dict(paid),
            "pending_proofs": int(pending),
        }
    finally:
        conn.close()


REFUSALS = ("already paid", "already issued", "already spent", "already signed", "pending")


def ledger_refusals(log_path: Path) -> dict[str, int]:
    """How often the mint's log mentions refusing a repeat (informative: a refused repeat
    is the mint keeping something from being done twice)."""
    try:
        lines = log_path.read_text(errors="replace").lower().splitlines()
    except OSError:
        return {}
    found = Counter(word for line in lines for word in REFUSALS if word in line)
    return dict(found)


# --- output ------------------------------------------------------------------------------------


def format_multi_host(fig: dict[str, Any]) -> str:
    """bench/chaos.py's report (its kills and proxy cuts left out: none here), then the
    hosts, the cuts and the new checks."""
    base = format_figures(fig).splitlines()
    base[0] = base[0].replace("chaos run", "multi-host run", 1)
    skip = ("kills: 0", "cuts: 0 made of 0")
    lines = [line for line in base if not line.startswith(skip)]
    result = lines.pop()  # RESULT: ...
    hosts = fig["hosts"]
    lines.append(
        f"hosts: {hosts['addresses']} on {hosts['network']}; workers {hosts['worker_nodes']}"
    )
    cuts = fig["host_cuts"]
    lines.append(
        f"cuts of {CUT_HOST}: {cuts['total']} ({cuts['mid_step']} while it ran a step, "
        f"{cuts['mid_step_confirmed']} of them a step that ended after the cut); "
        f"random-phase operations {fig['operations_random_phase']}; tasks sent while it was cut "
        f"off {cuts['tasks_sent_while_cut']}, of which {cuts['taken_by_cut_host']} done by "
        f"{CUT_HOST} after it came back, {cuts['never_done']} never done (lost)"
    )
    lines.append(
        f"  to settled from the cut (min/median/max): {_spread_text(cuts['settled_s'])}; "
        f"after link up: {_spread_text(cuts['settled_after_link_up_s'])}; "
        f"service during the cut: {_spread_text(cuts['service_s'])}; "
        f"{CUT_HOST} answering again after link up: {_spread_text(cuts['rejoined_s'])}"
    )
    for c in cuts["list"]:
        lines.append(
            f"  cut {c['cut']} at op {c['at_op']} ({c['at_s']} s): {c['seconds']} s; running "
            f"{', '.join(c['running']) or 'nothing'}; db sessions {c['db_sessions_at_cut']} "
            f"(at link up {c['db_sessions_at_link_up']}); service {c['service_s']} s, "
            f"settled {c['settled_s']} s ({c['settled_after_link_up_s']} s after link up); "
            f"while cut: {c['transitions_while_cut']} transitions, "
            f"{c['finalized_while_cut']} finalized; back after {c['rejoined_s']} s"
        )
        for step in c["steps"]:
            lines.append(f"      step running at the cut: {step}")
        for probe in c["probes"]:
            lines.append(f"      service probe: {probe}")
        for task in c["taken_by_cut_host"]:
            lines.append(f"      sent while cut, done by {CUT_HOST}: {task}")
        for task in c["never_done"]:
            lines.append(f"      sent while cut, never done (lost): {task}")
        if c["waited_on"]:
            lines.append(f"      last waited on: {'; '.join(c['waited_on'])}")
    close = fig["close_out"]
    lines.append(
        f"close-out: pending sends {close.get('pending_sends')}, prepared left "
        f"{close.get('prepared_left')}, {close.get('seconds')} s"
    )
    for name, m in fig["invariants"]["9 nothing done twice at the mint"]["mints"].items():
        lines.append(f"  {name}: {m}")
    for key, row in fig["invariants"]["8 books = restore from the seed"][
        "per_wallet_and_mint"
    ].items():
        lines.append(f"  restore {key}: {row}")
    lines.append(result)
    return "\n".join(lines)


def run_multi_host(
    operations: int = 100,
    wallets: int = 4,
    cuts: int = 4,
    seed: int = 1,
    *,
    cut_seconds: tuple[float, ...] = CUT_SECONDS,
    max_seconds: float = 1800.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole campaign (as root); returns the figures (figures["ok"]: every
    invariant held)."""
    campaign = MultiHost(
        operations,
        wallets,
        cuts,
        seed,
        cut_seconds=cut_seconds,
        max_seconds=max_seconds,
        log=log or (lambda line: print(line, file=sys.stderr, flush=True)),
    )
    return campaign.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operations", type=int, default=100)
    parser.add_argument("--wallets", type=int, default=4)
    parser.add_argument("--cuts", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cut-seconds",
        default=",".join(f"{s:g}" for s in CUT_SECONDS),
        help="the cuts' lengths, used in turn (shuffled by the seed)",
    )
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = run_multi_host(
        args.operations,
        args.wallets,
        args.cuts,
        args.seed,
        cut_seconds=tuple(float(s) for s in args.cut_seconds.split(",")),
        max_seconds=args.max_seconds,
    )
    print(json.dumps(figures, indent=2, default=str) if args.json else format_multi_host(figures))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
