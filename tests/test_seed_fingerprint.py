"""One seed everywhere: a worker or beat holding another master seed than the one the
database's wallets derive from refuses to start, and says so without showing either seed.

The session's workers (the test mnemonic) stored the fingerprint first; another process on
the same database with another valid mnemonic must not write a single proof.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from db_harness import TEST_MNEMONIC
from mnemonic import Mnemonic
from sqlalchemy import func, select
from worker_harness import RunningWorker, WorkerStartError

from models import SeedFingerprint
from nuts.secrets import mnemonic_to_seed
from sagas.engine import SagaContext
from sagas.errors import SeedMismatchError
from sagas.seed import check_seed, seed_fingerprint

REPO = Path(__file__).resolve().parent.parent
OTHER_MNEMONIC = Mnemonic("english").generate(256)


@pytest.fixture
def stored_fingerprint(saga_context: SagaContext) -> str:
    """The test mnemonic's fingerprint, stored as the session's first worker would."""
    fingerprint = seed_fingerprint(mnemonic_to_seed(TEST_MNEMONIC))
    with saga_context.uow() as session:
        check_seed(session, fingerprint)
    return fingerprint


def test_the_same_seed_passes_and_another_is_refused_leaving_the_stored_one(
    saga_context: SagaContext, stored_fingerprint: str
) -> None:
    other = seed_fingerprint(mnemonic_to_seed(OTHER_MNEMONIC))

    with saga_context.uow() as session:
        check_seed(session, stored_fingerprint)
        with pytest.raises(SeedMismatchError) as refused:
            check_seed(session, other)
        rows = session.scalars(select(SeedFingerprint.fingerprint)).all()

    assert rows == [stored_fingerprint]
    assert other[:8] in str(refused.value) and stored_fingerprint[:8] in str(refused.value)
    assert other not in str(refused.value) and stored_fingerprint not in str(refused.value)


def test_a_worker_with_another_master_seed_refuses_to_start(
    database_url: str, redis_url: str, stored_fingerprint: str, saga_context: SagaContext
) -> None:
    worker = RunningWorker(database_url=database_url, redis_url=redis_url, mnemonic=OTHER_MNEMONIC)

    with pytest.raises(WorkerStartError):
        worker.start()

    log = worker.log_tail(200)
    assert "cannot start" in log and "is not the one" in log, log
    assert not any(
        word in log for word in set(OTHER_MNEMONIC.split()) - {"a", "an"} if len(word) > 6
    )
    with saga_context.uow() as session:
        assert session.scalar(select(func.count()).select_from(SeedFingerprint)) == 1


def test_a_beat_with_another_master_seed_refuses_to_start(
    database_url: str, redis_url: str, stored_fingerprint: str, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k != "WALLET_MNEMONIC_FILE"},
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "WALLET_MNEMONIC": OTHER_MNEMONIC,
    }
    beat = subprocess.run(
        [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "tasks",
            "beat",
            "-s",
            str(tmp_path / "schedule"),
            "--pidfile",
            str(tmp_path / "beat.pid"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert beat.returncode != 0
    assert "is not the one" in beat.stdout + beat.stderr, beat.stdout + beat.stderr
