"""One Redis client per process (locks, the event stream, delivery counters).

A forked worker child must not share its parent's sockets: the client is rebuilt
whenever the process id changes, and `reset_redis()` runs in worker_process_init.
"""

from __future__ import annotations

import os
import threading

import redis

from tasks.config import get_settings

_client: redis.Redis | None = None
_client_pid: int | None = None
_lock = threading.Lock()


def get_redis() -> redis.Redis:
    global _client, _client_pid
    with _lock:
        if _client is None or _client_pid != os.getpid():
            _client = redis.Redis.from_url(get_settings().redis_url)
            _client_pid = os.getpid()
        return _client


def reset_redis() -> None:
    """Forget the client; the parent's connections are left alone (not ours to close)."""
    global _client, _client_pid
    with _lock:
        _client = None
        _client_pid = None
