"""A reduced chaos run (bench/chaos.py): 40 operations, 3 wallets, 5 worker kills, 3 cuts
(before, after, 502), both mints SIGKILLed, PostgreSQL crashed and Redis SIGKILLed, then
recovery to quiescence; every invariant must hold, and every fault must have its figures.

Self-contained: its own PostgreSQL cluster (tests/pg_harness.py; with CHAOS_DATABASE_URL
set, that database instead, and no PostgreSQL crash), its own redis-server, mints and
worker; none of the suite's shared fixtures. CHAOS_SEED picks another seed. The full run
(200 operations, 20 kills, 9 cuts) is `python bench/chaos.py`.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pg_harness
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from chaos import MINT_KILL, PG_CRASH, REDIS_KILL, WORKER_KILL, format_figures, run_chaos  # noqa: E402

pytestmark = pytest.mark.mint
SHARED_DATABASE = bool(os.environ.get("CHAOS_DATABASE_URL"))


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
@pytest.mark.skipif(
    not SHARED_DATABASE and not pg_harness.available(),
    reason="needs PostgreSQL's initdb (or CHAOS_DATABASE_URL)",
)
def test_a_reduced_chaos_run_loses_nothing_and_leaves_nothing_half_done() -> None:
    figures = run_chaos(
        operations=40,
        wallets=3,
        kills=5,
        cuts=3,
        seed=int(os.environ.get("CHAOS_SEED", "7")),
        max_seconds=600,
    )
    print()
    print(format_figures(figures))

    failed = {name: inv["detail"] for name, inv in figures["invariants"].items() if not inv["ok"]}
    assert not failed, failed
    assert figures["quiescence"]["reached"], figures["quiescence"]
    kills = figures["kills"]
    assert kills["total"] == 5, kills
    assert any(k["during"].startswith("mint request") for k in kills["list"]), kills
    assert kills["request_reached_mint"] >= 1, kills
    assert figures["restarts"].get("redis") == 1 and figures["restarts"].get("mint A") == 1
    assert figures["operations_launched"] == 40

    faults = figures["faults"]["by_kind"]
    expected = {WORKER_KILL: 5, MINT_KILL: 2, REDIS_KILL: 1} | (
        {} if SHARED_DATABASE else {PG_CRASH: 1}
    )
    assert {kind: faults.get(kind, {}).get("count") for kind in expected} == expected, faults
    cuts = figures["cuts"]  # a cut no request met in time is withdrawn, and not a fault
    assert {c["cut"] for c in cuts["list"]} == {"before", "after", "502"}, cuts
    measured = sum(f["count"] for kind, f in faults.items() if kind.startswith("cut "))
    assert measured == cuts["made"] >= 1, cuts
    not_served = [f for f in figures["faults"]["list"] if f["service_s"] is None]
    assert not not_served, not_served
    assert figures["melt_costs"]["finalized"] >= 1, figures["melt_costs"]
