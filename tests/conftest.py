"""Shared fixtures: a real Nutshell test mint (see tests/mint_harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from mint_harness import MINT_VERSIONS, RunningMint, start_mint


@pytest.fixture(scope="session")
def test_mint() -> Iterator[RunningMint]:
    """One FakeWallet mint (input_fee_ppk=100) for the whole session."""
    mint = start_mint(input_fee_ppk=100)
    try:
        yield mint
    finally:
        mint.stop()


@pytest.fixture(scope="session")
def test_mint21() -> Iterator[RunningMint]:
    """One Nutshell 0.21.0 FakeWallet mint (input_fee_ppk=100) for the whole session: the
    settings of test_mint, asynchronous melts (`prefer_async`) on top."""
    mint = start_mint(input_fee_ppk=100, version="0.21.0")
    try:
        yield mint
    finally:
        mint.stop()


@pytest.fixture(params=MINT_VERSIONS)
def any_mint(request: pytest.FixtureRequest) -> RunningMint:
    """The session's mint of each supported Nutshell version in turn (test ids [0.20.2] and
    [0.21.0]): test_mint or test_mint21, each started on first use."""
    return request.getfixturevalue("test_mint" if request.param == "0.20.2" else "test_mint21")


@pytest.fixture
def fresh_mint() -> Iterator[Callable[..., RunningMint]]:
    """Factory for a test's own mint(s): fresh_mint(env_overrides={...}, input_fee_ppk=...).
    Takes start_mint's keyword arguments; every mint started is stopped at test end."""
    started: list[RunningMint] = []

    def factory(**kwargs: object) -> RunningMint:
        mint = start_mint(**kwargs)  # type: ignore[arg-type]
        started.append(mint)
        return mint

    try:
        yield factory
    finally:
        for mint in started:
            mint.stop()


# ---------------------------------------------------------------- database and sagas

from db_harness import TEST_MNEMONIC, migrate_fresh  # noqa: E402, F401 (fixtures; tests import it)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A freshly migrated test database (alembic upgrade head on an empty schema)."""
    import os

    yield migrate_fresh(
        os.environ.get(
            "TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/cashu_worker_test"
        )
    )


@pytest.fixture
def saga_context(database_url: str):
    """A SagaContext on the test database, real MintClients, and the test mnemonic's wallets."""
    from functools import partial

    from models.db import unit_of_work
    from nuts.client import get_mint_client
    from nuts.secrets import derive_wallet_seed
    from sagas.engine import SagaContext

    seeds: dict[str, bytes] = {}

    def wallet_seed(wallet: str) -> bytes:
        if wallet not in seeds:
            seeds[wallet] = derive_wallet_seed(TEST_MNEMONIC, wallet)
        return seeds[wallet]

    return SagaContext(
        uow=partial(unit_of_work, database_url),
        mint_client=get_mint_client,
        wallet_seed=wallet_seed,
    )


@pytest.fixture
def wallet_id() -> str:
    """A wallet name of its own for each test, so balances never mix."""
    import uuid

    return f"w-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------- Celery worker (tasks/)

TEST_REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The tests' Redis database (TEST_REDIS_URL overrides db 15), flushed once per session."""
    import os

    import redis

    url = os.environ.get("TEST_REDIS_URL", TEST_REDIS_URL)
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def broker_url(redis_url: str) -> str:
    """The tests' broker: TEST_BROKER_URL (RabbitMQ, a vhost of the tests' own; its queues
    emptied once per session), else the Redis of redis_url."""
    import os

    url = os.environ.get("TEST_BROKER_URL")
    if not url:
        return redis_url
    from broker_harness import purge_queues

    purge_queues(url)
    return url


@pytest.fixture(scope="session")
def celery_worker(database_url: str, redis_url: str, broker_url: str):
    """A real `celery -A tasks worker -Q cashu,cashu.beat,cashu.lightning -c 4` on the test
    database, Redis and broker.

    worker.kill_hard() / worker.restart() for crash tests; worker.client sends tasks.
    """
    from worker_harness import start_worker

    worker = start_worker(
        database_url=database_url,
        redis_url=redis_url,
        mnemonic=TEST_MNEMONIC,
        broker_url=broker_url,
    )
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="session")
def celery_client(celery_worker):
    """A Celery app configured like the worker (same broker and backend) for send_task."""
    return celery_worker.client


