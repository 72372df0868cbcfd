"""Slow Lightning: melts whose payments take seconds, and what they do to everyone else.

Run by hand (minutes; tests/test_bench_smoke.py runs a tiny version):

    .venv/bin/python bench/slow_lightning.py [--mint 0.20.2|0.21.0|both] [--melts 40]
        [--delay 10] [--rounds 20] [--layout plain|split] [--async-melts on|off]
        [--worker-cmd CMD ...] [--json out.json]

The issue's scenario: FakeWallet outgoing payments delayed `--delay` seconds
(FAKEWALLET_DELAY_OUTGOING_PAYMENT), `--melts` melts enqueued at once while another client
runs send + receive rounds. Per mint version (0.20.2 and 0.21.0 by default, one after the
other), everything of its own, stopped at the end:

- a fresh Nutshell FakeWallet mint (tests/mint_harness.py), input_fee_ppk=100, the delay,
  and FAKEWALLET_PAYMENT_STATE=PENDING: a check of a pending melt says PENDING until the
  payment is done (the FakeWallet would say SETTLED at once, docs/test-mint.md);
- the database `cashu_worker_bench_lightning` (`--database-url`): schema dropped, migrated;
- Redis db 10 (`--redis-url`), flushed;
- the workers of `--layout` (tests/worker_harness.py), and one `celery -A tasks beat`
  (bench/workload.py's):
    plain  `celery -A tasks worker -c --concurrency --pool prefork` (every queue the app
           declares)
    split  as scripts/run.sh starts them: `celery -A tasks worker -Q cashu,cashu.beat -c
           --concurrency --pool prefork` and `celery -A tasks worker -Q cashu.lightning
           --pool threads -c 16` (the melt's pay step on a queue and a thread pool of its own)
  or `--worker-cmd "celery -A tasks worker ..."` (repeatable: one worker each) instead;
  every worker gets CASHU_ASYNC_MELTS=true (`--async-melts on`, the default: the pay step
  asks the mint to pay in the background) or false (`off`: it waits for the payment), and
  the default CASHU_POLL_MIN_AGE_SECONDS (3 s; the test harness's 0 is dropped).

Phase 1, idle: `--rounds` rounds of wallet A sending 7 sat (cashu.send.token) and wallet B
receiving the token (cashu.receive.redeem), each call waiting for its result; a round's
latency is the two calls'. Phase 2, loaded: `--melts` wallets funded with 16 sat each
(cashu.mint.prepare + execute), then one `cashu.melt.pay` of a 5 sat invoice each, all sent
at once without waiting; right after, a fresh wallet pair runs the same rounds from another
thread. The melts are settled when the database has all of their operations finalized or
rolled back (polled every 0.25 s: a melt task may answer `pending` and a poller settle it
later). The report: seconds from the enqueue until all are settled, the rounds' p50 and p95
(ms) idle and loaded, p95 loaded / idle, and each mint's melt costs against their worst case
(fee_reserve + swap_fee + input_fee; bench/chaos.py's check); for every melt rolled back,
its error and its quote's state at the mint once its payment would be over (PAID: the
wallet released inputs the mint spent, a failure). The mint's log is kept as
.test-mints/bench-slow-<version>-<6 hex>-mint.log, the workers' as .test-mints/celery-worker-*.log
(paths on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO, REPO / "tests", REPO / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import httpx  # noqa: E402
import redis  # noqa: E402
from chaos import melt_costs  # noqa: E402
from db_harness import TEST_MNEMONIC, migrate_fresh  # noqa: E402
from mint_harness import MINT_ROOT_DIR, MINT_VERSIONS, RunningMint, make_invoice, start_mint  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402
from worker_harness import RunningWorker  # noqa: E402
from workload import (  # noqa: E402
    CELERY_BIN,
    INPUT_FEE_PPK,
    MELT_AMOUNT,
    SEND_AMOUNT,
    FloorWallet,
    Tally,
    _drive,
    _quantile,
    start_beat,
    stop_group,
)

from cashu_client import CashuClient  # noqa: E402
from nuts.client import MintClient  # noqa: E402
from nuts.keysets import fetch_keysets  # noqa: E402

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/cashu_worker_bench_lightning"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/10"
# Per layout, its workers: (queues, pool, concurrency); queues None is no -Q (every queue the
# app declares), concurrency None is --concurrency. split is scripts/run.sh's two workers.
LAYOUTS: dict[str, list[tuple[str | None, str, int | None]]] = {
    "plain": [(None, "prefork", None)],
    "split": [("cashu,cashu.beat", "prefork", None), ("cashu.lightning", "threads", 16)],
}
ASYNC_MELTS = {"on": "true", "off": "false"}  # --async-melts -> CASHU_ASYNC_MELTS
MELT_FUNDING = 16  # sat per melt wallet: 5 sat + fee reserve + input fee, one proof
ROUND_FUNDING = 10  # sat per send + receive round: 7 sat + the swap's input fee
TERMINAL = ("finalized", "rolled_back")
POLL_SECONDS = 0.25

MELT_ROWS = text(
    "SELECT id, wallet, kind, state, amount, data, quote_id, error_code, error_message "
    "FROM operations WHERE kind = 'melt' AND wallet = ANY(:wallets)"
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- workers -----------------------------------------------------------------------------------


class CommandWorker(RunningWorker):
    """A worker started from a command line of the caller's (`--worker-cmd`). A leading
    `celery` is the project's .venv one; `-n <hostname>` is added unless given (the harness
    pings the worker by that name)."""

    def __init__(self, argv: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.argv = [str(CELERY_BIN), *argv[1:]] if argv[:1] == ["celery"] else list(argv)
        for i, arg in enumerate(argv):
            if arg in ("-n", "--hostname") and i + 1 < len(argv):
                self.hostname = argv[i + 1]
            elif arg.startswith("--hostname="):
                self.hostname = arg.split("=", 1)[1]

    def command(self) -> list[str]:
        named = any(a in ("-n", "--hostname") or a.startswith("--hostname=") for a in self.argv)
        return list(self.argv) if named else [*self.argv, "-n", self.hostname]


def start_workers(
    layout: str,
    worker_cmds: list[str] | None,
    concurrency: int,
    database_url: str,
    redis_url: str,
    async_melts: str = "on",
) -> list[RunningWorker]:
    common = {
        "database_url": database_url,
        "redis_url": redis_url,
        "mnemonic": TEST_MNEMONIC,
        # CASHU_POLL_MIN_AGE_SECONDS unset: the beat's pollers leave alone what moved in the
        # last 3 s (tasks/config.py), as under scripts/run.sh; the test harness sets 0.
        "env_overrides": {
            "CASHU_ASYNC_MELTS": ASYNC_MELTS[async_melts],
            "CASHU_POLL_MIN_AGE_SECONDS": None,
        },
    }
    if worker_cmds:
        workers: list[RunningWorker] = [
            CommandWorker(shlex.split(cmd), **common) for cmd in worker_cmds
        ]
    else:
        workers = [
            RunningWorker(queues=queues, pool=pool, concurrency=c or concurrency, **common)
            for queues, pool, c in LAYOUTS[layout]
        ]
    started: list[RunningWorker] = []
    try:
        for worker in workers:
            started.append(worker.start())
    except BaseException:
        for worker in started:
            worker.stop()
        raise
    return started


def worker_commands(workers: list[RunningWorker]) -> list[str]:
    """The workers' command lines as a reader would type them."""
    out = []
    for worker in workers:
        argv = worker.command()
        argv = ["celery", *argv[1:]] if argv[0] == str(CELERY_BIN) else argv
        if "-n" in argv:  # the harness's hostname: noise in a report
            i = argv.index("-n")
            argv = argv[:i] + argv[i + 2 :]
        out.append(" ".join(a for a in argv if a not in ("--without-mingle", "--without-gossip")))
    return out


