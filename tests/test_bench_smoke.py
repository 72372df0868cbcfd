"""A smoke run of the workload benchmark (bench/workload.py): two rounds, one repetition, one
client, a thousand proofs. It keeps the benchmark from rotting; no figure is judged.

Self-contained: a subprocess with its own mint, worker, beat, Postgres database
(`cashu_worker_bench_smoke`, BENCH_SMOKE_DATABASE_URL overrides) and Redis db 8
(BENCH_SMOKE_REDIS_URL); none of the suite's shared fixtures.
"""

from __future__ import annotations

import json
import os
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


def test_a_small_benchmark_run_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "workload.py")]
        + ["--rounds", "2", "--repeat", "1", "--concurrency", "1", "--proofs", "1000"]
        + ["--prepares", "3", "--database-url", DATABASE_URL, "--redis-url", REDIS_URL]
        + ["--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ms per operation" in proc.stdout and "targets" in proc.stdout, proc.stdout
    result = json.loads(out.read_text())

    for way in ("worker", "worker 2-step", "floor", "nutshell"):
        for key in (*KINDS, "round"):
            assert result["per_op_ms"][way][key] > 0, (way, key)
        fees = result["fees"][way]
        assert fees["fees"] > 0 and fees["fee_requests"] > 0, (way, fees)
        # the fees counted per request are what the balances lost
        assert fees["fees"] == fees["fees_by_balance"], (way, fees)
    for ratio in ("worker/floor", "worker/nutshell", "worker 2-step/floor"):
        assert all(result["ratios"][ratio][k] > 0 for k in (*KINDS, "round")), ratio

    assert result["worker_tasks_per_round"] == {"worker": 5, "worker 2-step": 7}
    [throughput] = result["throughput"]
    assert throughput["clients"] == 1 and throughput["rounds"] == 2
    assert throughput["rounds_per_s"] > 0 and throughput["ops_per_s"] > 0

    [prepare] = result["prepare"]
    assert prepare["proofs"] == 1000
    assert prepare["send_ms"] > 0 and prepare["melt_ms"] > 0

    memory = result["worker_memory"]
    assert memory["processes"] >= 2 and memory["peak_rss_sum_mb"] > 0

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
    rows = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines() if line}
    for kind in KINDS:
        total, http, sql, rest, requests, statements, commits = map(float, rows[kind])
        assert total > 0 and sql > 0 and statements > 0 and commits > 0, (kind, rows[kind])
        assert abs(total - (http + sql + rest)) < 0.2, (kind, rows[kind])
        if kind != "send":  # a send of proofs that add up exactly asks the mint nothing
            assert requests > 0, (kind, rows[kind])
    assert "Celery round trip" in proc.stdout
