"""The wallet workload six ways: cashu-worker's tasks (one-call and 2-step), a minimal client
(the floor), Nutshell's wallet, and two TypeScript wallets: coco and cashu-ts.

Run by hand (minutes; not part of the test suite, tests/test_bench_smoke.py runs 2 rounds):

    .venv/bin/python bench/workload.py --rounds 20 --repeat 3 [--concurrency 1,4,8]
        [--proofs 10000,100000,1000000] [--peers coco,cashu-ts] [--workers 1,2] [--json out.json]

Everything is its own and stopped at the end: one fresh Nutshell FakeWallet mint
(input_fee_ppk=100), the Postgres database `cashu_worker_bench` (created if missing, schema
dropped and migrated), Redis db 12 (flushed), one `celery -A tasks worker -Q cashu,cashu.beat
-c <max clients> --pool prefork` (`--pool threads|solo` for another) and one `celery -A tasks beat`;
with `--workers 1,2` the throughput runs again with a second worker instance beside the first.

A round: wallet A mints 100 sat, sends 7 sat as a token, wallet B receives the token, A melts
a 5 sat invoice. Each way, per repetition, a fresh pair of wallets runs `--rounds` rounds; an
untimed warm-up comes first. What one operation is, each way:

    way       mint                      send                    receive          melt
    worker    mint.prepare + execute    send.prepare + execute  receive.redeem   melt.prepare +
                                                                                 melt.execute
    floor     quote, mint               swap (none if exact)    swap             quote, melt
    nutshell  request_mint, poll, mint  select_to_send          helpers.receive  melt_quote,
                                                                                 select, melt
    coco      createMintQuote,          prepareSend +           wallet.receive   createMeltQuote,
              redeemMintQuote           executePreparedSend                      payMeltQuote
    cashu-ts  createMintQuoteBolt11,    wallet.send             wallet.receive   quote, select,
              mintProofsBolt11                                                   meltProofsBolt11

The worker's times are what its client sees (cashu_client.CashuClient, waiting on each
result). The floor is MintClient + random outputs + unblind with its proofs in memory: only
the HTTP calls a wallet cannot do without. Nutshell runs once per repetition, in .venv-mint,
as bench/nutshell_workload.py (one process, all its rounds, its own timing). The TypeScript
peers (`--peers`) are Node scripts in bench/peers/ (npm ci there on first use, exact
versions in its package-lock.json): each is one process for the whole run, timing itself,
told by this script when to run its next round, so they take turns round by round with the
floor and the worker ways (bench/peers/common.mjs has the protocol).

Figures (bench/README.md explains them): ms per operation (median over repetitions of each
repetition's mean) and the ratios worker/floor and worker/Nutshell; throughput with 1, 4, 8
concurrent clients (processes, each its own pair of wallets) on each number of worker
instances, with the CPU the mint and the workers used; prepare latency of send and
melt with N unspent proofs in one wallet (fake proofs inserted straight into the database;
each prepare is cancelled right after); the worker's peak memory; input fees paid over one
workload, each way, and each way's balances checked against them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO, REPO / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from db_harness import TEST_MNEMONIC, migrate_fresh  # noqa: E402
from mint_harness import MINT_ROOT_DIR, RunningMint, make_invoice, start_mint  # noqa: E402

from cashu_client import CashuClient, OperationInProgressError  # noqa: E402
from nuts.amounts import change_blank_count, input_fee, select_proofs, split_amount  # noqa: E402
from nuts.client import MintClient  # noqa: E402
from nuts.errors import QuoteNotPaidError  # noqa: E402
from nuts.keysets import Keyset, fetch_keysets  # noqa: E402
from nuts.models import MeltQuoteState, Proof  # noqa: E402
from nuts.outputs import random_outputs, unblind_outputs  # noqa: E402
from nuts.tokens import Token, decode_token, encode_token_v4, expand_keyset_ids  # noqa: E402

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/cashu_worker_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
MINT_PYTHON = REPO / ".venv-mint" / "bin" / "python"
NUTSHELL_SCRIPT = Path(__file__).resolve().parent / "nutshell_workload.py"
CELERY_BIN = REPO / ".venv" / "bin" / "celery"
PEERS_DIR = Path(__file__).resolve().parent / "peers"
PEER_SCRIPTS = {
    "coco": PEERS_DIR / "coco_workload.mjs",
    "cashu-ts": PEERS_DIR / "cashu_ts_workload.mjs",
}

KINDS = ("mint", "send", "receive", "melt")
BASE_WAYS = ("worker", "worker 2-step", "floor", "nutshell")
PEER_WAYS = tuple(PEER_SCRIPTS)
WAYS = (*BASE_WAYS, *PEER_WAYS)
MINT_AMOUNT, SEND_AMOUNT, MELT_AMOUNT = 100, 7, 5
INPUT_FEE_PPK = 100
CALL_TIMEOUT = 120.0

# The targets.
TARGET_PER_OP_VS_FLOOR = 1.3  # worker ms per op <= 1.3 x floor
TARGET_SPEEDUP_VS_NUTSHELL = 2.0  # whole workload >= 2 x faster than Nutshell
TARGET_PREPARE_GROWTH = 2.0  # prepare latency at the most proofs <= 2 x at the fewest


# --- one round, each way ---------------------------------------------------------------------


@dataclass
class Tally:
    """What one wallet pair did over some rounds."""

    times: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    fees: int = 0  # input fees: ceil(sum ppk / 1000) per swap or melt request
    fee_requests: int = 0  # requests that took inputs (swaps, melts)
    minted: int = 0
    melted: int = 0
    routing: int = 0  # Lightning fee the mint kept (FakeWallet: 1 sat per payment)
    elapsed: float = 0.0
    lock_waits: int = 0  # worker calls refused: the beat's poller held the operation

    def as_dict(self) -> dict[str, Any]:
        return {
            "times": self.times,
            "fees": self.fees,
            "fee_requests": self.fee_requests,
            "minted": self.minted,
            "melted": self.melted,
            "routing": self.routing,
            "elapsed": self.elapsed,
            "lock_waits": self.lock_waits,
        }


class CountingClient(CashuClient):
    """CashuClient that counts the tasks it sent."""

    tasks = 0

    def call(self, name: str, /, *, timeout: float | None = None, **kwargs: Any) -> Any:
        self.tasks += 1
        return super().call(name, timeout=timeout, **kwargs)


def _drive(
    client: CashuClient,
    op_id: str,
    step: Callable[[str], dict],
    refresh: Callable[[str], dict],
    final: str,
    t: Tally,
) -> dict:
    """`step` (an execute), then `refresh` until the operation is `final` (a mint quote paid
    a moment late). The beat's pollers may hold the operation's lock at that moment (they
    look at pending operations too): the call is refused with OperationInProgressError, and
    the client looks the operation up again a moment later, as any client would."""
    deadline = time.monotonic() + 30
    call = step
    while True:
        try:
            op = call(op_id)
        except OperationInProgressError:
            t.lock_waits += 1
            time.sleep(0.01)
            op = client.ops_get(op_id)
        if op["state"] == final:
            return op
        if op["state"] not in ("prepared", "pending", "executing"):
            raise RuntimeError(f"{op['kind']} operation ended {op['state']}: {op.get('error')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{op['kind']} operation still {op['state']} after 30 s")
        call = step if op["state"] == "prepared" else refresh
        if call is refresh:
            time.sleep(0.01)


def worker_round(
    client: CashuClient,
    url: str,
    a: str,
    b: str,
    invoice: str,
    t: Tally,
    two_step: bool = False,
) -> None:
    """One round through cashu-worker's tasks, each call waiting for its result: the
    one-call tasks (send.token, receive.redeem, melt.pay), or with `two_step` prepare then
    execute for send and melt (a caller that looks at the fees in between)."""
    t0 = time.perf_counter()
    op = client.mint_prepare(a, url, MINT_AMOUNT)
    _drive(client, op["id"], client.mint_execute, client.mint_refresh, "finalized", t)
    t1 = time.perf_counter()
    if two_step:
        prepared = client.send_prepare(a, url, SEND_AMOUNT)
        sent = _drive(
            client, prepared["id"], client.send_execute, client.send_refresh, "pending", t
        )
    else:
        prepared = sent = client.send_token(a, url, SEND_AMOUNT)
    token = sent["token"]
    t2 = time.perf_counter()
    received = client.receive_redeem(b, token)
    t3 = time.perf_counter()
    if two_step:
        melt = client.melt_prepare(a, url, invoice)
        melt = _drive(client, melt["id"], client.melt_execute, client.melt_refresh, "finalized", t)
    else:
        melt = client.melt_pay(a, url, invoice)
        if melt["state"] != "finalized":  # pending: the payment is still on its way
            melt = _drive(
                client, melt["id"], client.melt_refresh, client.melt_refresh, "finalized", t
            )
    t4 = time.perf_counter()
    if received["state"] != "finalized":
        raise RuntimeError(f"receive ended {received['state']}: {received.get('error')}")
    for kind, start, end in zip(KINDS, (t0, t1, t2, t3), (t1, t2, t3, t4), strict=True):
        t.times[kind].append(end - start)
    melt_fees = melt["swap_fee"] + melt["input_fee"]
    t.fees += prepared["fee"] + received["fee"] + melt_fees
    t.fee_requests += int(prepared["needs_swap"]) + 1 + 1 + int(melt["needs_swap"])
    t.minted += MINT_AMOUNT
    t.melted += melt["amount"]
    t.routing += melt["effective_fee"] - melt_fees


class FloorWallet:
    """The floor: proofs in memory, only the HTTP calls a wallet cannot do without."""

    def __init__(self, client: MintClient, keysets: dict[str, Keyset]) -> None:
        self.client = client
        self.keysets = keysets
        self.keyset = next(k for k in keysets.values() if k.active and k.unit == "sat")
        self.fee_ppk = {k.id: k.input_fee_ppk for k in keysets.values()}
        self.proofs: list[Proof] = []

    def _outputs(self, amounts: list[int]):
        return random_outputs(self.keyset.id, amounts)

    def _take(self, chosen: list[Proof]) -> None:
        ids = {id(p) for p in chosen}
        self.proofs = [p for p in self.proofs if id(p) not in ids]

    def mint(self, amount: int) -> None:
        quote = self.client.create_mint_quote(amount, "sat")
        outputs = self._outputs(split_amount(amount))
        blinded = [o.blinded_message for o in outputs]
        deadline = time.monotonic() + 30
        while True:
            try:
                signatures = self.client.mint(quote.quote, blinded)
                break
            except QuoteNotPaidError:  # FAKEWALLET_BRR pays a moment later
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.proofs += unblind_outputs(outputs, signatures, self.keysets)

    def send(self, amount: int, t: Tally) -> str:
        exact = select_proofs(self.proofs, amount, self.fee_ppk, include_fees=False)
        if sum(p.amount for p in exact) == amount:
            sent = exact
            self._take(exact)
        else:
            inputs = select_proofs(self.proofs, amount, self.fee_ppk)
            fee = input_fee(inputs, self.fee_ppk)
            keep = sum(p.amount for p in inputs) - amount - fee
            send_amounts = split_amount(amount)
            outputs = self._outputs(send_amounts + split_amount(keep))
            signatures = self.client.swap(inputs, [o.blinded_message for o in outputs])
            self._take(inputs)
            new = unblind_outputs(outputs, signatures, self.keysets)
            sent, kept = new[: len(send_amounts)], new[len(send_amounts) :]
            self.proofs += kept
            t.fees += fee
            t.fee_requests += 1
        return encode_token_v4(Token(mint=self.client.url, unit="sat", proofs=sent))

    def receive(self, text: str, t: Tally) -> None:
        token = expand_keyset_ids(decode_token(text), self.keysets)
        fee = input_fee(token.proofs, self.fee_ppk)
        outputs = self._outputs(split_amount(token.amount - fee))
        signatures = self.client.swap(token.proofs, [o.blinded_message for o in outputs])
        self.proofs += unblind_outputs(outputs, signatures, self.keysets)
        t.fees += fee
        t.fee_requests += 1

    def melt(self, invoice: str, t: Tally) -> None:
        quote = self.client.create_melt_quote(invoice, "sat")
        inputs = select_proofs(self.proofs, quote.amount + quote.fee_reserve, self.fee_ppk)
        fee = input_fee(inputs, self.fee_ppk)
        paid_in = sum(p.amount for p in inputs)
        blanks = self._outputs([1] * change_blank_count(paid_in - fee - quote.amount))
        result = self.client.melt(quote.quote, inputs, [b.blinded_message for b in blanks])
        if result.state != MeltQuoteState.PAID:
            raise RuntimeError(f"floor melt {result.state}")
        self._take(inputs)
        change = unblind_outputs(blanks, result.change or [], self.keysets)
        self.proofs += change
        t.fees += fee
        t.fee_requests += 1
        t.melted += quote.amount
        t.routing += paid_in - fee - quote.amount - sum(p.amount for p in change)

    @property
    def balance(self) -> int:
        return sum(p.amount for p in self.proofs)


def floor_steps(
    a: FloorWallet, b: FloorWallet, invoice: str, t: Tally
) -> dict[str, Callable[[], object]]:
    """A floor round's four operations, in order (bench/profile_round.py meters them too)."""
    token: list[str] = []
    return {
        "mint": lambda: a.mint(MINT_AMOUNT),
        "send": lambda: token.append(a.send(SEND_AMOUNT, t)),
        "receive": lambda: b.receive(token[-1], t),
        "melt": lambda: a.melt(invoice, t),
    }


