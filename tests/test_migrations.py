"""One Alembic migration per schema change: the migrated test database is the schema the
models describe, to the index and constraint name."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from db_harness import migrate, migrate_fresh
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from models import Base


def test_the_migrations_build_the_schema_the_models_describe(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()

    assert differences == []


# ---------------------------------------------------------------- 0005: a receive's token_hash

RECEIVE_HASH = "ab" * 32


@pytest.fixture
def at_0004(database_url: str) -> Iterator[Engine]:
    """A database of its own at revision 0004, holding a mint, a send and a receive as
    0004 stored them: method bolt11 on each, the receive's token hash in quote_id."""
    url = make_url(database_url)
    own = url.set(database=f"{url.database}_migrations").render_as_string(hide_password=False)
    migrate_fresh(own, "0004")
    engine = create_engine(own)
    with engine.begin() as connection:
        for kind, quote_id in (("mint", "quote-1"), ("send", None), ("receive", RECEIVE_HASH)):
            connection.execute(
                text(
                    "INSERT INTO operations (id, wallet, kind, method, state, version, mint_url,"
                    " unit, quote_id, data) VALUES (:id, 'w', :kind, 'bolt11', 'finalized', 0,"
                    " 'http://mint', 'sat', :quote_id, '{}')"
                ),
                {"id": uuid.uuid4(), "kind": kind, "quote_id": quote_id},
            )
    try:
        yield engine
    finally:
        engine.dispose()


def columns(engine: Engine, *names: str) -> dict[str, tuple[str | None, ...]]:
    """The operations' `names` columns, by kind."""
    with engine.connect() as connection:
        found = connection.execute(text(f"SELECT kind, {', '.join(names)} FROM operations"))
        return {kind: tuple(values) for kind, *values in found}


def upgrade_to_0005(engine: Engine) -> None:
    migrate(engine.url.render_as_string(hide_password=False), "upgrade", "0005")


def test_the_upgrade_moves_a_receives_token_hash_from_quote_id_to_token_hash(
    at_0004: Engine,
) -> None:
    upgrade_to_0005(at_0004)

    assert columns(at_0004, "quote_id", "token_hash") == {
        "mint": ("quote-1", None),
        "send": (None, None),
        "receive": (None, RECEIVE_HASH),
    }


def test_the_upgrade_leaves_a_method_only_on_mints_and_melts(at_0004: Engine) -> None:
    upgrade_to_0005(at_0004)

    assert columns(at_0004, "method") == {"mint": ("bolt11",), "send": (None,), "receive": (None,)}


def test_the_downgrade_puts_back_what_the_upgrade_moved(at_0004: Engine) -> None:
    before = columns(at_0004, "method", "quote_id")
    upgrade_to_0005(at_0004)

    migrate(at_0004.url.render_as_string(hide_password=False), "downgrade", "0004")

    assert columns(at_0004, "method", "quote_id") == before
