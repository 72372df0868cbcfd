"""The Celery app: JSON only, late acks, one message at a time per process, named queues.

Queues: every public task runs on "cashu"; the beat's periodic work and the event
relay run on "cashu.beat", so a backlog of one never starves the other. A worker
consumes both by default (`celery -A tasks worker`, or explicitly
`-Q cashu,cashu.beat`); run dedicated workers per queue with `-Q` to separate them.

Callers: send to queue "cashu" (`send_task(name, kwargs=..., queue="cashu")`, or set
`task_default_queue = "cashu"` / a route for "cashu.*" in the calling app).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task, signals

from beat_schedule import make_beat_schedule
from models.db import dispose_engines
from nuts.client import close_mint_clients
from nuts.errors import CashuError
from tasks.config import Settings, get_settings

logger = logging.getLogger(__name__)

PUBLIC_QUEUE = "cashu"
BEAT_QUEUE = "cashu.beat"
TASK_MODULES = [
    "tasks.mints",
    "tasks.wallet",
    "tasks.mint",
    "tasks.ops",
    "tasks.recovery",
    "tasks.events",
]
TASK_ROUTES = {
    "cashu.beat.*": {"queue": BEAT_QUEUE},
    "cashu.events.*": {"queue": BEAT_QUEUE},
}
DELIVERY_KEY = "cashu:deliveries:"


class TooManyDeliveriesError(CashuError):
    """The task's message was delivered too many times (its worker kept dying): given up."""

    code = "TOO_MANY_DELIVERIES"


class CashuTask(Task):
    """Base of our tasks: typed errors are expected outcomes, and a redelivery cap.

    With late acks and reject-on-worker-lost, a message whose step kills its worker is
    redelivered; after `max_deliveries` it fails instead of looping forever. The
    operation itself stays where it is and recovery settles it.
    """

    throws = (CashuError,)  # logged without a traceback; the caller gets the typed error

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.id and not request.is_eager and request.delivery_info:
            _count_delivery(request.id, request.delivery_info)
        return super().__call__(*args, **kwargs)

    def after_return(self, status: str, retval: Any, task_id: str, *args: Any, **kw: Any) -> None:
        """The message is about to be acked: its delivery count is no longer needed."""
        if task_id and not self.request.is_eager and self.request.delivery_info:
            from tasks.redis_client import get_redis

            try:
                get_redis().delete(DELIVERY_KEY + task_id)
            except Exception:  # it expires by itself
                logger.debug("could not drop the delivery count of %s", task_id, exc_info=True)


def _count_delivery(task_id: str, delivery_info: dict[str, Any]) -> None:
    from tasks.redis_client import get_redis

    settings = get_settings()
    key = DELIVERY_KEY + task_id
    pipe = get_redis().pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, settings.visibility_timeout * (settings.max_deliveries + 1))
    deliveries = pipe.execute()[0]
    if deliveries > settings.max_deliveries:
        raise TooManyDeliveriesError(
            f"task {task_id} was delivered {deliveries} times; giving up "
            f"(max {settings.max_deliveries})"
        )


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings of the worker; a client sending our tasks can use them too."""
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "result_extended": True,
        "result_expires": 24 * 3600,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_track_started": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_default_queue": PUBLIC_QUEUE,
        "task_create_missing_queues": True,
        "task_routes": TASK_ROUTES,
        "worker_hijack_root_logger": True,
        "timezone": "UTC",
        "enable_utc": True,
    }


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery = Celery("cashu_worker", task_cls=CashuTask, include=TASK_MODULES)
    celery.conf.update(celery_config(settings))
    celery.conf.beat_schedule = make_beat_schedule(settings)
    return celery


app = make_app()


# --- worker lifecycle ------------------------------------------------------------------------


@signals.worker_init.connect
def _check_configuration(**_: Any) -> None:
    """Fail at startup, not at the first task, when the master mnemonic is missing or bad."""
    from tasks.config import MnemonicConfigError
    from tasks.context import get_master_mnemonic

    try:
        get_master_mnemonic()
    except MnemonicConfigError as exc:
        logger.critical("cannot start: %s", exc)
        raise SystemExit(1) from None


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """A forked child must not share its parent's database or Redis sockets."""
    from tasks.redis_client import reset_redis

    dispose_engines()
    reset_redis()
    # nuts.client rebuilds its MintClients when the pid changes; the parent's are not
    # closed here (closing a TLS socket from the child could talk on the parent's session).


@signals.worker_process_shutdown.connect
def _on_child_exit(**_: Any) -> None:
    close_mint_clients()


@signals.worker_ready.connect
def _recover_at_start(sender: Any = None, **_: Any) -> None:
    """Recovery at worker start: settle whatever a previous crash left open."""
    try:
        (sender.app if sender is not None else app).send_task(
            "cashu.recovery.run", queue=PUBLIC_QUEUE
        )
    except Exception:
        logger.exception("could not send the start-up recovery run")
