"""Where a workload round's time goes: the sagas in-process (no Celery), split into the
mint's HTTP answers, Postgres and the rest (Python: ORM, cryptography, JSON); and what one
Celery round trip costs on its own.

    .venv/bin/python bench/profile_round.py [--rounds 20] [--cprofile out.prof] [--statements]

The round is bench/workload.py's (mint 100, send 7, receive it in a second wallet, melt a
5 sat invoice; input fee 100 ppk), through the same saga steps the one-call tasks run, and
by turns with it through those of prepare then execute for send and melt (2-step). It
starts its own mint, migrates the database `cashu_worker_profile` (`--database-url`), and
for the Celery figure a worker with one process on Redis db 13 (`--redis-url`).
"""

from __future__ import annotations

import argparse
import cProfile
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import httpx  # noqa: E402
import redis  # noqa: E402
from db_harness import TEST_MNEMONIC, migrate_fresh  # noqa: E402
from mint_harness import make_invoice, start_mint  # noqa: E402
from sqlalchemy import event  # noqa: E402
from workload import FloorWallet, MintClient, Tally, fetch_keysets, floor_steps  # noqa: E402

from models.db import engine, unit_of_work  # noqa: E402
from nuts.client import get_mint_client  # noqa: E402
from nuts.secrets import derive_wallet_seed  # noqa: E402
from sagas import (  # noqa: E402
    melt,
    mint,
    receive,
    registry,  # noqa: E402
    send,
)
from sagas.engine import SagaContext  # noqa: E402

KINDS = ("mint", "send", "receive", "melt")
# Celery calls per operation: the one-call tasks, and prepare then execute for send and melt
TASKS = {
    "one-call": {"mint": 2, "send": 1, "receive": 1, "melt": 1},
    "2-step": {"mint": 2, "send": 2, "receive": 1, "melt": 2},
}
DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/cashu_worker_profile"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"


