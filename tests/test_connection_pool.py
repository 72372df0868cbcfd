"""The unit of work's connection pool: a connection used a moment ago starts its transaction
at once; one idle a while is pinged first, and replaced when the server closed it."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, func, select, text

from models import db


def backend_pid(url: str) -> int:
    with db.unit_of_work(url) as session:
        pid = session.scalar(select(func.pg_backend_pid()))
        assert isinstance(pid, int)
        return pid


@pytest.fixture
def pings(database_url: str, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The pings the pool sends, counted (still sent)."""
    dialect = db.engine(database_url).dialect
    sent: list[object] = []
    real_ping = dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        sent.append(dbapi_connection)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return sent


@pytest.fixture
def idle(monkeypatch: pytest.MonkeyPatch) -> float:
    """How long a connection must rest before it is pinged, made short for the test."""
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.3)
    return 0.3


def test_a_connection_used_a_moment_ago_is_not_pinged(
    database_url: str, pings: list[object]
) -> None:
    first = backend_pid(database_url)
    pings.clear()

    assert backend_pid(database_url) == first
    assert pings == []


def test_a_connection_idle_a_while_is_pinged_before_its_transaction(
    database_url: str, pings: list[object], idle: float
) -> None:
    first = backend_pid(database_url)
    pings.clear()
    time.sleep(idle + 0.1)

    assert backend_pid(database_url) == first
    assert len(pings) == 1


def test_an_idle_connection_the_server_closed_is_replaced_not_failed(
    database_url: str, idle: float
) -> None:
    gone = backend_pid(database_url)
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": gone})
    finally:
        admin.dispose()
    time.sleep(idle + 0.1)

    assert backend_pid(database_url) != gone
