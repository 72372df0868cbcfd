"""A guard for kombu's Redis transport, applied when the app is built."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def keep_running_when_redis_dies() -> None:
    """kombu 5.7's Redis transport, after its broker died, still tries to restore, ack or
    reject messages through the channel of the dead connection; the AttributeError it
    meets there stops the whole worker (celery/kombu#970, #582). Skip those calls on a
    channel whose connection is gone: its messages stay in Redis's unacked set and come
    back after the visibility timeout (a step delivered again is idempotent), and the
    worker reconnects as it does after any broker loss."""
    from kombu.transport import redis as kombu_redis

    def unless_gone(method: Any) -> Any:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            transport = self.channel.connection
            if transport is None or transport.client is None:
                logger.warning("broker connection gone: %s skipped", method.__name__)
                return None
            return method(self, *args, **kwargs)

        return call

    for name in ("restore_unacked", "ack", "reject"):
        setattr(kombu_redis.QoS, name, unless_gone(getattr(kombu_redis.QoS, name)))