class Meter:
    """Wall time spent waiting for the mint (httpx) and for Postgres (cursor execute and
    commit), and how many requests, statements and commits."""

    def __init__(self, database_url: str) -> None:
        self.ms: Counter[str] = Counter()
        self.count: Counter[str] = Counter()
        self.log: list[str] | None = None  # a list: every statement's first 100 characters
        db = engine(database_url)
        event.listen(db, "before_cursor_execute", self._before)
        event.listen(db, "after_cursor_execute", self._after)
        send_request = httpx.Client.send
        commit = db.dialect.do_commit
        meter = self

        def timed_commit(dbapi_connection: Any) -> None:
            t0 = time.perf_counter()
            try:
                commit(dbapi_connection)
            finally:
                meter.ms["sql"] += (time.perf_counter() - t0) * 1000
                meter.count["commits"] += 1

        db.dialect.do_commit = timed_commit  # type: ignore[method-assign]

        def timed_send(client: httpx.Client, request: httpx.Request, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return send_request(client, request, **kw)
            finally:
                meter.ms["http"] += (time.perf_counter() - t0) * 1000
                meter.count["http"] += 1

        httpx.Client.send = timed_send  # type: ignore[method-assign]

    def _before(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        conn.info["t0"] = time.perf_counter()
        if self.log is not None:
            self.log.append(" ".join(statement.split())[:100])

    def _after(self, conn: Any, *_: Any) -> None:
        self.ms["sql"] += (time.perf_counter() - conn.info.pop("t0")) * 1000
        self.count["statements"] += 1

    def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        return Counter(self.ms), Counter(self.count)


def metered(steps: dict[str, Callable[[], object]], meter: Meter) -> dict[str, dict]:
    """Run the steps in order; per kind: ms, http ms, sql ms, counts."""
    out = {}
    for kind, step in steps.items():
        ms0, n0 = meter.snapshot()
        t0 = time.perf_counter()
        step()
        total = (time.perf_counter() - t0) * 1000
        ms1, n1 = meter.snapshot()
        out[kind] = {"ms": total, **{k: ms1[k] - ms0[k] for k in ("http", "sql")}}
        out[kind] |= {f"n_{k}": n1[k] - n0[k] for k in ("http", "statements", "commits")}
    return out


def one_round(
    ctx: SagaContext, url: str, a: str, b: str, meter: Meter, *, two_step: bool = False
) -> dict[str, dict]:
    """The round through the saga steps of mint.prepare/execute, send.token,
    receive.redeem and melt.pay; with `two_step`, send.prepare/execute and
    melt.prepare/execute instead of send.token and melt.pay."""

    def mint_op() -> None:
        op = mint.prepare(ctx, a, url, 100)
        op = mint.execute(ctx, op["id"])
        while op["state"] != "finalized":  # FakeWallet marks the quote paid a moment later
            time.sleep(0.01)
            op = mint.refresh(ctx, op["id"])

    def send_op() -> None:
        if two_step:
            token.append(send.execute(ctx, send.prepare(ctx, a, url, 7)["id"])["token"])
        else:
            token.append(send.token(ctx, a, url, 7)["token"])

    def melt_op() -> None:
        if two_step:
            melt.execute(ctx, melt.prepare(ctx, a, url, invoice)["id"])
        else:
            melt.pay(ctx, a, url, invoice)

    token: list[str] = []
    invoice = make_invoice(5)
    return metered(
        {
            "mint": mint_op,
            "send": send_op,
            "receive": lambda: receive.redeem(ctx, b, token[-1]),
            "melt": melt_op,
        },
        meter,
    )


def floor_one_round(a: FloorWallet, b: FloorWallet, meter: Meter) -> dict[str, dict]:
    """The same round through bench/workload.py's floor (HTTP only, nothing persisted)."""
    return metered(floor_steps(a, b, make_invoice(5), Tally()), meter)


def medians(rounds: list[dict[str, dict]]) -> dict[str, dict[str, float]]:
    """Per kind, the median of each figure, `rest` = ms - http - sql; and their sum as
    "round"."""
    out: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        med = {k: statistics.median(r[kind][k] for r in rounds) for k in rounds[0][kind]}
        out[kind] = med | {"rest": med["ms"] - med["http"] - med["sql"]}
    out["round"] = {k: sum(out[kind][k] for kind in KINDS) for k in ("ms", "http", "sql", "rest")}
    return out


def celery_round_trip(database_url: str, redis_url: str, calls: int = 300) -> float:
    """Median ms of `cashu.ops.get` of an unknown id (one indexed read) through a real
    worker with one prefork process, as CashuClient sees it."""
    from worker_harness import start_worker

    from cashu_client import CashuClient

    redis.Redis.from_url(redis_url).flushdb()
    worker = start_worker(
        database_url=database_url, redis_url=redis_url, mnemonic=TEST_MNEMONIC, concurrency=1
    )
    try:
        with CashuClient(redis_url, timeout=30) as client:
            unknown = str(uuid.uuid4())
            times = []
            for i in range(calls + 20):
                t0 = time.perf_counter()
                client.ops_get(unknown)
                if i >= 20:
                    times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)
    finally:
        worker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--cprofile", type=Path, help="also write a cProfile of the rounds")
    parser.add_argument("--statements", action="store_true", help="list one round's SQL")
    args = parser.parse_args(argv)

    migrate_fresh(args.database_url)
    running = start_mint(input_fee_ppk=100)
    ctx = SagaContext(
        uow=partial(unit_of_work, args.database_url),
        mint_client=get_mint_client,
        wallet_seed=lru_cache(partial(derive_wallet_seed, TEST_MNEMONIC)),  # as the worker
    )
    try:
        url = registry.add_mint(ctx, running.url, True)["url"]
        meter = Meter(args.database_url)
        a, b = f"profile-{uuid.uuid4().hex[:6]}-A", f"profile-{uuid.uuid4().hex[:6]}-B"
        keysets = fetch_keysets(MintClient(running.url))
        fa, fb = (FloorWallet(MintClient(running.url), keysets) for _ in range(2))
        for _ in range(3):  # warm-up: connections, keyset cache, the wallet's small amounts
            for way in TASKS:
                one_round(ctx, url, a, b, meter, two_step=way == "2-step")
            floor_one_round(fa, fb, meter)
        profiler = cProfile.Profile() if args.cprofile else None
        rounds: dict[str, list[dict[str, dict]]] = {way: [] for way in TASKS}
        floors = []
        for _ in range(args.rounds):  # by turns, so all see the same machine
            for way in TASKS:
                if profiler:
                    profiler.enable()
                rounds[way].append(one_round(ctx, url, a, b, meter, two_step=way == "2-step"))
                if profiler:
                    profiler.disable()
            floors.append(floor_one_round(fa, fb, meter))
        if profiler:
            profiler.dump_stats(args.cprofile)
        if args.statements:
            meter.log = []
            for kind, figures in one_round(ctx, url, a, b, meter).items():
                print(f"{kind}: {figures['n_statements']} statements")
            print("\n".join(meter.log), end="\n\n")
            meter.log = None
    finally:
        running.stop()
    rtt = celery_round_trip(args.database_url, args.redis_url)
    floor = medians(floors)
    for way, tasks in TASKS.items():
        report(way, medians(rounds[way]), floor, tasks, rtt, args.rounds)
    print(f"Celery round trip of a one-read task (cashu.ops.get), median: {rtt:.2f} ms")
    return 0


def report(
    way: str,
    ours: dict[str, dict[str, float]],
    floor: dict[str, dict[str, float]],
    tasks: dict[str, int],
    rtt: float,
    rounds: int,
) -> None:
    print(f"sagas in-process, {way}, {rounds} rounds, ms per operation (medians)")
    header = ["", "total", "mint HTTP", "Postgres", "rest", "requests", "statements", "commits"]
    print(f"{header[0]:<9}" + "".join(f"{h:>11}" for h in header[1:]))
    for kind in (*KINDS, "round"):
        m = ours[kind]
        line = f"{kind:<9}" + "".join(f"{m[k]:>11.1f}" for k in ("ms", "http", "sql", "rest"))
        if kind != "round":
            line += "".join(f"{m[k]:>11.0f}" for k in ("n_http", "n_statements", "n_commits"))
        print(line)

    # The least this engine can take: its own mint requests and Postgres work, the
    # floor's Python (the same cryptography), and its Celery calls; no Python of its own.
    print(f"\n{way} against the floor, run by turns (ms per operation, medians)")
    header = ["", "floor", "its HTTP", "its rest", "our HTTP", "Postgres", "Celery", "least"]
    header += ["least/fl", "ours", "ours/fl"]
    print(f"{header[0]:<9}" + "".join(f"{h:>10}" for h in header[1:]))
    for kind in (*KINDS, "round"):
        f, m = floor[kind], ours[kind]
        celery = rtt * (sum(tasks.values()) if kind == "round" else tasks[kind])
        least = m["http"] + m["sql"] + f["rest"] + celery
        whole = m["ms"] + celery
        figures = (f["ms"], f["http"], f["rest"], m["http"], m["sql"], celery, least)
        print(
            f"{kind:<9}"
            + "".join(f"{x:>10.1f}" for x in figures)
            + f"{least / f['ms']:>10.2f}{whole:>10.1f}{whole / f['ms']:>10.2f}"
        )
    print()


if __name__ == "__main__":
    sys.exit(main())
