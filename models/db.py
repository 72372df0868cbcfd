"""Engine, sessions and the unit of work.

A unit of work is one transaction: `with unit_of_work() as session:` commits
when the block ends and rolls back if it raises.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/cashu_worker"
# A pooled connection back in the pool for longer than this is pinged before it is used,
# so one the server closed meanwhile (a restart, a killed backend) is replaced instead of
# failing its first statement. One used moments ago is taken as it is: a ping on every
# checkout was one round trip more in every transaction of every step.
PING_AFTER_IDLE_SECONDS = 1.0

_factories: dict[str, sessionmaker[Session]] = {}
_lock = threading.Lock()


def database_url() -> str:
    return os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    url = url or database_url()
    with _lock:
        if url not in _factories:
            engine = create_engine(url, pool_size=10, max_overflow=20)
            event.listen(engine, "checkin", _note_checkin)
            event.listen(engine, "checkout", _ping_if_idle(engine))
            _factories[url] = sessionmaker(engine, expire_on_commit=False)
        return _factories[url]


def _note_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(engine: Engine) -> Callable[[Any, ConnectionPoolEntry, Any], None]:
    """The pool's checkout: a connection idle a while is pinged as pool_pre_ping would, and
    a dead one replaced (DisconnectionError makes the pool connect anew). A new connection
    needs no ping."""
    dialect = engine.dialect

    def checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or time.monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise DisconnectionError(f"pooled connection is gone: {exc}") from exc
            raise

    return checkout


def engine(url: str | None = None) -> Engine:
    bind = session_factory(url).kw["bind"]
    assert isinstance(bind, Engine)
    return bind


@contextmanager
def unit_of_work(url: str | None = None) -> Iterator[Session]:
    with session_factory(url).begin() as session:
        yield session


def dispose_engines() -> None:
    """Drop pooled connections: a forked worker child must not share its parent's sockets."""
    with _lock:
        for factory in _factories.values():
            factory.kw["bind"].dispose(close=False)
        _factories.clear()
