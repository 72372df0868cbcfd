"""The tests' broker when it is RabbitMQ (TEST_BROKER_URL=amqp://...).

scripts/test.sh makes two vhosts of their own for the tests, `cashu_worker_test` for the
session's worker and `cashu_worker_test_own` for a test's own workers (the `own_workers`
fixture), as Redis gives them a database each. A session starts with their queues empty.
"""

from __future__ import annotations

from kombu import Connection

QUEUES = ("cashu", "cashu.beat", "cashu.lightning", "celery")


def own_broker_url(broker_url: str) -> str:
    """The vhost of a test's own workers: the session's, suffixed `_own`."""
    return broker_url.rstrip("/") + "_own"


def purge_queues(broker_url: str) -> None:
    """Drop every message a previous session left in the queues the workers consume."""
    with Connection(broker_url, connect_timeout=5) as connection:
        connection.ensure_connection(max_retries=2)
        for name in QUEUES:
            channel = connection.channel()
            try:
                channel.queue_purge(name)
            except connection.channel_errors:  # not declared yet: nothing to drop
                pass
            finally:
                channel.close()
