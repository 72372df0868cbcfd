"""The Celery app: JSON only, late acks, one message at a time per process, named queues
(tasks/queues.py), and the base class of our tasks.

All three queues are declared in `task_queues`, so the plain `celery -A tasks worker`
consumes them all; run dedicated workers with `-Q cashu,cashu.beat` and
`-Q cashu.lightning` to separate them.

Callers: send to queue "cashu" (`send_task(name, kwargs=..., queue="cashu")`, or set
`task_default_queue = "cashu"` / a route for "cashu.*" in the calling app). A task sent
without one goes to the caller's default queue ("celery"), which no worker of ours reads.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from kombu import Queue

from beat_schedule import make_beat_schedule
from cashu_client.redaction import redact
from nuts.errors import CashuError
from sagas.errors import InvalidAmountError, InvalidRequestError
from tasks import arguments
from tasks.config import Settings, get_settings
from tasks.deliveries import (
    TooManyDeliveriesError,
    count_delivery,
    forget_deliveries,
    mark_operation,
    redelivered,
)
from tasks.kombu_redis import keep_running_when_redis_dies
from tasks.log_format import QUIET_TASKS
from tasks.queues import BEAT_QUEUE, LIGHTNING_QUEUE, PUBLIC_QUEUE, TASK_MODULES, TASK_ROUTES
from tasks.redaction import RedactingAMQP, RedactingRequest, result_for_backend

__all__ = ["BEAT_QUEUE", "LIGHTNING_QUEUE", "PUBLIC_QUEUE", "TooManyDeliveriesError", "app"]

keep_running_when_redis_dies()


class CashuTask(Task):
    """Base of our tasks: typed errors are expected outcomes, a redelivery cap, and no
    secret in what Celery shows of a task (see RedactingRequest, Redacted).

    With late acks and reject-on-worker-lost, a message whose step kills its worker is
    redelivered; after `max_deliveries` it fails instead of looping forever. The
    operation itself stays where it is and recovery settles it.
    """

    throws = (CashuError,)  # logged without a traceback; the caller gets the typed error
    Request = RedactingRequest

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The beat's ticks and the relay send no task events: Flower (and any event
        # consumer) shows the users' own tasks, not a tick every two seconds.
        super().__init_subclass__(**kwargs)
        if str(getattr(cls, "name", "") or "").startswith(QUIET_TASKS):
            cls.send_events = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        in_worker = bool(request.id and not request.is_eager and request.delivery_info)
        try:
            return self._call(in_worker, *args, **kwargs)
        except (InvalidRequestError, InvalidAmountError):
            if in_worker:  # a step of a chain refused its arguments: see steps.py
                from tasks.steps import cancel_what_a_chain_prepared

                cancel_what_a_chain_prepared(args, kwargs)
            raise

    def _call(self, in_worker: bool, *args: Any, **kwargs: Any) -> Any:
        # Unknown, missing or surplus arguments: InvalidRequestError naming the argument,
        # before anything runs (each task checks its arguments' values: tasks/arguments.py).
        arguments.check_call(self.name, self.run, args, kwargs)
        request = self.request
        if in_worker:
            if redelivered(request.delivery_info):  # a first delivery needs no count
                try:
                    count_delivery(request.id)
                except TooManyDeliveriesError as exc:
                    mark_operation(kwargs.get("operation_id"), exc)
                    raise
            # result_extended stores the request's args next to the result: redacted there
            # (the task below still gets the real ones).
            request.args, request.kwargs = redact(list(args)), redact(kwargs)
        result = super().__call__(*args, **kwargs)
        # In a worker the result goes to the backend as JSON and into the log and the
        # task-succeeded event as a repr: Redacted keeps its secrets out of the repr only.
        return result_for_backend(result) if in_worker else result

    def after_return(self, status: str, retval: Any, task_id: str, *args: Any, **kw: Any) -> None:
        """The result is out and the message about to be acked: drop a redelivered
        message's count."""
        request = self.request
        if task_id and not request.is_eager and redelivered(request.delivery_info):
            forget_deliveries(task_id)


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings of the worker; a client sending our tasks can use them too."""
    return {
        "broker_url": settings.broker,
        "result_backend": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        # Redis puts back a message unacknowledged this long (its worker died); RabbitMQ
        # puts it back when the worker's connection closes, and needs no such setting.
        "broker_transport_options": (
            {"visibility_timeout": settings.visibility_timeout} if settings.broker_is_redis else {}
        ),
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
        "task_track_started": settings.task_track_started,
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "task_default_queue": PUBLIC_QUEUE,
        # what a worker started without -Q consumes: every queue the system needs
        "task_queues": (Queue(PUBLIC_QUEUE), Queue(BEAT_QUEUE), Queue(LIGHTNING_QUEUE)),
        "task_create_missing_queues": True,
        "task_routes": TASK_ROUTES,
        "worker_hijack_root_logger": True,
        "timezone": "UTC",
        "enable_utc": True,
    }


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery = Celery("cashu_worker", task_cls=CashuTask, amqp=RedactingAMQP, include=TASK_MODULES)
    celery.conf.update(celery_config(settings))
    celery.conf.beat_schedule = make_beat_schedule(settings)
    return celery


app = make_app()


# the worker's signal receivers (lifecycle, logging) connect when these are imported
from tasks import lifecycle, log_format  # noqa: E402, F401