def floor_round(a: FloorWallet, b: FloorWallet, invoice: str, t: Tally) -> None:
    for kind, step in floor_steps(a, b, invoice, t).items():
        start = time.perf_counter()
        step()
        t.times[kind].append(time.perf_counter() - start)
    t.minted += MINT_AMOUNT


# --- concurrent clients (processes) ----------------------------------------------------------


def _client_main(spec: dict, ready: Any, go: Any, results: Any) -> None:
    """One concurrent client: its own CashuClient and wallet pair; a warm-up round, then
    `rounds` rounds once every client is ready."""
    try:
        client = CountingClient(spec["redis_url"], timeout=CALL_TIMEOUT)
        a, b = f"{spec['tag']}-A", f"{spec['tag']}-B"
        invoices = [make_invoice(MELT_AMOUNT) for _ in range(spec["rounds"] + 1)]
        worker_round(client, spec["mint_url"], a, b, invoices.pop(), Tally())
        ready.put(("ready", spec["tag"], None))
        if not go.wait(300):
            raise RuntimeError("never told to start")
        tally = Tally()
        tasks_before = client.tasks
        start = time.monotonic()
        for invoice in invoices:
            worker_round(client, spec["mint_url"], a, b, invoice, tally)
        end = time.monotonic()
        tally.elapsed = end - start
        results.put(
            {
                "tag": spec["tag"],
                "start": start,
                "end": end,
                "tasks": client.tasks - tasks_before,
                "tally": tally.as_dict(),
            }
        )
        client.close()
    except BaseException:
        ready.put(("error", spec["tag"], traceback.format_exc()))
        results.put({"tag": spec["tag"], "error": traceback.format_exc()})


