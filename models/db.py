"""Engine, sessions and the unit of work.

A unit of work is one transaction: `with unit_of_work() as session:` commits
when the block ends and rolls back if it raises.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/cashu_worker"

_factories: dict[str, sessionmaker[Session]] = {}
_lock = threading.Lock()


def database_url() -> str:
    return os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    url = url or database_url()
    with _lock:
        if url not in _factories:
            engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
            _factories[url] = sessionmaker(engine, expire_on_commit=False)
        return _factories[url]


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
