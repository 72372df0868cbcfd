"""The per-operation Redis lock (DESIGN.md rule 7).

It keeps two workers from running a step of one operation at the same time;
correctness never depends on it (proof reservation and the compare-and-set do).
Its timeout exceeds the task time limit, so it outlives any step that holds it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import LockNotOwnedError, RedisError

from sagas.errors import OperationInProgressError
from tasks.config import get_settings
from tasks.redis_client import get_redis

logger = logging.getLogger(__name__)

LOCK_PREFIX = "cashu:lock:op:"


def lock_name(operation_id: str | uuid.UUID) -> str:
    try:
        key = str(uuid.UUID(str(operation_id)))
    except ValueError:
        key = str(operation_id)  # not an id at all: the saga reports it as not found
    return LOCK_PREFIX + key


@contextmanager
def operation_lock(operation_id: str | uuid.UUID) -> Iterator[None]:
    """Hold the operation's lock for the block, or raise OperationInProgressError."""
    lock = get_redis().lock(
        lock_name(operation_id), timeout=get_settings().lock_timeout, blocking=False
    )
    if not lock.acquire():
        raise OperationInProgressError(f"operation {operation_id} is being worked on right now")
    try:
        yield
    finally:
        try:
            lock.release()
        except LockNotOwnedError:
            logger.warning("lock of operation %s expired before its step ended", operation_id)
        except RedisError:
            # The step is done and committed; the lock lapses by its timeout.
            logger.warning("could not release the lock of operation %s", operation_id)
