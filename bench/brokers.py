"""The broker and the worker pool, side by side: one Celery round trip and one wallet round
on Redis and on RabbitMQ, with the prefork, threads and solo pools.

Run by hand (a few minutes; not part of the test suite):

    .venv/bin/python bench/brokers.py [--calls 300] [--rounds 10] [--passes 2]
        [--pools prefork,threads,solo] [--json out.json]

Everything is its own: one fresh Nutshell FakeWallet mint (input_fee_ppk=100), the Postgres
database `cashu_worker_bench_brokers` (schema dropped and migrated), Redis db 9 (flushed),
the RabbitMQ vhost `cashu_worker_bench` (made with rabbitmqctl if missing, queues purged).
For each pass, broker and pool in turn: one `celery -A tasks worker -c 1` (all queues), a
warm-up, then

- round trip: `--calls` calls of cashu.wallet.balance for an empty wallet, each waiting
  for its result (publish, deliver, one read of the database, result): the cost of a hop;
  split by the clocks of this host at each end of it: the caller's send (publish), the
  worker's task-received event (deliver), its task-started event (the task handed to a
  pool process), the result's date_done (run and store) and the caller's wake-up (result);
- round: `--rounds` rounds of mint 100 / send 7 / receive / melt 5 with the one-call tasks
  (bench/workload.py's worker_round), ms per round.

The worker sends task events, as it does while Flower watches (CASHU_TASK_EVENTS=true).
Passes alternate the configurations so that drift hits them all alike; the figures are
medians over all passes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO, REPO / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
from broker_harness import purge_queues  # noqa: E402
from db_harness import TEST_MNEMONIC, migrate_fresh  # noqa: E402
from mint_harness import make_invoice, start_mint  # noqa: E402
from worker_harness import start_worker  # noqa: E402
from workload import (  # noqa: E402
    CALL_TIMEOUT,
    INPUT_FEE_PPK,
    KINDS,
    MELT_AMOUNT,
    Tally,
    worker_round,
)

from cashu_client import CashuClient  # noqa: E402

DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/cashu_worker_bench_brokers"
REDIS_URL = "redis://127.0.0.1:6379/9"
RABBITMQ_VHOST = "cashu_worker_bench"
RABBITMQ_URL = f"amqp://guest:guest@127.0.0.1:5672/{RABBITMQ_VHOST}"
BROKERS = {"redis": REDIS_URL, "rabbitmq": RABBITMQ_URL}


def ensure_vhost() -> None:
    """The bench's own vhost, guest allowed (rabbitmqctl: run as root or the rabbitmq user)."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, check=True
    )
    if RABBITMQ_VHOST not in listed.stdout.split():
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", RABBITMQ_VHOST], check=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", RABBITMQ_VHOST, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )


HOPS = ("publish", "deliver", "to process", "run+store", "result")