def run_clients(clients: int, rounds: int, mint_url: str, redis_url: str, tag: str) -> dict:
    """`clients` processes doing `rounds` rounds each at once; rounds/s over the wall time."""
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = []
    for i in range(clients):
        spec = {"redis_url": redis_url, "mint_url": mint_url, "rounds": rounds, "tag": f"{tag}-{i}"}
        proc = ctx.Process(target=_client_main, args=(spec, ready, go, results), daemon=True)
        proc.start()
        procs.append(proc)
    try:
        for _ in range(clients):
            status, who, detail = ready.get(timeout=300)
            if status != "ready":
                raise RuntimeError(f"client {who} failed before starting:\n{detail}")
        go.set()
        outcomes = [results.get(timeout=CALL_TIMEOUT * 7 * (rounds + 1)) for _ in range(clients)]
    finally:
        go.set()
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    failed = [o for o in outcomes if "error" in o]
    if failed:
        raise RuntimeError(f"client {failed[0]['tag']} failed:\n{failed[0]['error']}")
    wall = max(o["end"] for o in outcomes) - min(o["start"] for o in outcomes)
    total_rounds = clients * rounds
    round_times = [
        sum(parts)
        for o in outcomes
        for parts in zip(*(o["tally"]["times"][k] for k in KINDS), strict=True)
    ]
    return {
        "clients": clients,
        "rounds": total_rounds,
        "wall_s": wall,
        "rounds_per_s": total_rounds / wall,
        "ops_per_s": len(KINDS) * total_rounds / wall,
        "tasks_per_s": sum(o["tasks"] for o in outcomes) / wall,
        "round_ms": 1000 * statistics.mean(round_times),
        "lock_waits": sum(o["tally"]["lock_waits"] for o in outcomes),
    }


