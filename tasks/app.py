"""The Celery app: JSON only, late acks, one message at a time per process, named queues.

Queues: every public task runs on "cashu"; the beat's periodic work and the event
relay run on "cashu.beat", so a backlog of one never starves the other; the melt's steps
after its write-ahead (the pre-swap, the pay step, which may wait on a Lightning payment,
and the polls) run on "cashu.lightning", so a burst of payments neither holds nor queues
before the workers everything else needs. All three are declared in
`task_queues`, so the plain `celery -A tasks worker` consumes them all; run dedicated
workers with `-Q cashu,cashu.beat` and `-Q cashu.lightning` to separate them.

Callers: send to queue "cashu" (`send_task(name, kwargs=..., queue="cashu")`, or set
`task_default_queue = "cashu"` / a route for "cashu.*" in the calling app). A task sent
without one goes to the caller's default queue ("celery"), which no worker of ours reads.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task, signals
from celery.app.amqp import AMQP
from celery.utils.saferepr import saferepr
from celery.worker.request import Request
from kombu import Queue

from beat_schedule import make_beat_schedule
from cashu_client.redaction import SECRET_KEYS, TOKEN_RE, mask, redact, redact_text
from models.db import dispose_engines
from nuts.client import close_mint_clients
from nuts.errors import CashuError
from sagas.errors import InvalidAmountError, InvalidRequestError, SagaError, Severity
from tasks import arguments, log_format
from tasks.config import Settings, get_settings

logger = logging.getLogger(__name__)

PUBLIC_QUEUE = "cashu"
BEAT_QUEUE = "cashu.beat"
LIGHTNING_QUEUE = "cashu.lightning"
TASK_MODULES = [
    "tasks.mints",
    "tasks.wallet",
    "tasks.mint",
    "tasks.melt",
    "tasks.send",
    "tasks.receive",
    "tasks.ops",
    "tasks.history",
    "tasks.recovery",
    "tasks.events",
]
TASK_ROUTES = {
    "cashu.beat.*": {"queue": BEAT_QUEUE},
    "cashu.events.*": {"queue": BEAT_QUEUE},
    # a melt's steps after its write-ahead: a burst of payments never queues before users' work
    "cashu.melt.step.*": {"queue": LIGHTNING_QUEUE},
}
DELIVERY_KEY = "cashu:deliveries:"


class TooManyDeliveriesError(SagaError):
    """The task's message was delivered too many times (its worker kept dying): given up."""

    code = "TOO_MANY_DELIVERIES"
    severity = Severity.CRITICAL  # the step keeps killing workers: a person must look


# --- secrets stay out of logs, events and inspect replies (docs/design.md rule 9) ----------------
#
# A Cashu token is bearer money. Celery shows a task's arguments and result in several
# places: the worker log ("Task ... succeeded in 0.1s: <result repr>"), the task events
# Flower displays (task-received carries the client's argsrepr/kwargsrepr, task-succeeded
# the result repr), `celery inspect active/reserved` (the raw arguments), and, with
# result_extended, the arguments stored next to the result. Everything below replaces
# tokens (and values under secret keys) with a placeholder there; the task itself still
# gets its real arguments and the caller its real result.


class Redacted:
    """A secret string in a task's result: JSON-encodes to the string itself (kombu calls
    __json__), but Celery's saferepr shows only a placeholder (it calls repr() on objects
    that are not str, dict, list...). Only ever inside results on their way to the backend."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __json__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return mask(self.value)


def _result_for_backend(value: Any, key: Any = None) -> Any:
    """The result with its secret strings wrapped in Redacted (same JSON, masked repr)."""
    if isinstance(value, str):
        if (key in SECRET_KEYS and value) or TOKEN_RE.search(value):
            return Redacted(value)
        return value
    if isinstance(value, dict):
        return {k: _result_for_backend(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_result_for_backend(v, key) for v in value]
    return value


class RedactingRequest(Request):
    """The worker's view of a received task, with its arguments' reprs redacted.

    argsrepr/kwargsrepr come from the *client* (task protocol 2 puts them in the message
    headers); the worker logs them (as extra data) and sends them in task-received events.
    They are recomputed here from the real arguments, redacted. `info()` (inspect
    active/reserved/scheduled) shows redacted arguments too, and every task event the
    request sends (task-succeeded's result, task-failed's exception) passes a last filter.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._argsrepr = saferepr(redact(self._args), 1024)
        self._kwargsrepr = saferepr(redact(self._kwargs), 1024)
        # what the pool child logs as the task's args (trace: LOG_SUCCESS / LOG_FAILURE)
        self._request_dict["argsrepr"] = self._argsrepr
        self._request_dict["kwargsrepr"] = self._kwargsrepr

    def info(self, safe: bool = False) -> dict[str, Any]:
        info = super().info(safe=safe)
        if not safe:
            info["args"], info["kwargs"] = redact(self._args), redact(self._kwargs)
        return info

    def send_event(self, type: str, **fields: Any) -> None:
        super().send_event(
            type, **{k: redact_text(v) if isinstance(v, str) else v for k, v in fields.items()}
        )


class RedactingAMQP(AMQP):
    """Messages this app sends carry redacted argsrepr/kwargsrepr (headers and task-sent
    events), unless the caller passes its own. A client app can use it too:
    `Celery(..., amqp="tasks.app:RedactingAMQP")`."""

    def as_task_v2(
        self,
        task_id: str,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        *rest: Any,
        **options: Any,
    ) -> Any:  # noqa: E501
        if options.get("argsrepr") is None:
            options["argsrepr"] = saferepr(redact(args or ()), self.argsrepr_maxsize)
        if options.get("kwargsrepr") is None:
            options["kwargsrepr"] = saferepr(redact(kwargs or {}), self.kwargsrepr_maxsize)
        return super().as_task_v2(task_id, name, args, kwargs, *rest, **options)


