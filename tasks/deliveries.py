"""A redelivery cap: with late acks and reject-on-worker-lost, a message whose step kills
its worker is redelivered; after `max_deliveries` deliveries in all it fails instead of
looping forever (TOO_MANY_DELIVERIES, on the operation for a person to see). The count is
kept in Redis, per task id."""

from __future__ import annotations

import logging
from typing import Any

from nuts.errors import CashuError
from sagas.errors import SagaError, Severity
from tasks.config import get_settings

logger = logging.getLogger(__name__)

DELIVERY_KEY = "cashu:deliveries:"


class TooManyDeliveriesError(SagaError):
    code = "TOO_MANY_DELIVERIES"
    default_message = (
        "The task's message was delivered too many times (its worker kept dying): given up."
    )
    severity = Severity.CRITICAL  # the step keeps killing workers: a person must look


def mark_operation(operation_id: object, error: TooManyDeliveriesError) -> None:
    """A step that keeps killing its worker: say so on the operation, for a person to see."""
    if not operation_id:
        return
    from models.db import unit_of_work
    from sagas.engine import get_operation, update_operation

    try:
        with unit_of_work(get_settings().database_url) as session:
            update_operation(session, get_operation(session, str(operation_id)), error=error)
    except CashuError:  # no such operation, or it moved meanwhile: nothing to mark
        logger.warning("could not mark operation %s: %s", operation_id, error)


def redelivered(delivery_info: dict[str, Any] | None) -> bool:
    """The broker marks a message it puts back as redelivered: Redis after the visibility
    timeout, RabbitMQ when the connection of the worker that had it closed."""
    return bool(delivery_info and delivery_info.get("redelivered"))


def count_delivery(task_id: str) -> None:
    """Count a redelivery; past `max_deliveries` deliveries in all, give up."""
    from tasks.redis_client import get_redis

    settings = get_settings()
    key = DELIVERY_KEY + task_id
    pipe = get_redis().pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, settings.visibility_timeout * (settings.max_deliveries + 1))
    deliveries = 1 + pipe.execute()[0]  # the first delivery plus the redeliveries counted
    if deliveries > settings.max_deliveries:
        raise TooManyDeliveriesError(
            f"task {task_id} was delivered {deliveries} times; giving up "
            f"(max {settings.max_deliveries})"
        )


def forget_deliveries(task_id: str) -> None:
    """The message is about to be acked: its count is no longer needed."""
    from tasks.redis_client import get_redis

    try:
        get_redis().delete(DELIVERY_KEY + task_id)
    except Exception:  # it expires by itself
        logger.debug("could not drop the delivery count of %s", task_id, exc_info=True)