class TaskClock:
    """When the worker received and started each task, from its task events."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.received: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        def note(into: dict[str, float]) -> Any:
            return lambda event: into.__setitem__(event["uuid"], event["timestamp"])

        handlers = {"task-received": note(self.received), "task-started": note(self.started)}
        with self.app.connection_for_read() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers=handlers)
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def start(self, probe: Any) -> TaskClock:
        self._thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # listening once a probe's events come back
            task_id = probe()
            time.sleep(0.2)
            if task_id in self.started:
                return self
        raise RuntimeError("no task events from the worker")

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(timeout=5)


def hop_times(client: CashuClient, calls: int) -> tuple[list[float], dict[str, list[float]]]:
    """`calls` round trips of cashu.wallet.balance: each one's time, and each split into
    HOPS where its task events came back (seconds)."""
    app = client.app

    def call() -> tuple[str, float, float, float, float]:
        t0 = time.time()
        result = app.send_task(
            "cashu.wallet.balance", kwargs={"wallet": "bb-empty"}, queue=client.queue
        )
        sent = time.time()
        result.get(timeout=CALL_TIMEOUT)
        got = time.time()
        done = result.date_done
        stored = done.timestamp() if isinstance(done, datetime) else got
        return result.id, t0, sent, stored, got

    clock = TaskClock(app).start(lambda: call()[0])
    try:
        trips = [call() for _ in range(calls)]
        time.sleep(0.5)  # the last task-started events
    finally:
        clock.stop()
    hops: dict[str, list[float]] = {hop: [] for hop in HOPS}
    totals = [got - t0 for _, t0, _, _, got in trips]
    for task_id, t0, sent, stored, got in trips:
        received, started = clock.received.get(task_id), clock.started.get(task_id)
        if received is None or started is None:
            continue
        spans = (sent - t0, received - sent, started - received, stored - started, got - stored)
        for hop, span in zip(HOPS, spans, strict=True):
            hops[hop].append(span)
    return totals, hops


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(broker: str, pool: str, mint_url: str, calls: int, rounds: int) -> dict[str, Any]:
    """One worker on `broker` with `pool`: round trips, then wallet rounds."""
    broker_url = BROKERS[broker]
    if broker == "rabbitmq":
        purge_queues(broker_url)
    worker = start_worker(
        database_url=DATABASE_URL,
        redis_url=REDIS_URL,
        mnemonic=TEST_MNEMONIC,
        concurrency=1,
        queues=None,  # the plain command: every queue
        pool=pool,
        broker_url=broker_url,
        env_overrides={"CASHU_TASK_EVENTS": "true"},
    )
    try:
        with CashuClient(broker_url, REDIS_URL, timeout=CALL_TIMEOUT) as client:
            url = client.mints_add(mint_url)["url"]
            tag = uuid.uuid4().hex[:6]
            a, b = f"bb-{tag}-A", f"bb-{tag}-B"
            tally = Tally()
            worker_round(client, url, a, b, make_invoice(MELT_AMOUNT), tally)  # warm-up
            tally.times = {k: [] for k in KINDS}  # its money counts, its times do not
            for _ in range(20):
                client.balance("bb-empty")
            trips, hops = hop_times(client, calls)
            for _ in range(rounds):
                worker_round(client, url, a, b, make_invoice(MELT_AMOUNT), tally)
            spendable = client.balance(a)["spendable"] + client.balance(b)["spendable"]
    finally:
        worker.stop()
    expected = tally.minted - tally.fees - tally.melted - tally.routing
    round_s = [sum(parts) for parts in zip(*(tally.times[k] for k in KINDS), strict=True)]
    return {
        "trip_p50_ms": _ms(trips, 0.5),
        "trip_p95_ms": _ms(trips, 0.95),
        "hops_ms": {hop: _ms(spans, 0.5) for hop, spans in hops.items() if spans},
        "round_ms": 1000 * statistics.median(round_s),
        "per_op_ms": {k: 1000 * statistics.median(tally.times[k]) for k in KINDS},
        "spendable": spendable,
        "spendable_floor": expected,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--pools", default="prefork,threads,solo")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import redis

    pools = args.pools.split(",")
    ensure_vhost()
    migrate_fresh(DATABASE_URL)
    redis.Redis.from_url(REDIS_URL).flushdb()
    mint = start_mint(input_fee_ppk=INPUT_FEE_PPK)
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        for n in range(args.passes):
            configs = [(b, p) for b in BROKERS for p in pools]
            for broker, pool in configs if n % 2 == 0 else reversed(configs):
                print(f"pass {n + 1}: {broker} / {pool}", file=sys.stderr, flush=True)
                runs.setdefault(f"{broker}/{pool}", []).append(
                    measure(broker, pool, mint.url, args.calls, args.rounds)
                )
    finally:
        mint.stop()
    print(f"{'broker/pool':<18} {'trip p50':>9} {'trip p95':>9} {'round':>8}  per op (ms)")
    summary = {}
    for name, results in runs.items():
        row = {
            key: statistics.median(r[key] for r in results)
            for key in ("trip_p50_ms", "trip_p95_ms", "round_ms")
        }
        row["per_op_ms"] = {k: statistics.median(r["per_op_ms"][k] for r in results) for k in KINDS}
        row["money_ok"] = all(r["spendable"] == r["spendable_floor"] for r in results)
        summary[name] = row
        ops = " ".join(f"{k} {row['per_op_ms'][k]:.1f}" for k in KINDS)
        print(
            f"{name:<18} {row['trip_p50_ms']:>9.2f} {row['trip_p95_ms']:>9.2f} "
            f"{row['round_ms']:>8.1f}  {ops}  money {'ok' if row['money_ok'] else 'WRONG'}"
        )
    print(f"\none round trip by hop, ms (medians; {', '.join(HOPS)})")
    print(f"{'broker/pool':<18}" + "".join(f"{hop:>12}" for hop in HOPS) + f"{'sum':>9}")
    for name, results in runs.items():
        hops = {h: statistics.median(r["hops_ms"].get(h, 0.0) for r in results) for h in HOPS}
        summary[name]["hops_ms"] = hops
        print(
            f"{name:<18}"
            + "".join(f"{hops[h]:>12.2f}" for h in HOPS)
            + f"{sum(hops.values()):>9.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))
    return 0 if all(row["money_ok"] for row in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
