"""Prometheus metrics of the operations table, computed on each scrape.

    cashu_operations{kind,state}                          operations in that state (every
                                                          state a saga knows, 0 included)
    cashu_oldest_open_operation_age_seconds{kind,state}   age (since created_at) of the
                                                          oldest operation in a non-terminal
                                                          state that has any
    cashu_metrics_scrape_success                          1, or 0 when the query failed

One GROUP BY query per scrape (a 5 s statement timeout), nothing kept in memory between
scrapes, so every worker reports the same numbers: scrape one of them. The worker's main
process serves them over HTTP when CASHU_METRICS_PORT is set (CASHU_METRICS_ADDR, default
127.0.0.1): see `start_metrics_server`, hooked to worker_ready in tasks/lifecycle.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import extract, func, select, text

from models import Operation
from models.db import engine

logger = logging.getLogger(__name__)

STATEMENT_TIMEOUT = "5s"


def saga_states() -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """{kind: (every state, terminal states)} of the registered sagas."""
    import sagas.catalog  # noqa: F401 - every saga's spec
    from sagas.engine import SPECS

    states = {}
    for kind, spec in SPECS.items():
        every = set(spec.transitions) | {s for to in spec.transitions.values() for s in to}
        states[kind] = (frozenset(every), spec.terminal)
    return states


def operation_stats(database_url: str | None = None) -> list[tuple[str, str, int, float]]:
    """(kind, state, count, age in seconds of the oldest) per kind and state: one query."""
    stmt = select(
        Operation.kind,
        Operation.state,
        func.count(),
        extract("epoch", func.now() - func.min(Operation.created_at)),
    ).group_by(Operation.kind, Operation.state)
    with engine(database_url).connect() as conn:
        conn.execute(text(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"))
        rows = conn.execute(stmt).all()
        conn.rollback()
    return [(kind, state, int(n), max(0.0, float(age or 0))) for kind, state, n, age in rows]


class OperationsCollector(Collector):
    """The gauges above, from `operation_stats` at collect time."""

    def __init__(self, database_url: str | None = None) -> None:
        self.database_url = database_url

    def collect(self) -> Iterator[Any]:
        count = GaugeMetricFamily(
            "cashu_operations", "Operations by kind and state", labels=["kind", "state"]
        )
        age = GaugeMetricFamily(
            "cashu_oldest_open_operation_age_seconds",
            "Seconds since the oldest operation in this non-terminal state was created",
            labels=["kind", "state"],
        )
        success = GaugeMetricFamily(
            "cashu_metrics_scrape_success", "1 if the operations table could be read, else 0"
        )
        try:
            rows = operation_stats(self.database_url)
        except Exception:
            logger.warning("metrics: cannot read the operations table", exc_info=True)
            success.add_metric([], 0)
            yield success
            return
        known = saga_states()
        seen = set()
        for kind, state, n, oldest in sorted(rows):
            seen.add((kind, state))
            count.add_metric([kind, state], n)
            terminal = known.get(kind, (frozenset(), frozenset()))[1]
            if state not in terminal:
                age.add_metric([kind, state], oldest)
        for kind, (states, _) in sorted(known.items()):
            for state in sorted(states):
                if (kind, state) not in seen:
                    count.add_metric([kind, state], 0)
        success.add_metric([], 1)
        yield count
        yield age
        yield success

    def describe(self) -> Iterator[Any]:
        return iter(())  # no collect() at registration time (it would query the database)


def make_registry(database_url: str | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OperationsCollector(database_url))
    return registry


_server: Any = None


def start_metrics_server(port: int, addr: str = "127.0.0.1", database_url: str | None = None):
    """Serve /metrics on addr:port from a daemon thread (once per process); the server, or
    None if it could not bind (logged: the worker runs on without metrics)."""
    global _server
    if _server is None:
        try:
            _server, _thread = start_http_server(port, addr, registry=make_registry(database_url))
        except OSError as exc:
            logger.error("metrics: cannot listen on %s:%s: %s", addr, port, exc)
            return None
        logger.info("metrics: serving Prometheus metrics on http://%s:%s/metrics", addr, port)
    return _server
