"""What tests and benchmarks share about their database and wallet seed.

TEST_MNEMONIC is BIP39's public test phrase (the NUT-13 spec vectors use it): never a
real seed. migrate_fresh gives a run a database of its own, empty and migrated.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

TEST_MNEMONIC = "half depart obvious quality work element tank gorilla view sugar picture humble"
REPO = Path(__file__).resolve().parent.parent


def migrate_fresh(url: str, revision: str = "head") -> str:
    """Create the database if missing, empty its schema, and run alembic upgrade to
    `revision`."""
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
        )
        if not exists:
            with contextlib.suppress(Exception):  # created meanwhile by someone else
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()

    migrate(url, "upgrade", revision)
    return url


def migrate(url: str, direction: Literal["upgrade", "downgrade"], revision: str) -> None:
    """alembic upgrade (or downgrade) `url`'s database to `revision`."""
    from alembic.config import Config

    from alembic import command

    config = Config(str(REPO / "alembic.ini"))
    config.attributes["configure_logger"] = False
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    try:
        getattr(command, direction)(config, revision)
    finally:
        if previous is None:
            os.environ.pop("DATABASE_URL")
        else:
            os.environ["DATABASE_URL"] = previous
