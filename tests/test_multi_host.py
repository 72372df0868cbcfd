"""A reduced multi-host run (bench/multi_host.py): two worker hosts and a beat host in
network namespaces of their own, one PostgreSQL, one Redis, two mints; 30 operations of a
random mix, 3 wallets, hostA cut off the network twice in the middle of its steps (12 s and
20 s: shorter and longer than the operation lock's lease and the task time limits), then
recovery; every invariant must hold (bench/chaos.py's six, every operation settled, the
books equal what the mints restore from the seed, nothing done twice at a mint, hostB
carried on during each cut, hostA came back after each).

Self-contained: its own network, PostgreSQL cluster, redis-server, mints, hosts; none of
the suite's shared fixtures. Needs root (network namespaces); MULTI_HOST_SEED picks
another seed. The full run (100 operations, 4 cuts) is `python bench/multi_host.py`.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import netns_harness
import pg_harness
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from multi_host import HOST_CUT, format_multi_host, run_multi_host  # noqa: E402

pytestmark = pytest.mark.mint
NETNS_UNAVAILABLE = netns_harness.unavailable()


@pytest.mark.skipif(
    NETNS_UNAVAILABLE is not None, reason=f"network namespaces: {NETNS_UNAVAILABLE}"
)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
@pytest.mark.skipif(not pg_harness.available(), reason="needs PostgreSQL's initdb")
def test_a_host_cut_off_mid_step_loses_nothing_and_does_nothing_twice() -> None:
    figures = run_multi_host(
        operations=30,
        wallets=3,
        cuts=2,
        seed=int(os.environ.get("MULTI_HOST_SEED", "3")),
        cut_seconds=(12.0, 20.0),
        max_seconds=600,
    )
    print()
    print(format_multi_host(figures))

    failed = {name: inv["detail"] for name, inv in figures["invariants"].items() if not inv["ok"]}
    assert not failed, failed
    assert figures["quiescence"]["reached"], figures["quiescence"]
    cuts = figures["host_cuts"]
    assert cuts["total"] == 2, cuts
    # at least one cut caught hostA in a step that ended only after the cut
    assert cuts["mid_step_confirmed"] >= 1, cuts
    assert sorted(round(c["seconds"]) for c in cuts["list"]) == [12, 20], cuts
    faults = figures["faults"]["by_kind"]
    assert faults[HOST_CUT]["count"] == 2 and faults[HOST_CUT]["not_settled"] == 0, faults
    assert figures["operations_random_phase"] >= 30
    assert figures["melt_costs"]["finalized"] >= 1, figures["melt_costs"]
