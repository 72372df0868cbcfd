"""A smoke run of the workload benchmark (bench/workload.py): two rounds, one repetition, one
client, a thousand proofs, and the TypeScript peers (coco, cashu-ts) when node and npm are on
PATH (the first run installs them: npm ci in bench/peers). It keeps the benchmark from
rotting; no figure is judged. Also bench/profile_round.py, and bench/slow_lightning.py with
tiny numbers.

Self-contained: a subprocess with its own mint, worker, beat, Postgres database
(`cashu_worker_bench_smoke`, BENCH_SMOKE_DATABASE_URL overrides) and Redis db 8
(BENCH_SMOKE_REDIS_URL); none of the suite's shared fixtures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.mint

REPO = Path(__file__).resolve().parent.parent
DATABASE_URL = os.environ.get(
    "BENCH_SMOKE_DATABASE_URL",
    "postgresql+psycopg2://postgres@127.0.0.1:5432/cashu_worker_bench_smoke",
)
REDIS_URL = os.environ.get("BENCH_SMOKE_REDIS_URL", "redis://127.0.0.1:6379/8")
KINDS = ("mint", "send", "receive", "melt")
PEERS = ("coco", "cashu-ts") if shutil.which("node") and shutil.which("npm") else ()


def test_a_small_benchmark_run_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "workload.py")]
        + ["--rounds", "2", "--repeat", "1", "--concurrency", "1", "--proofs", "1000"]
        + ["--prepares", "3", "--database-url", DATABASE_URL, "--redis-url", REDIS_URL]
        + ["--peers", ",".join(PEERS), "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ms per operation" in proc.stdout and "targets" in proc.stdout, proc.stdout
    result = json.loads(out.read_text())

    ways = ("worker", "worker 2-step", "floor", "nutshell", *PEERS)
    assert tuple(result["ways"]) == ways
    for way in ways:
        for key in (*KINDS, "round"):
            assert result["per_op_ms"][way][key] > 0, (way, key)
        fees = result["fees"][way]
        assert fees["fees"] > 0 and fees["fee_requests"] > 0, (way, fees)
        # the fees counted per request are what the balances lost
        assert fees["fees"] == fees["fees_by_balance"], (way, fees)
        assert fees["balance_ok"] and fees["balance"] == fees["expected_balance"], (way, fees)
    ratios = ["worker/floor", "worker/nutshell", "worker 2-step/floor"]
    ratios += [f"{peer}/floor" for peer in PEERS] + [f"worker/{peer}" for peer in PEERS]
    for ratio in ratios:
        assert all(result["ratios"][ratio][k] > 0 for k in (*KINDS, "round")), ratio
    for peer in PEERS:
        assert len(result["raw"][peer]) == 1 and len(result["raw"][peer][0]["times"]["mint"]) == 2
        assert result["peer_versions"][peer]["version"], peer
        assert f"\n{peer} " in proc.stdout, peer  # its row in the every-way table

    assert result["worker_tasks_per_round"] == {"worker": 5, "worker 2-step": 7}
    [throughput] = result["throughput"]
    assert throughput["clients"] == 1 and throughput["rounds"] == 2
    assert throughput["rounds_per_s"] > 0 and throughput["ops_per_s"] > 0

    [prepare] = result["prepare"]
    assert prepare["proofs"] == 1000
    assert prepare["send_ms"] > 0 and prepare["melt_ms"] > 0

    memory = result["worker_memory"]
    assert memory["processes"] >= 2 and memory["peak_rss_sum_mb"] > 0

    cpu = result["cpu_ms_per_round"]
    assert set(cpu) == {"worker", "worker 2-step", "floor", *PEERS}  # Nutshell runs apart
    for way, parts in cpu.items():
        assert parts["mint"] > 0, (way, parts)  # every way asks the mint for the same work
    for way in ("worker", "worker 2-step"):  # CPU is counted in 10 ms ticks: 2 rounds see some
        assert cpu[way]["worker"] > 0 and cpu[way]["Postgres"] > 0, (way, cpu[way])
    for peer in PEERS:
        assert cpu[peer]["peer"] > 0, (peer, cpu[peer])
    assert "CPU per round" in proc.stdout

    assert result["sends_finalized_by_watcher"]["wallets"] == 2  # one per worker way
    assert {t["name"].split(":")[0] for t in result["targets"]} >= {*KINDS, "round", "workload"}


def test_the_round_profile_splits_every_operation() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "profile_round.py"), "--rounds", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    def rounding(terms: int) -> float:
        """How far a sum of `terms` figures printed to 0.1 may be from its printed total."""
        return 0.05 * (terms + 1) + 1e-6

    def table(text: str) -> dict[str, list[float]]:
        rows = (line.split() for line in text.splitlines())
        return {row[0]: list(map(float, row[1:])) for row in rows if row and row[0] in KINDS}

    celery_by_way = {}
    for way, tasks in (("one-call", (2, 1, 1, 1)), ("2-step", (2, 2, 1, 2))):
        start = proc.stdout.index(f"sagas in-process, {way},")
        sagas, _, rest = proc.stdout[start:].partition(f"{way} against the floor")
        against_floor = rest.partition("\n\n")[0]
        for kind, row in table(sagas).items():
            total, http, sql, rest_ms, requests, statements, commits = row
            assert total > 0 and sql > 0 and statements > 0 and commits > 0, (way, kind, row)
            assert abs(total - (http + sql + rest_ms)) <= rounding(3), (way, kind, row)
            if kind != "send":  # a send of proofs that add up exactly asks the mint nothing
                assert requests > 0, (way, kind, row)
        floor_rows = table(against_floor)
        assert set(floor_rows) == set(KINDS), way
        for (kind, row), calls in zip(floor_rows.items(), tasks, strict=True):
            floor, its_http, its_rest, our_http, sql, celery, least, _, ours, ratio = row
            assert floor > 0 and its_http > 0 and celery > 0, (way, kind, row)
            assert abs(least - (our_http + sql + its_rest + celery)) <= rounding(4), (way, kind)
            assert least <= ours, (way, kind, row)
            assert ratio == pytest.approx(ours / floor, rel=0.03), (way, kind, row)  # rounded
            celery_by_way[way, kind] = celery / calls  # one round trip's worth per call
    per_call = celery_by_way.values()
    assert max(per_call) - min(per_call) <= 0.1, celery_by_way  # both ways' calls cost alike
    assert "Celery round trip" in proc.stdout


def test_a_tiny_slow_lightning_run_settles_every_melt(tmp_path: Path) -> None:
    """bench/slow_lightning.py against both mints with tiny numbers (two 1 s payments, two
    rounds a phase), the split worker layout: every melt settles within its worst case."""
    out = tmp_path / "slow.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "slow_lightning.py")]
        + ["--mint", "both", "--melts", "2", "--delay", "1", "--rounds", "2"]
        + ["--database-url", DATABASE_URL, "--redis-url", REDIS_URL, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    assert "p95 load/idle" in proc.stdout, proc.stdout
    results = json.loads(out.read_text())["results"]
    assert [r["mint"] for r in results] == ["0.20.2", "0.21.0"]
    for r in results:
        assert r["layout"] == "split" and len(r["workers"]) == 2, r["workers"]
        assert r["settled"] == 2 and r["all_settled_s"] >= 1, r
        assert r["costs"]["finalized"] + r["states"].get("rolled_back", 0) == 2, r
        assert not r["costs"]["out_of_range"], r["costs"]
        for phase in ("idle", "loaded"):
            assert len(r["raw"][phase]) == 2
            assert r[phase]["round_p95_ms"] >= r[phase]["round_p50_ms"] > 0, (phase, r[phase])
