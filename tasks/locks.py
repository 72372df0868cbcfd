"""The per-operation Redis lock, held as a lease its holder renews.

It keeps two workers from running a step of one operation at the same time;
correctness never depends on it (proof reservation and the compare-and-set do).

The lock lives for `lock_lease_seconds` (10 s by default) and a thread of the holding
process renews it every third of that while the step runs, however long the step is
(a melt waiting for its Lightning payment). A holder that dies (SIGKILL, a host cut off)
stops renewing, so its lock lapses within one lease and recovery, or the redelivered
task, can take the operation on.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import LockError, LockNotOwnedError, RedisError
from redis.lock import Lock

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
def operation_lock(operation_id: str | uuid.UUID, *, wait: float = 0.0) -> Iterator[None]:
    """Hold the operation's lock for the block, or raise OperationInProgressError.

    `wait`: seconds to wait for a lock held by someone else (a redelivered task waits out
    the lease of the worker that died holding it); 0 answers at once.
    """
    lease = get_settings().lock_lease_seconds
    lock = get_redis().lock(
        lock_name(operation_id),
        timeout=lease,
        blocking=wait > 0,
        blocking_timeout=wait if wait > 0 else None,
        thread_local=False,  # the renewing thread must see the token this thread took
    )
    if not lock.acquire():
        raise OperationInProgressError(f"operation {operation_id} is being worked on right now")
    _renewer.hold(lock, lease / 3)
    try:
        yield
    finally:
        _renewer.drop(lock)
        try:
            lock.release()
        except LockNotOwnedError:
            logger.warning("lock of operation %s lapsed before its step ended", operation_id)
        except RedisError:
            # The step is done and committed; the lock lapses with its lease.
            logger.warning("could not release the lock of operation %s", operation_id)


class _LeaseRenewer:
    """One thread per process renews every lock the process holds (threads pools hold
    several at once). Started on first use, and again in a forked child."""

    def __init__(self) -> None:
        self._held: dict[int, Lock] = {}
        self._mutex = threading.Lock()
        self._wake = threading.Condition(self._mutex)
        self._every = 1.0
        self._pid = 0

    def hold(self, lock: Lock, every: float) -> None:
        with self._mutex:
            self._held[id(lock)] = lock
            self._every = every
            if self._pid != os.getpid():  # new process: the parent's thread is not here
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="lock-lease", daemon=True).start()

    def drop(self, lock: Lock) -> None:
        with self._mutex:
            self._held.pop(id(lock), None)

    def _run(self) -> None:
        pid = os.getpid()
        while True:
            with self._mutex:
                self._wake.wait(self._every)
                if self._pid != pid:
                    return
                held = list(self._held.values())
            for lock in held:
                try:
                    lock.reacquire()
                except LockNotOwnedError:
                    pass  # released meanwhile, or lapsed: nothing left to renew
                except (LockError, RedisError):
                    logger.warning("could not renew the lease of %s", lock.name, exc_info=True)


_renewer = _LeaseRenewer()