class RedactingLogFilter(logging.Filter):
    """Last line of defence on every log handler: no token text reaches a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        if isinstance(record.args, dict):
            record.args = {k: _redact_log_arg(v) for k, v in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_redact_log_arg(v) for v in record.args)
        data = getattr(record, "data", None)
        if isinstance(data, dict):  # Celery's structured copy of the task log fields
            record.data = redact(data)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True


QUIET_TASKS = ("cashu.beat.", "cashu.events.")  # the beat's ticks and the event relay


class QuietTicksFilter(logging.Filter):
    """An idle system is quiet: the beat sending its ticks, and a worker receiving and
    finishing them, log at INFO only when Celery's logging is at DEBUG. A tick that moved
    something says so in its own line (tasks/recovery.py); a failed one logs as an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not _about_a_tick(record):
            return True
        return logging.getLogger("celery").isEnabledFor(logging.DEBUG)


def _about_a_tick(record: logging.LogRecord) -> bool:
    data = getattr(record, "data", None)  # the worker's received / succeeded lines
    names = [data.get("name")] if isinstance(data, dict) else []
    if isinstance(record.args, tuple):  # beat: "Scheduler: Sending due task %s (%s)"
        names += record.args
    return any(isinstance(n, str) and n.startswith(QUIET_TASKS) for n in names)


def _redact_log_arg(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (dict, list, tuple)):
        return redact(value)
    return value


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _redact_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    for target in (logger, logging.getLogger()):
        for handler in getattr(target, "handlers", ()):
            if not any(isinstance(f, RedactingLogFilter) for f in handler.filters):
                handler.addFilter(RedactingLogFilter())
                handler.addFilter(QuietTicksFilter())


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _json_logs(logger: logging.Logger | None = None, **_: Any) -> None:
    """CASHU_LOG_FORMAT=json: one JSON object per line (tasks/log_format.py). The handlers
    keep their RedactingLogFilter; the formatter redacts its output once more."""
    if get_settings().log_format == "json":
        log_format.use_json((logger, logging.getLogger()), redact=redact_text)


# operation_id / wallet of the task at hand, for the JSON log lines
signals.task_prerun.connect(log_format.open_task_context)
signals.task_postrun.connect(log_format.close_task_context)


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
            if _redelivered(request.delivery_info):  # a first delivery needs no count
                try:
                    _count_delivery(request.id)
                except TooManyDeliveriesError as exc:
                    _mark_operation(kwargs.get("operation_id"), exc)
                    raise
            # result_extended stores the request's args next to the result: redacted there
            # (the task below still gets the real ones).
            request.args, request.kwargs = redact(list(args)), redact(kwargs)
        result = super().__call__(*args, **kwargs)
        # In a worker the result goes to the backend as JSON and into the log and the
        # task-succeeded event as a repr: Redacted keeps its secrets out of the repr only.
        return _result_for_backend(result) if in_worker else result

    def after_return(self, status: str, retval: Any, task_id: str, *args: Any, **kw: Any) -> None:
        """The result is out and the message about to be acked: relay the step's events
        (the caller is not waiting for them), drop a redelivered message's count."""
        request = self.request
        if getattr(request, "relay_events", False):
            from tasks.events import relay_after_task

            relay_after_task()
        if task_id and not request.is_eager and _redelivered(request.delivery_info):
            from tasks.redis_client import get_redis

            try:
                get_redis().delete(DELIVERY_KEY + task_id)
            except Exception:  # it expires by itself
                logger.debug("could not drop the delivery count of %s", task_id, exc_info=True)


def _mark_operation(operation_id: object, error: TooManyDeliveriesError) -> None:
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


def _redelivered(delivery_info: dict[str, Any] | None) -> bool:
    """The broker marks a message it puts back as redelivered: Redis after the visibility
    timeout, RabbitMQ when the connection of the worker that had it closed."""
    return bool(delivery_info and delivery_info.get("redelivered"))


def _count_delivery(task_id: str) -> None:
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


def _keep_running_when_redis_dies() -> None:
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


_keep_running_when_redis_dies()


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
        "task_track_started": settings.task_events,
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


# --- worker lifecycle ------------------------------------------------------------------------


@signals.worker_init.connect
@signals.beat_init.connect
def _check_configuration(**_: Any) -> None:
    """Fail at startup, not at the first task, when the master mnemonic is missing or bad,
    or is not the one the database's wallets derive from. A database that does not answer
    yet is no reason not to start: each process checks again before its first step."""
    from sqlalchemy.exc import OperationalError

    from sagas.errors import SeedMismatchError
    from tasks.config import MnemonicConfigError
    from tasks.context import check_master_seed

    try:
        check_master_seed()
    except (MnemonicConfigError, SeedMismatchError) as exc:
        logger.critical("cannot start: %s", exc)
        raise SystemExit(1) from None
    except OperationalError as exc:
        logger.warning("master seed not checked yet (database: %s)", type(exc).__name__)


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


@signals.worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    """CASHU_METRICS_PORT set: Prometheus metrics from the worker's main process."""
    settings = get_settings()
    if settings.metrics_port:
        from tasks.metrics import start_metrics_server

        start_metrics_server(settings.metrics_port, settings.metrics_addr, settings.database_url)
