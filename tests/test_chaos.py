"""A reduced chaos run (bench/chaos.py): 40 operations, 3 wallets, 5 worker kills, mint and
Redis restarts, then recovery to quiescence; every invariant must hold.

Self-contained: its own database (CHAOS_DATABASE_URL, default cashu_worker_chaos), its own
redis-server, mints and worker; none of the suite's shared fixtures. CHAOS_SEED picks
another seed. The full run (200 operations, 20 kills) is `python bench/chaos.py`.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from chaos import format_figures, run_chaos  # noqa: E402

pytestmark = pytest.mark.mint


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_a_reduced_chaos_run_loses_nothing_and_leaves_nothing_half_done() -> None:
    figures = run_chaos(
        operations=40,
        wallets=3,
        kills=5,
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