# --- the two phases ----------------------------------------------------------------------------


def fund(client: CashuClient, wallet: str, url: str, amount: int) -> None:
    """mint.prepare + mint.execute (refresh while the quote is not paid yet)."""
    op = client.mint_prepare(wallet, url, amount)
    _drive(client, op["id"], client.mint_execute, client.mint_refresh, "finalized", Tally())


def send_receive_rounds(
    client: CashuClient,
    url: str,
    a: str,
    b: str,
    rounds: int,
    floor: tuple[FloorWallet, FloorWallet] | None = None,
) -> list[dict[str, float]]:
    """`rounds` times: A sends 7 sat as a token, B receives it; seconds of each call. With
    `floor`, the protocol floor's send + receive right after each (its "floor" seconds): what
    the mint itself answers at that moment, without any worker."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        sent = client.send_token(a, url, SEND_AMOUNT)
        t1 = time.perf_counter()
        received = client.receive_redeem(b, sent["token"])
        t2 = time.perf_counter()
        if received["state"] != "finalized":
            raise RuntimeError(f"receive ended {received['state']}: {received.get('error')}")
        times.append({"send": t1 - t0, "receive": t2 - t1, "round": t2 - t0})
        if floor is not None:
            tally = Tally()
            floor[1].receive(floor[0].send(SEND_AMOUNT, tally), tally)
            times[-1]["floor"] = time.perf_counter() - t2
    return times


def floor_pair(mint_url: str, amount: int) -> tuple[FloorWallet, FloorWallet]:
    """Two floor wallets (bench/workload.py), the first holding `amount`."""
    client = MintClient(mint_url)
    keysets = fetch_keysets(client)
    a, b = FloorWallet(client, keysets), FloorWallet(client, keysets)
    a.mint(amount)
    return a, b


def latency(times: list[dict[str, float]]) -> dict[str, float]:
    """p50 and p95 in ms of the rounds (send + receive), and of each call."""
    out: dict[str, float] = {}
    for key in ("round", "send", "receive", "floor"):
        values = [t[key] for t in times if key in t]
        if not values:
            continue
        out[f"{key}_p50_ms"] = 1000 * statistics.median(values)
        out[f"{key}_p95_ms"] = 1000 * _quantile(values, 0.95)
    return out


def wait_settled(engine: Any, wallets: list[str], started: float, timeout: float) -> dict[str, Any]:
    """Poll the melts' operations until every wallet's is finalized or rolled back."""
    settled_at: dict[str, float] = {}
    rows: list[Any] = []
    deadline = started + timeout
    while True:
        with engine.connect() as conn:
            rows = list(conn.execute(MELT_ROWS, {"wallets": wallets}))
        now = time.monotonic()
        for row in rows:
            if row.state in TERMINAL:
                settled_at.setdefault(row.wallet, now - started)
        if len(settled_at) >= len(wallets) or now > deadline:
            break
        time.sleep(POLL_SECONDS)
    done = len(settled_at) >= len(wallets)
    return {
        "all_settled_s": max(settled_at.values()) if done else None,
        "first_settled_s": min(settled_at.values(), default=None),
        "settled": len(settled_at),
        "states": dict(Counter(row.state for row in rows)),
        "missing": len(wallets) - len(rows),  # melt.pay not (yet) run: no operation
        "rows": rows,
    }


def rolled_back_at_mint(
    mint_url: str, rows: list[Any], started: float, delay: float
) -> dict[str, Any]:
    """The rolled-back melts: their errors, and their quotes' state at the mint once every
    payment the mint may have started has had time to end (a PAID quote is a melt the
    wallet gave up, released its inputs, and the mint paid anyway)."""
    rolled_back = [row for row in rows if row.state == "rolled_back"]
    out: dict[str, Any] = {
        "count": len(rolled_back),
        "errors": dict(Counter(f"{r.error_code}: {r.error_message}" for r in rolled_back)),
        "quote_states": {},
        "paid": [],
    }
    if not rolled_back:
        return out
    time.sleep(max(0.0, started + 2 * delay + 5 - time.monotonic()))
    states: Counter[str] = Counter()
    with httpx.Client(base_url=mint_url, timeout=10) as http:
        for row in rolled_back:
            try:
                state = http.get(f"/v1/melt/quote/bolt11/{row.quote_id}").json()["state"]
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                state = f"unknown ({exc!r})"
            states[state] += 1
            if state == "PAID":
                out["paid"].append({"id": str(row.id), "wallet": row.wallet, "quote": row.quote_id})
    out["quote_states"] = dict(states)
    return out


def run_mint(
    version: str,
    *,
    melts: int,
    delay: float,
    rounds: int,
    layout: str,
    worker_cmds: list[str] | None,
    concurrency: int,
    database_url: str,
    redis_url: str,
    async_melts: str = "on",
) -> dict[str, Any]:
    """Both phases against one fresh mint of `version`, workers and beat of their own."""
    tag = f"slow-{version}-{uuid.uuid4().hex[:6]}"
    timeout = 120.0 + melts * delay  # every payment one after the other, and then some
    mint: RunningMint | None = None
    workers: list[RunningWorker] = []
    beat = None
    engine = None
    MINT_ROOT_DIR.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-slow-", dir=MINT_ROOT_DIR))
    try:
        log(f"[{version}] starting mint (payments take {delay:g} s), database, Redis, workers")
        mint = start_mint(
            version=version,
            input_fee_ppk=INPUT_FEE_PPK,
            env_overrides={
                "FAKEWALLET_DELAY_OUTGOING_PAYMENT": str(delay),
                "FAKEWALLET_PAYMENT_STATE": "PENDING",
            },
        )
        migrate_fresh(database_url)
        redis.Redis.from_url(redis_url).flushdb()
        workers = start_workers(
            layout, worker_cmds, concurrency, database_url, redis_url, async_melts
        )
        beat = start_beat(database_url, redis_url, workdir)
        for worker in workers:
            log(f"[{version}] worker log: {worker.log_path}")
        engine = create_engine(database_url, poolclass=NullPool)
        client = CashuClient(redis_url, timeout=timeout)
        url = client.mints_add(mint.url)["url"]

        log(f"[{version}] phase 1: {rounds} send + receive rounds on an idle system")
        fund(client, f"{tag}-warm-A", url, 2 * ROUND_FUNDING)
        send_receive_rounds(client, url, f"{tag}-warm-A", f"{tag}-warm-B", 1)  # warm-up
        fund(client, f"{tag}-idle-A", url, ROUND_FUNDING * rounds + 20)
        floor = floor_pair(mint.url, 2 * ROUND_FUNDING * rounds + 20)  # both phases
        idle = send_receive_rounds(
            client, url, f"{tag}-idle-A", f"{tag}-idle-B", rounds, floor=floor
        )

        log(f"[{version}] phase 2: funding {melts} melt wallets")
        wallets = [f"{tag}-melt-{i}" for i in range(melts)]
        for wallet in wallets:
            fund(client, wallet, url, MELT_FUNDING)
        fund(client, f"{tag}-load-A", url, ROUND_FUNDING * rounds + 20)
        invoices = [make_invoice(MELT_AMOUNT) for _ in wallets]

        log(f"[{version}] phase 2: {melts} melts at once, {rounds} rounds beside them")
        loaded: list[dict[str, float]] = []
        failure: list[BaseException] = []

        def rounds_beside() -> None:
            try:
                loaded.extend(
                    send_receive_rounds(
                        client, url, f"{tag}-load-A", f"{tag}-load-B", rounds, floor=floor
                    )
                )
            except BaseException as exc:  # reported below
                failure.append(exc)

        started = time.monotonic()
        results = [
            client.app.send_task(
                "cashu.melt.pay",
                kwargs={"wallet": w, "mint_url": url, "invoice": inv, "method": "bolt11"},
                queue=client.queue,
            )
            for w, inv in zip(wallets, invoices, strict=True)
        ]
        beside = threading.Thread(target=rounds_beside, daemon=True)
        beside.start()
        settled = wait_settled(engine, wallets, started, timeout)
        beside.join(timeout=timeout)
        rounds_s = time.monotonic() - started
        if failure:
            raise RuntimeError(f"a send + receive round beside the melts failed: {failure[0]!r}")
        if beside.is_alive():
            raise RuntimeError(f"the rounds beside the melts did not end within {timeout:.0f} s")
        rows = settled.pop("rows")
        rolled_back = rolled_back_at_mint(mint.url, rows, started, delay)
        costs = melt_costs(rows)
        costs.pop("largest", None)
        task_states = dict(Counter(r.state for r in results))
        client.close()
        return {
            "mint": version,
            "layout": "custom" if worker_cmds else layout,
            "async_melts": async_melts,
            "workers": worker_commands(workers),
            "worker_logs": [str(w.log_path) for w in workers],
            "melts": melts,
            "delay_s": delay,
            "rounds": rounds,
            **settled,
            "rounds_beside_s": rounds_s,
            "melt_tasks": task_states,
            "idle": latency(idle),
            "loaded": latency(loaded),
            "costs": costs,
            "rolled_back": rolled_back,
            "load_at_end": os.getloadavg()[0],
            "raw": {"idle": idle, "loaded": loaded},
        }
    finally:
        if engine is not None:
            engine.dispose()
        stop_group(beat)
        for worker in workers:
            worker.stop()
        if mint is not None:
            mint.stop(remove_db=False)
            kept = MINT_ROOT_DIR / f"bench-{tag}-mint.log"
            with contextlib.suppress(OSError):
                shutil.copyfile(mint.log_path, kept)
                log(f"[{version}] mint log: {kept}")
            shutil.rmtree(mint.db_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


# --- the report --------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_report(results: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    s = settings
    lines = [
        f"slow Lightning: {s['melts']} melts of {MELT_AMOUNT} sat at once, payments take "
        f"{s['delay']:g} s, {s['rounds']} send + receive rounds ({SEND_AMOUNT} sat) per phase; "
        f"CASHU_ASYNC_MELTS={ASYNC_MELTS[s['async_melts']]}; "
        f"{s['cpus']} CPUs, load {s['load_at_start']:.1f} at start",
    ]
    for r in results:
        lines.append(
            f"  {r['mint']} workers: "
            + " | ".join(r["workers"])
            + f"; load {r['load_at_end']:.1f} at end"
        )
    lines += [
        "",
        "round = send.token + receive.redeem, ms; settled = seconds from the enqueue until "
        "every melt is finalized or rolled back",
        f"{'mint':<8}{'layout':<8}{'settled s':>10}{'idle p50':>10}{'idle p95':>10}"
        f"{'loaded p50':>12}{'loaded p95':>12}{'p95 load/idle':>15}",
    ]
    for r in results:
        idle, loaded = r["idle"], r["loaded"]
        settled = "-" if r["all_settled_s"] is None else f"{r['all_settled_s']:.1f}"
        ratio = loaded["round_p95_ms"] / idle["round_p95_ms"]
        lines.append(
            f"{r['mint']:<8}{r['layout']:<8}{settled:>10}{_ms(idle['round_p50_ms']):>10}"
            f"{_ms(idle['round_p95_ms']):>10}{_ms(loaded['round_p50_ms']):>12}"
            f"{_ms(loaded['round_p95_ms']):>12}{ratio:>15.1f}"
        )
    lines += [
        "",
        "the protocol floor's send + receive right after each round (no worker: the mint's own "
        "answers at that moment), ms",
        f"{'mint':<8}{'idle p50':>10}{'idle p95':>10}{'loaded p50':>12}{'loaded p95':>12}"
        f"{'p95 load/idle':>15}",
    ]
    for r in results:
        idle, loaded = r["idle"], r["loaded"]
        if "floor_p95_ms" not in idle or "floor_p95_ms" not in loaded:
            continue
        lines.append(
            f"{r['mint']:<8}{_ms(idle['floor_p50_ms']):>10}{_ms(idle['floor_p95_ms']):>10}"
            f"{_ms(loaded['floor_p50_ms']):>12}{_ms(loaded['floor_p95_ms']):>12}"
            f"{loaded['floor_p95_ms'] / idle['floor_p95_ms']:>15.1f}"
        )
    lines.append("")
    for r in results:
        c, rb = r["costs"], r["rolled_back"]
        ok = not c["out_of_range"] and r["all_settled_s"] is not None and not rb["paid"]
        largest = c["max_cost_over_worst_case"]
        states = ", ".join(f"{k} {v}" for k, v in sorted(r["states"].items()))
        tasks = ", ".join(f"{k} {v}" for k, v in sorted(r["melt_tasks"].items()))
        verdict = f"NO, {len(c['out_of_range'])} out of range" if c["out_of_range"] else "yes"
        lines.append(
            f"{'ok  ' if ok else 'FAIL'} {r['mint']} melts: {r['settled']}/{r['melts']} settled "
            f"({states}; melt.pay tasks {tasks}); cost <= worst case for each of the "
            f"{c['finalized']} finalized: {verdict} ({c['cost_sat']} sat of at most "
            f"{c['worst_case_sat']}, largest cost/worst {'-' if largest is None else largest})"
        )
        if rb["count"]:
            quotes = ", ".join(f"{k} {v}" for k, v in sorted(rb["quote_states"].items()))
            errors = "; ".join(f"{v}x {k}" for k, v in rb["errors"].items())
            lines.append(
                f"{'ok  ' if not rb['paid'] else 'FAIL'} {r['mint']} {rb['count']} rolled back "
                f"({errors}); their quotes at the mint afterwards: {quotes}"
                + (
                    f": {len(rb['paid'])} paid by the mint after the wallet released the inputs"
                    if rb["paid"]
                    else ""
                )
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mint", choices=[*MINT_VERSIONS, "both"], default="both")
    parser.add_argument("--melts", type=int, default=40)
    parser.add_argument("--delay", type=float, default=10.0, help="seconds per payment")
    parser.add_argument("--rounds", type=int, default=20, help="send + receive rounds per phase")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="split")
    parser.add_argument(
        "--worker-cmd",
        action="append",
        help="a worker's command line, e.g. 'celery -A tasks worker -Q cashu -c 8' "
        "(repeatable, one worker each; replaces --layout)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="-c of the plain worker and of split's cashu,cashu.beat worker",
    )
    parser.add_argument(
        "--async-melts",
        choices=sorted(ASYNC_MELTS),
        default="on",
        help="CASHU_ASYNC_MELTS=true/false for every worker (default on)",
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    settings = {
        "melts": args.melts,
        "delay": args.delay,
        "rounds": args.rounds,
        "async_melts": args.async_melts,
        "cpus": os.cpu_count(),
        "load_at_start": os.getloadavg()[0],
    }
    versions = list(MINT_VERSIONS) if args.mint == "both" else [args.mint]
    results = [
        run_mint(
            version,
            melts=args.melts,
            delay=args.delay,
            rounds=args.rounds,
            layout=args.layout,
            worker_cmds=args.worker_cmd,
            concurrency=args.concurrency,
            database_url=args.database_url,
            redis_url=args.redis_url,
            async_melts=args.async_melts,
        )
        for version in versions
    ]
    print(format_report(results, settings), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "results": results}, indent=2))
    ok = all(
        r["all_settled_s"] is not None
        and not r["costs"]["out_of_range"]
        and not r["rolled_back"]["paid"]
        for r in results
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
