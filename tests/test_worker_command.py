"""The worker as the Celery world starts it: `celery -A tasks worker`, no -Q."""

from __future__ import annotations

import redis
from db_harness import TEST_MNEMONIC
from worker_harness import start_worker

PLAIN_WORKER_REDIS_DB = 12  # its own Redis db: the session's worker must not take its tasks


def test_the_plain_worker_command_consumes_the_public_and_the_beat_queue(
    database_url: str, redis_url: str
) -> None:
    url = redis_url.rsplit("/", 1)[0] + f"/{PLAIN_WORKER_REDIS_DB}"
    redis.Redis.from_url(url).flushdb()
    worker = start_worker(
        database_url=database_url, redis_url=url, mnemonic=TEST_MNEMONIC, queues=None
    )
    try:
        beat = worker.client.send_task("cashu.beat.cancel_stale", queue="cashu.beat")
        public = worker.client.send_task("cashu.mints.list", queue="cashu")

        assert set(beat.get(timeout=30)) >= {"recovered", "rolled_back", "skipped"}
        assert "mints" in public.get(timeout=30)
        assert redis.Redis.from_url(url).llen("cashu.beat") == 0
    finally:
        worker.stop()