# ---------------------------------------------------------------- Celery task tests (test_tasks_*)


@pytest.fixture
def wallet() -> str:
    """A wallet name of its own for a task test."""
    from task_helpers import new_wallet_name

    return new_wallet_name("tw")


@pytest.fixture
def alice() -> str:
    from task_helpers import new_wallet_name

    return new_wallet_name("a")


@pytest.fixture
def bob() -> str:
    from task_helpers import new_wallet_name

    return new_wallet_name("b")


@pytest.fixture
def mint_url(celery_client, test_mint: RunningMint) -> str:
    """The session's test mint, registered (and trusted) through cashu.mints.add."""
    from task_helpers import call

    view = call(celery_client, "cashu.mints.add", url=test_mint.url)
    assert view["trusted"] is True
    return view["url"]


@pytest.fixture
def proxy(celery_client, test_mint: RunningMint) -> Iterator:
    """The test mint behind a slow proxy (tests/slow_proxy.py), registered (and trusted)
    under the proxy's URL."""
    from slow_proxy import SlowProxy
    from task_helpers import call

    slow = SlowProxy(test_mint.url).start()
    url = call(celery_client, "cashu.mints.add", url=slow.url)["url"]
    try:
        yield slow
    finally:
        slow.release()
        # the proxy's URL dies with it: never contact it again
        call(celery_client, "cashu.mints.set_trusted", url=url, trusted=False)
        slow.stop()


@pytest.fixture
def own_mint(
    celery_client, fresh_mint: Callable[..., RunningMint], test_mint: RunningMint
) -> Iterator[Callable[..., tuple[RunningMint, str]]]:
    """own_mint(env) -> (mint, url): a test's own mint, of test_mint's version (a module
    may run its tests against each), registered through cashu.mints.add. Untrusted at test
    end: its port dies with it, and recovery must never ask it again."""
    from task_helpers import call

    urls: list[str] = []

    def factory(env: dict[str, str] | None = None) -> tuple[RunningMint, str]:
        mint = fresh_mint(env_overrides=env or {}, version=test_mint.version)
        url = call(celery_client, "cashu.mints.add", url=mint.url)["url"]
        urls.append(url)
        return mint, url

    yield factory
    for url in urls:
        call(celery_client, "cashu.mints.set_trusted", url=url, trusted=False)


@pytest.fixture
def own_workers(
    database_url: str, redis_url: str, broker_url: str
) -> Iterator[Callable[..., object]]:
    """own_workers(queues=..., pool=..., concurrency=1, **env) starts a worker on the test
    database and a Redis database nobody else's worker reads (TEST_OWN_REDIS_URL, else the
    session's db + 6, flushed first), and on RabbitMQ a vhost of its own: only what the
    test's own workers do can settle anything. All of them stop at test end."""
    import os

    import redis
    from broker_harness import own_broker_url, purge_queues
    from db_harness import TEST_MNEMONIC
    from worker_harness import start_worker

    base, _, db = redis_url.rpartition("/")
    own_redis = os.environ.get("TEST_OWN_REDIS_URL") or f"{base}/{(int(db or 0) + 6) % 16}"
    assert own_redis != redis_url
    redis.Redis.from_url(own_redis).flushdb()
    own_broker = own_redis
    if broker_url != redis_url:
        own_broker = os.environ.get("TEST_OWN_BROKER_URL") or own_broker_url(broker_url)
        purge_queues(own_broker)
    started: list = []

    def factory(
        queues: str = "cashu,cashu.beat,cashu.lightning",
        pool: str = "prefork",
        concurrency: int = 1,
        **env: str,
    ):
        worker = start_worker(
            database_url=database_url,
            redis_url=own_redis,
            mnemonic=TEST_MNEMONIC,
            concurrency=concurrency,
            queues=queues,
            env_overrides=env,
            pool=pool,
            broker_url=own_broker,
        )
        started.append(worker)
        return worker

    yield factory
    for worker in started:
        worker.stop()