# --- infrastructure --------------------------------------------------------------------------


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB (empty if it is gone)."""
    values = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


@dataclass(frozen=True)
class ProcessTable:
    """One pass over /proc: each process's command, parent and CPU ticks so far."""

    command: dict[int, str]
    parent: dict[int, int]
    ticks: dict[int, int]

    @classmethod
    def read(cls) -> ProcessTable:
        command, parent, ticks = {}, {}, {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                name, fields = _stat(entry / "stat")
                pid = int(entry.name)
                command[pid], parent[pid] = name, int(fields[1])
                ticks[pid] = _ticks(fields)
        return cls(command, parent, ticks)

    def tree(self, root: int) -> list[int]:
        """`root` and all its descendants."""
        children: dict[int, list[int]] = {}
        for pid, ppid in self.parent.items():
            children.setdefault(ppid, []).append(pid)
        found, todo = [], [root]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def named(self, command: str) -> list[int]:
        """Every process running `command` (postgres: the server and all its backends)."""
        return [pid for pid, name in self.command.items() if name == command]


def _stat(path: Path) -> tuple[str, list[str]]:
    """A /proc stat file: the command, and the fields after it (state first)."""
    head, _, rest = path.read_text().rpartition(")")
    return head.partition("(")[2], rest.split()


def _ticks(fields: list[str]) -> int:
    return int(fields[11]) + int(fields[12])  # utime, stime


def main_thread_ticks() -> int:
    """The CPU ticks this script's main thread has used so far."""
    tid = threading.main_thread().native_id or os.getpid()
    return _ticks(_stat(Path(f"/proc/self/task/{tid}/stat"))[1])


class CpuPerRound:
    """The CPU each part of the system spends on each way's rounds, taken by turns.

    On a machine of two cores the round is a chain of waits on one process after another,
    so nearly every millisecond of CPU anywhere is a millisecond of the round; and CPU is
    steadier than wall time when the machine drifts. The mint's share is the yardstick: it
    is the same work whoever asks. The client is this script's main thread (the floor, and
    the worker's caller), not its memory sampler."""

    def __init__(self, parts: dict[str, Callable[[ProcessTable], list[int]]]) -> None:
        self.parts = parts  # part -> its processes in a reading of /proc
        self.ms: dict[str, Counter[str]] = {}
        self.rounds: Counter[str] = Counter()

    def _ticks_by_part(self) -> dict[str, int]:
        table = ProcessTable.read()
        return {
            part: sum(table.ticks.get(pid, 0) for pid in pids(table))
            for part, pids in self.parts.items()
        }

    @contextlib.contextmanager
    def round_of(self, way: str) -> Iterator[None]:
        # The client's ticks are read nearest the round, so that reading /proc is not its.
        before = self._ticks_by_part()
        before["client"] = main_thread_ticks()
        yield
        after = {"client": main_thread_ticks()} | self._ticks_by_part()
        per_tick = 1000 / os.sysconf("SC_CLK_TCK")
        self.ms.setdefault(way, Counter()).update(
            {part: (after[part] - before[part]) * per_tick for part in after}
        )
        self.rounds[way] += 1

    def report(self) -> dict[str, dict[str, float]]:
        """Per way, ms of CPU per round for each part."""
        return {
            way: {part: ms[part] / self.rounds[way] for part in ms} for way, ms in self.ms.items()
        }


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, now."""
    return ProcessTable.read().tree(root)


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) the process tree of `root` has used so far, in seconds."""
    table = ProcessTable.read()
    return sum(table.ticks.get(pid, 0) for pid in table.tree(root)) / os.sysconf("SC_CLK_TCK")


class MemorySampler:
    """Sum of VmRSS over a process tree, sampled every `every` seconds; keeps the peak."""

    def __init__(self, root: int, every: float = 0.25) -> None:
        self.root, self.every = root, every
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = sum(_proc_status(pid).get("VmRSS", 0) for pid in process_tree(self.root))
            self.peak_kb = max(self.peak_kb, total)
            self._stop.wait(self.every)

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def report(self) -> dict[str, Any]:
        """Peaks so far: the sampled RSS sum, and per process VmHWM (summed, and the largest)."""
        hwm = [_proc_status(pid).get("VmHWM", 0) for pid in process_tree(self.root)]
        return {
            "processes": len(hwm),
            "peak_rss_sum_mb": self.peak_kb / 1024,
            "hwm_sum_mb": sum(hwm) / 1024,
            "hwm_max_mb": max(hwm, default=0) / 1024,
        }


def start_beat(database_url: str, redis_url: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "WALLET_MNEMONIC": TEST_MNEMONIC,
        "CASHU_ENV": "development",
    }
    env.pop("WALLET_MNEMONIC_FILE", None)
    log = open(MINT_ROOT_DIR / f"bench-beat-{os.getpid()}.log", "ab")  # noqa: SIM115
    try:
        return subprocess.Popen(
            [str(CELERY_BIN), "-A", "tasks", "beat", "-l", "WARNING"]
            + ["-s", str(workdir / "celerybeat-schedule")],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def stop_group(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def run_nutshell(mint_url: str, rounds: int, repeat: int) -> dict:
    """bench/nutshell_workload.py in .venv-mint: one process, all repetitions."""
    request = {
        "mint_url": mint_url,
        "rounds": rounds,
        "repeat": repeat,
        "warmup_invoice": make_invoice(MELT_AMOUNT),
        "invoices": [[make_invoice(MELT_AMOUNT) for _ in range(rounds)] for _ in range(repeat)],
    }
    with tempfile.TemporaryDirectory(prefix="bench-nutshell-") as tmp:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": tmp,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
            "CASHU_DIR": str(Path(tmp) / ".cashu"),
            "MINT_URL": mint_url,
            "TOR": "FALSE",
            "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        }
        proc = subprocess.run(
            [str(MINT_PYTHON), str(NUTSHELL_SCRIPT)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            cwd=tmp,
            env=env,
            timeout=120 + 30 * rounds * (repeat + 1),
        )
    return _result_of(proc, "Nutshell")


def _result_of(proc: subprocess.CompletedProcess[str], who: str) -> dict:
    """The result a workload script printed as its last line of JSON, or why it failed."""
    try:
        reply = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        reply = {"ok": False, "error": f"no reply (exit {proc.returncode})"}
    if not reply.get("ok"):
        tail = "\n".join(proc.stderr.splitlines()[-30:])
        raise RuntimeError(f"{who} workload failed: {reply.get('error')}\n{tail}")
    return reply["result"]


# --- the TypeScript peers (bench/peers/) -----------------------------------------------------


def _npm_packages_match() -> bool:
    """Whether bench/peers/node_modules holds every package of package-lock.json at its
    locked version (the lock's own copy in node_modules is not trusted: a package may have
    been changed or removed by hand)."""
    try:
        lock = json.loads((PEERS_DIR / "package-lock.json").read_text())
    except (OSError, ValueError):
        return False
    for path, meta in lock.get("packages", {}).items():
        if not path:
            continue
        try:
            installed = json.loads((PEERS_DIR / path / "package.json").read_text())
        except (OSError, ValueError):
            if meta.get("optional"):
                continue  # another platform's optional package
            return False
        if installed.get("version") != meta.get("version"):
            return False
    return True


def install_peers(log: Callable[[str], None] = lambda message: None) -> None:
    """`npm ci` in bench/peers when node_modules is missing or does not match the lock."""
    if _npm_packages_match():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("the TypeScript peers need node and npm on PATH (or --peers '')")
    log("installing the TypeScript peers: npm ci in bench/peers")
    proc = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PEERS_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0 or not _npm_packages_match():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"npm ci in {PEERS_DIR} failed (exit {proc.returncode}):\n{tail}")


def _peer_request(mint_url: str, rounds: int, repeat: int, stepped: bool) -> dict:
    """What a peer script reads first: nutshell_workload.py's request, plus `stepped`."""
    return {
        "mint_url": mint_url,
        "rounds": rounds,
        "repeat": repeat,
        "warmup_invoice": make_invoice(MELT_AMOUNT),
        "invoices": [[make_invoice(MELT_AMOUNT) for _ in range(rounds)] for _ in range(repeat)],
        "stepped": stepped,
    }


def _peer_command(way: str) -> tuple[list[str], dict[str, str]]:
    node = shutil.which("node") or "node"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
        "NO_PROXY": "127.0.0.1,localhost",
        "NODE_NO_WARNINGS": "1",
    }
    return [node, str(PEER_SCRIPTS[way])], env


def run_peer(way: str, mint_url: str, rounds: int, repeat: int) -> dict:
    """A TypeScript peer's script (`way`: coco or cashu-ts) all at once, as run_nutshell runs
    Nutshell: one process, all repetitions, its own timing; the same result shape."""
    install_peers()
    command, env = _peer_command(way)
    proc = subprocess.run(
        command,
        input=json.dumps(_peer_request(mint_url, rounds, repeat, stepped=False)) + "\n",
        capture_output=True,
        text=True,
        cwd=PEERS_DIR,
        env=env,
        timeout=120 + 30 * rounds * (repeat + 1),
    )
    return _result_of(proc, way)


class PeerProcess:
    """A TypeScript peer's script started once, driven round by round: after its untimed
    warm-up, `round()` has it run its next timed round (and returns that round's ms per
    operation); `finish()` returns what run_peer returns. Close it in any case."""

    def __init__(self, way: str, mint_url: str, rounds: int, repeat: int) -> None:
        self.way = way
        self.rounds_left = rounds * repeat
        command, env = _peer_command(way)
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            cwd=PEERS_DIR,
            env=env,
            start_new_session=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self._send(json.dumps(_peer_request(mint_url, rounds, repeat, stepped=True)))

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise self._failed("it exited") from None

    def _failed(self, what: str) -> RuntimeError:
        self._stderr.seek(0)
        tail = "\n".join(self._stderr.read().splitlines()[-30:])
        return RuntimeError(f"{self.way} workload failed: {what}\n{tail}")

    def _read(self, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise self._failed(f"no answer within {timeout:.0f} s") from None
        if line is None:
            raise self._failed(f"it exited ({self.proc.wait(timeout=10)}) without a reply")
        message = json.loads(line)
        if message.get("ok") is False:
            raise self._failed(str(message.get("error")))
        return message

    def wait_ready(self, timeout: float = 120) -> None:
        """Until the warm-up round is done."""
        if not self._read(timeout).get("ready"):
            raise self._failed("no ready after the warm-up")

    def round(self) -> dict[str, float]:
        if self.rounds_left <= 0:
            raise RuntimeError(f"{self.way}: every round has run")
        self._send("round")
        message = self._read(CALL_TIMEOUT * 4)
        if "round" not in message:
            raise self._failed(f"unexpected answer {message}")
        self.rounds_left -= 1
        return message["ms"]

    def finish(self) -> dict:
        message = self._read(CALL_TIMEOUT)
        if not message.get("ok"):
            raise self._failed(f"unexpected answer {message}")
        self.proc.wait(timeout=30)
        return message["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        self._stderr.close()


# --- prepare latency with many proofs --------------------------------------------------------

INSERT_PROOFS = """
INSERT INTO proofs (wallet, mint_url, unit, keyset_id, amount, secret, "C", y, state)
SELECT :wallet, :mint_url, :unit, :keyset_id, (1::bigint << (g % 12)),
       :tag || '-' || g,
       '02' || md5(:tag || 'c' || g) || md5(:tag || 'C' || g),
       '02' || md5(:tag || 'y' || g) || md5(:tag || 'Y' || g),
       'unspent'
FROM generate_series(1, :n) AS g
"""


def insert_fake_proofs(
    database_url: str, wallet: str, mint_url: str, keyset_id: str, n: int
) -> float:
    """N unspent fake proofs (amounts 2^(g % 12), unique secrets and Ys) in one statement,
    then VACUUM ANALYZE (a wallet that has held them a while). Returns the seconds it took."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn.execute(
                text(INSERT_PROOFS),
                {
                    "wallet": wallet,
                    "mint_url": mint_url,
                    "unit": "sat",
                    "keyset_id": keyset_id,
                    "tag": f"bench-{uuid.uuid4().hex[:8]}",
                    "n": n,
                },
            )
            conn.execute(text("VACUUM ANALYZE proofs"))
    finally:
        engine.dispose()
    return time.perf_counter() - started


def prepare_latency(
    client: CashuClient,
    database_url: str,
    mint_url: str,
    keyset_id: str,
    n: int,
    prepares: int,
    tag: str,
) -> dict[str, Any]:
    """Median client-visible latency of send.prepare (7 sat) and melt.prepare (5 sat invoice)
    for a wallet of N unspent proofs; each prepare is rolled back / cancelled right after."""
    wallet = f"{tag}-big-{n}"
    insert_s = insert_fake_proofs(database_url, wallet, mint_url, keyset_id, n)
    invoices = [make_invoice(MELT_AMOUNT) for _ in range(prepares + 2)]

    def send_once() -> float:
        t0 = time.perf_counter()
        op = client.send_prepare(wallet, mint_url, SEND_AMOUNT)
        elapsed = time.perf_counter() - t0
        client.send_rollback(op["id"])
        return elapsed

    def melt_once() -> float:
        invoice = invoices.pop()
        t0 = time.perf_counter()
        op = client.melt_prepare(wallet, mint_url, invoice)
        elapsed = time.perf_counter() - t0
        client.melt_cancel(op["id"])
        return elapsed

    for _ in range(2):  # warm-up: a cold index, a worker child's first look at the wallet
        send_once()
        melt_once()
    send = [send_once() for _ in range(prepares)]
    melt = [melt_once() for _ in range(prepares)]
    return {
        "proofs": n,
        "insert_s": insert_s,
        "send_ms": 1000 * statistics.median(send),
        "melt_ms": 1000 * statistics.median(melt),
        "send_p90_ms": 1000 * _quantile(send, 0.9),
        "melt_p90_ms": 1000 * _quantile(melt, 0.9),
    }


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the benchmark ---------------------------------------------------------------------------


def _median_ms(reps: list[dict], kind: str) -> float:
    return 1000 * statistics.median(statistics.mean(r["times"][kind]) for r in reps)


def _per_op(reps: list[dict]) -> dict[str, float]:
    figures = {kind: _median_ms(reps, kind) for kind in KINDS}
    rounds = [sum(statistics.mean(r["times"][k]) for k in KINDS) for r in reps]
    figures["round"] = 1000 * statistics.median(rounds)
    return figures


def _fees(reps: list[dict]) -> dict[str, Any]:
    """Fees over the repetitions, and the money check: in every repetition the two wallets
    hold what they should, minted - melted - routing - the fees counted per request."""
    first = reps[0]
    return {
        "fees": statistics.median(r["fees"] for r in reps),
        "fees_by_balance": statistics.median(r["fees_by_balance"] for r in reps),
        "fee_requests": statistics.median(r["fee_requests"] for r in reps),
        "routing": first["routing"],
        "per_rep": [r["fees"] for r in reps],
        "minted": first["minted"],
        "melted": first["melted"],
        "balance": first["balance"],
        "expected_balance": first["minted"] - first["melted"] - first["routing"] - first["fees"],
        "balance_ok": all(r["fees"] == r["fees_by_balance"] for r in reps),
        "balance_off": [r["fees_by_balance"] - r["fees"] for r in reps],
    }


def wait_for_watcher(client: CashuClient, wallets: list[str], timeout: float) -> dict[str, int]:
    """Sends stay pending until the beat's check_sends finds their tokens claimed."""
    deadline = time.monotonic() + timeout
    pending = wallets
    while pending and time.monotonic() < deadline:
        pending = [w for w in pending if client.balance(w)["pending"]]
        if pending:
            time.sleep(1)
    return {"wallets": len(wallets), "still_pending": len(pending)}


def run_benchmark(
    *,
    rounds: int = 20,
    repeat: int = 3,
    concurrency: list[int] | None = None,
    proofs: list[int] | None = None,
    prepares: int = 20,
    database_url: str = DEFAULT_DATABASE_URL,
    redis_url: str = DEFAULT_REDIS_URL,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True),
    peers: list[str] | None = None,
    pool: str = "prefork",
    workers: list[int] | None = None,
) -> dict[str, Any]:
    """The whole benchmark; returns every figure (format_report prints them). `peers`: the
    TypeScript ways to run too (default all of PEER_WAYS; [] for none); `pool`: the worker's
    (`--pool`), with `-c` the most clients; `workers`: how many worker instances (each a
    `celery -A tasks worker` of its own, as on as many hosts) serve the throughput runs."""
    import redis
    from worker_harness import start_worker

    concurrency = concurrency or [1, 4, 8]
    workers = workers or [1]
    proofs = proofs if proofs is not None else [10_000, 100_000, 1_000_000]
    peers = list(PEER_WAYS) if peers is None else peers
    unknown = [p for p in peers if p not in PEER_WAYS]
    if unknown:
        raise ValueError(f"unknown peers {unknown}; known: {', '.join(PEER_WAYS)}")
    ways = [*BASE_WAYS, *peers]
    run_tag = f"bench-{uuid.uuid4().hex[:6]}"
    result: dict[str, Any] = {
        "settings": {
            "rounds": rounds,
            "repeat": repeat,
            "concurrency": concurrency,
            "proofs": proofs,
            "prepares": prepares,
            "peers": peers,
            "input_fee_ppk": INPUT_FEE_PPK,
            "worker_processes": max(concurrency),
            "pool": pool,
            "workers": workers,
            "cpus": os.cpu_count(),
            "load_at_start": os.getloadavg()[0],
        }
    }
    mint: RunningMint | None = None
    worker = None
    more_workers: list[Any] = []  # the throughput runs' second and later instances
    beat: subprocess.Popen[bytes] | None = None
    sampler: MemorySampler | None = None
    running_peers: dict[str, PeerProcess] = {}
    workdir = Path(
        tempfile.mkdtemp(prefix="bench-", dir=MINT_ROOT_DIR if MINT_ROOT_DIR.exists() else None)
    )
    try:
        if peers:
            install_peers(log)
        log("starting mint, database, Redis, worker and beat")
        mint = start_mint(input_fee_ppk=INPUT_FEE_PPK)
        migrate_fresh(database_url)
        redis.Redis.from_url(redis_url).flushdb()

        def new_worker() -> Any:
            return start_worker(
                database_url=database_url,
                redis_url=redis_url,
                mnemonic=TEST_MNEMONIC,
                concurrency=max(concurrency),
                pool=pool,
            )

        worker = new_worker()
        assert worker.proc is not None and mint.proc is not None
        sampler = MemorySampler(worker.proc.pid).start()
        beat = start_beat(database_url, redis_url, workdir)
        client = CountingClient(redis_url, timeout=CALL_TIMEOUT)
        view = client.mints_add(mint.url)
        url = view["url"]
        keyset_id = next(k["id"] for k in view["keysets"] if k["active"] and k["unit"] == "sat")

        # --- 1, 2: the workload, every way ---------------------------------------------------
        log("warming the worker up (every process: one round per client at once)")
        run_clients(max(concurrency), 1, url, redis_url, f"{run_tag}-warm")
        mint_client = MintClient(mint.url)
        keysets = fetch_keysets(mint_client)
        floor_warm = Tally()
        floor_round(
            FloorWallet(mint_client, keysets),
            FloorWallet(mint_client, keysets),
            make_invoice(5),
            floor_warm,
        )
        for way in peers:
            log(f"starting {way} (node, bench/peers) and its warm-up round")
            running_peers[way] = PeerProcess(way, mint.url, rounds, repeat)
        for peer in running_peers.values():
            peer.wait_ready()
        reps: dict[str, list[dict]] = {way: [] for way in ways}
        cpu = CpuPerRound(
            {
                "worker": lambda t: [*t.tree(worker.proc.pid), *t.tree(beat.pid)],
                "Postgres": lambda t: t.named("postgres"),
                "Redis": lambda t: t.named("redis-server"),
                "peer": lambda t: [
                    p for peer in running_peers.values() for p in t.tree(peer.proc.pid)
                ],
                "mint": lambda t: t.tree(mint.proc.pid),
            }
        )
        sent_from: list[str] = []
        tasks_per_round: dict[str, list[float]] = {"worker": [], "worker 2-step": []}
        for rep in range(repeat):
            # The ways take turns round by round (and Nutshell right after), so a machine
            # that speeds up or slows down mid-run weighs on every way alike.
            turns = ", ".join(["floor", "worker", "worker 2-step", *peers])
            log(f"repetition {rep + 1}/{repeat}: {turns} by turns")
            invoices = [make_invoice(MELT_AMOUNT) for _ in range(3 * rounds)]
            fa, fb = FloorWallet(mint_client, keysets), FloorWallet(mint_client, keysets)
            tallies = {way: Tally() for way in ("floor", "worker", "worker 2-step")}
            wallets = {
                way: (f"{run_tag}-r{rep}-{tag}-A", f"{run_tag}-r{rep}-{tag}-B")
                for way, tag in (("worker", "w1"), ("worker 2-step", "w2"))
            }
            tasks = dict.fromkeys(wallets, 0)
            for _ in range(rounds):
                with cpu.round_of("floor"):
                    floor_round(fa, fb, invoices.pop(), tallies["floor"])
                for way, (a, b) in wallets.items():
                    before = client.tasks
                    two_step = way != "worker"
                    with cpu.round_of(way):
                        worker_round(client, url, a, b, invoices.pop(), tallies[way], two_step)
                    tasks[way] += client.tasks - before
                for way, peer in running_peers.items():
                    with cpu.round_of(way):
                        peer.round()
            reps["floor"].append(tallies["floor"].as_dict() | {"balance": fa.balance + fb.balance})
            for way, (a, b) in wallets.items():
                balance = client.balance(a)["spendable"] + client.balance(b)["spendable"]
                reps[way].append(tallies[way].as_dict() | {"balance": balance})
                tasks_per_round[way].append(tasks[way] / rounds)
                sent_from.append(a)
            log(f"repetition {rep + 1}/{repeat}: Nutshell's wallet (one process in .venv-mint)")
            nutshell = run_nutshell(mint.url, rounds, 1)
            reps["nutshell"] += nutshell["reps"]
        result["peer_versions"] = {}
        for way, peer in running_peers.items():
            finished = peer.finish()
            reps[way] = finished.pop("reps")
            result["peer_versions"][way] = finished
        for way_reps in reps.values():
            for r in way_reps:
                r["fees_by_balance"] = r["minted"] - r["melted"] - r["routing"] - r["balance"]
        result["ways"] = ways
        result["cpu_ms_per_round"] = cpu.report()
        result["nutshell_version"] = nutshell["version"]
        result["per_op_ms"] = {way: _per_op(reps[way]) for way in ways}
        pairs = [(w, o) for w in ("worker", "worker 2-step") for o in ("floor", "nutshell", *peers)]
        pairs += [(way, "floor") for way in ("nutshell", *peers)]
        result["ratios"] = {
            f"{way}/{other}": {
                key: result["per_op_ms"][way][key] / result["per_op_ms"][other][key]
                for key in (*KINDS, "round")
            }
            for way, other in pairs
        }
        result["fees"] = {way: _fees(reps[way]) for way in ways}
        result["peer_requests_per_round"] = {
            way: {k: statistics.median(r["requests"][k] / rounds for r in reps[way]) for k in KINDS}
            for way in peers
        }
        result["worker_tasks_per_round"] = {
            way: statistics.median(counts) for way, counts in tasks_per_round.items()
        }
        result["worker_lock_waits"] = sum(
            r["lock_waits"] for way in ("worker", "worker 2-step") for r in reps[way]
        )
        result["raw"] = reps
        result["sends_finalized_by_watcher"] = wait_for_watcher(client, sent_from, timeout=30)

        # --- 3: throughput with concurrent clients, on one worker instance and more -------
        result["throughput"] = []
        for instances in workers:
            while 1 + len(more_workers) < instances:
                log(f"starting worker instance {2 + len(more_workers)}")
                more_workers.append(new_worker())
            worker_pids = [w.proc.pid for w in (worker, *more_workers[: instances - 1])]
            for clients in concurrency:
                runs = []
                for rep in range(repeat):
                    log(
                        f"throughput: {instances} worker(s), {clients} client(s), "
                        f"{rounds} rounds each, {rep + 1}/{repeat}"
                    )
                    mint_before = cpu_seconds(mint.proc.pid)
                    workers_before = sum(cpu_seconds(pid) for pid in worker_pids)
                    run = run_clients(
                        clients, rounds, url, redis_url, f"{run_tag}-w{instances}-c{clients}-{rep}"
                    )
                    mint_cpu = cpu_seconds(mint.proc.pid) - mint_before
                    worker_cpu = sum(cpu_seconds(pid) for pid in worker_pids) - workers_before
                    # cores busy over the run (about: the clients start and end within it)
                    run["mint_cores"] = mint_cpu / run["wall_s"]
                    run["worker_cores"] = worker_cpu / run["wall_s"]
                    runs.append(run)
                best = sorted(runs, key=lambda r: r["rounds_per_s"])[len(runs) // 2]  # median
                result["throughput"].append(
                    {
                        **best,
                        "workers": instances,
                        "runs_rounds_per_s": [r["rounds_per_s"] for r in runs],
                    }
                )

        # --- 4: prepare latency with many proofs, worker memory ------------------------------
        result["prepare"] = []
        for n in proofs:
            log(f"prepare latency with {n} unspent proofs in the wallet")
            result["prepare"].append(
                prepare_latency(client, database_url, url, keyset_id, n, prepares, run_tag)
            )
        result["worker_memory"] = sampler.report()
        result["targets"] = targets(result)
        client.close()
        mint_client.close()
        return result
    finally:
        for peer in running_peers.values():
            peer.close()
        if sampler is not None:
            sampler.stop()
        stop_group(beat)
        for extra in more_workers:
            extra.stop()
        if worker is not None:
            worker.stop()
        if mint is not None:
            mint.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with its figure and whether it is met."""
    out = []
    for kind in (*KINDS, "round"):
        value = result["ratios"]["worker/floor"][kind]
        out.append(
            {
                "name": f"{kind}: worker / floor <= {TARGET_PER_OP_VS_FLOOR}",
                "value": value,
                "ok": value <= TARGET_PER_OP_VS_FLOOR,
            }
        )
    speedup = result["per_op_ms"]["nutshell"]["round"] / result["per_op_ms"]["worker"]["round"]
    out.append(
        {
            "name": f"workload: Nutshell / worker >= {TARGET_SPEEDUP_VS_NUTSHELL}",
            "value": speedup,
            "ok": speedup >= TARGET_SPEEDUP_VS_NUTSHELL,
        }
    )
    prepare = sorted(result["prepare"], key=lambda p: p["proofs"])
    if len(prepare) >= 2:
        low, high = prepare[0], prepare[-1]
        for kind in ("send", "melt"):
            growth = high[f"{kind}_ms"] / low[f"{kind}_ms"]
            out.append(
                {
                    "name": f"{kind} prepare: {high['proofs']} / {low['proofs']} proofs "
                    f"<= {TARGET_PREPARE_GROWTH}",
                    "value": growth,
                    "ok": growth <= TARGET_PREPARE_GROWTH,
                }
            )
    fees = result["fees"]
    out.append(
        {
            "name": "input fees: worker <= Nutshell (sat)",
            "value": f"{fees['worker']['fees']} vs {fees['nutshell']['fees']}",
            "ok": fees["worker"]["fees"] <= fees["nutshell"]["fees"],
        }
    )
    return out


# --- the report ------------------------------------------------------------------------------


def _peer_versions(result: dict[str, Any]) -> str:
    parts = []
    for way, about in result.get("peer_versions", {}).items():
        inner = f" on cashu-ts {about['cashu_ts']}" if about.get("cashu_ts") else ""
        parts.append(f"{way} {about.get('version', '?')}{inner}")
    node = next((a["node"] for a in result.get("peer_versions", {}).values() if "node" in a), None)
    return ", ".join(parts) + (f" (Node {node})" if node else "")


def _cpu_lines(cpu: dict[str, dict[str, float]] | None) -> list[str]:
    """The CPU-per-round table: each way's parts, its total, and the total over the mint's
    own (the yardstick: the mint does the same work for every way)."""
    if not cpu:
        return []
    parts = ["client", "worker", "Postgres", "Redis", "peer", "mint"]
    lines = [
        "",
        "CPU per round, ms (by turns as above; worker: the worker and the beat; client: this",
        "script's caller, or the floor itself; peer: the Node process. The mint does the same",
        "work for every way, so total / mint compares them whatever the machine's speed)",
        f"{'':<14}" + "".join(f"{part:>10}" for part in parts) + f"{'total':>8}{'/mint':>7}",
    ]
    for way, ms in cpu.items():
        total = sum(ms.values())
        lines.append(
            f"{way:<14}"
            + "".join(f"{ms[part]:>10.1f}" for part in parts)
            + f"{total:>8.1f}{total / ms['mint'] if ms['mint'] else float('nan'):>7.2f}"
        )
    return lines


def format_report(result: dict[str, Any]) -> str:
    s = result["settings"]
    per_op, ratios = result["per_op_ms"], result["ratios"]
    ways = result.get("ways", BASE_WAYS)
    peers = [way for way in ways if way in PEER_WAYS]
    lines = [
        f"cashu-worker workload benchmark: {s['rounds']} rounds x {s['repeat']} repetitions, "
        f"mint input_fee_ppk={s['input_fee_ppk']}, worker -c {s['worker_processes']} "
        f"--pool {s.get('pool', 'prefork')} "
        f"+ beat, {s['cpus']} CPUs, load {s['load_at_start']:.1f} at start, "
        f"Nutshell wallet {result.get('nutshell_version', '?')}"
        + (f", {_peer_versions(result)}" if peers else ""),
        "",
        "ms per operation (median over repetitions of each repetition's mean); worker: the",
        "one-call tasks, worker 2-step: prepare then execute for send and melt",
        f"{'':<9}{'worker':>9}{'2-step':>9}{'floor':>9}{'nutshell':>10}{'w/floor':>9}"
        f"{'w/nutshell':>12}{'2-step/floor':>14}",
    ]
    for key in (*KINDS, "round"):
        lines.append(
            f"{key:<9}{per_op['worker'][key]:>9.1f}{per_op['worker 2-step'][key]:>9.1f}"
            f"{per_op['floor'][key]:>9.1f}{per_op['nutshell'][key]:>10.1f}"
            f"{ratios['worker/floor'][key]:>9.2f}{ratios['worker/nutshell'][key]:>12.2f}"
            f"{ratios['worker 2-step/floor'][key]:>14.2f}"
        )
    per_round = result["worker_tasks_per_round"]
    lines.append(
        f"(tasks per round: worker {per_round['worker']:.1f}, 2-step "
        f"{per_round['worker 2-step']:.1f}; calls refused because a beat poller held the "
        f"operation: {result['worker_lock_waits']})"
    )
    lines += [
        "",
        "every way: ms per operation (as above), and over the floor",
        "(by turns round by round: "
        + ", ".join(["floor", "worker", "worker 2-step", *peers])
        + "; Nutshell after each repetition)",
        f"{'':<14}{'mint':>8}{'send':>8}{'receive':>8}{'melt':>8}{'round':>8}   /floor:"
        f"{'mint':>6}{'send':>6}{'recv':>6}{'melt':>6}{'round':>6}",
    ]
    for way in ways:
        figures = "".join(f"{per_op[way][key]:>8.1f}" for key in (*KINDS, "round"))
        over = (
            "".join(f"{per_op[way][key] / per_op['floor'][key]:>6.2f}" for key in (*KINDS, "round"))
            if way != "floor"
            else ""
        )
        lines.append(f"{way:<14}{figures}{'':10}{over}".rstrip())
    for way, counts in result.get("peer_requests_per_round", {}).items():
        split = ", ".join(f"{k} {counts[k]:.1f}" for k in KINDS)
        lines.append(f"({way}: {sum(counts.values()):.1f} requests to the mint a round: {split})")
    lines += _cpu_lines(result.get("cpu_ms_per_round"))
    lines += [
        "",
        f"throughput, cashu-worker ({s['rounds']} rounds per client, each its own wallet pair;"
        " median of the repetitions)",
        f"{'workers':<9}{'clients':<9}{'rounds/s':>9}{'ops/s':>9}{'tasks/s':>9}{'ms/round':>10}{'locked':>8}"
        f"{'mint cores':>12}{'worker cores':>14}",
    ]
    for row in result["throughput"]:
        lines.append(
            f"{row.get('workers', 1):<9}{row['clients']:<9}"
            f"{row['rounds_per_s']:>9.2f}{row['ops_per_s']:>9.2f}"
            f"{row['tasks_per_s']:>9.1f}{row['round_ms']:>10.0f}{row['lock_waits']:>8}"
            f"{row.get('mint_cores', 0):>12.2f}{row.get('worker_cores', 0):>14.2f}"
        )
    lines.append(
        f"(cores: CPU seconds per second of the run, of {s['cpus']}, the workers' summed; the "
        "mint is one Python process, so near 1.0 it is the limit)"
    )
    lines += [
        "",
        f"prepare latency, ms (median of {s['prepares']}; each cancelled right after)",
        f"{'proofs':<10}{'send':>8}{'melt':>8}{'send p90':>10}{'melt p90':>10}{'insert s':>10}",
    ]
    for row in result["prepare"]:
        lines.append(
            f"{row['proofs']:<10}{row['send_ms']:>8.1f}{row['melt_ms']:>8.1f}"
            f"{row['send_p90_ms']:>10.1f}{row['melt_p90_ms']:>10.1f}{row['insert_s']:>10.1f}"
        )
    mem = result["worker_memory"]
    lines += [
        "",
        f"worker peak memory: {mem['peak_rss_sum_mb']:.0f} MB (sum of RSS over its "
        f"{mem['processes']} processes, sampled every 0.25 s); per-process VmHWM sum "
        f"{mem['hwm_sum_mb']:.0f} MB, largest {mem['hwm_max_mb']:.0f} MB",
        "",
        f"input fees over one workload ({s['rounds']} rounds), sat (median of repetitions);",
        "balance: the two wallets' at the end of the first repetition, should: minted - melted",
        "- routing - fees; check: balance as it should be in every repetition",
        f"{'':<14}{'fees':>6}{'requests':>10}{'by balance':>12}{'routing':>9}{'balance':>9}"
        f"{'should':>8}  check",
    ]
    for way in ways:
        f = result["fees"][way]
        if "balance_ok" in f:
            check = "ok" if f["balance_ok"] else f"OFF by {f['balance_off']} sat"
            money = f"{f['balance']:>9}{f['expected_balance']:>8}  {check}"
        else:  # a result from before the balance check
            money = ""
        lines.append(
            f"{way:<14}{f['fees']:>6}{f['fee_requests']:>10}{f['fees_by_balance']:>12}"
            f"{f['routing']:>9}{money}"
        )
    watcher = result["sends_finalized_by_watcher"]
    lines.append(
        f"(sends left pending after the watcher's ticks: {watcher['still_pending']} of "
        f"{watcher['wallets']} wallets)"
    )
    lines += ["", "targets"]
    for t in result["targets"]:
        value = t["value"] if isinstance(t["value"], str) else f"{t['value']:.2f}"
        lines.append(f"  {'ok  ' if t['ok'] else 'MISS'} {t['name']}: {value}")
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()] if text.strip() else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=_int_list, default=[1, 4, 8])
    parser.add_argument("--proofs", type=_int_list, default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--prepares", type=int, default=20)
    parser.add_argument(
        "--peers",
        type=lambda text: [p.strip() for p in text.split(",") if p.strip()],
        default=list(PEER_WAYS),
        help=f"TypeScript ways to run too, of {','.join(PEER_WAYS)} (default all; '' for none)",
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--pool", choices=("prefork", "threads", "solo"), default="prefork")
    parser.add_argument(
        "--workers",
        type=_int_list,
        default=[1],
        help="worker instances for the throughput runs, e.g. 1,2 (default 1)",
    )
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    result = run_benchmark(
        rounds=args.rounds,
        repeat=args.repeat,
        concurrency=args.concurrency,
        proofs=args.proofs,
        prepares=args.prepares,
        database_url=args.database_url,
        redis_url=args.redis_url,
        peers=args.peers,
        pool=args.pool,
        workers=args.workers,
    )
    print(format_report(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
