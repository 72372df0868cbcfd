"""Secrets stay out of logs, events and inspect replies.

A Cashu token is bearer money. Celery shows a task's arguments and result in several
places: the worker log ("Task ... succeeded in 0.1s: <result repr>"), the task events
Flower displays (task-received carries the client's argsrepr/kwargsrepr, task-succeeded
the result repr), `celery inspect active/reserved` (the raw arguments), and, with
result_extended, the arguments stored next to the result. Everything here replaces
tokens (and values under secret keys) with a placeholder there; the task itself still
gets its real arguments and the caller its real result. What is a secret, and its mask,
is cashu_client/redaction.py (the client masks the same way).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.app.amqp import AMQP
from celery.utils.saferepr import saferepr
from celery.worker.request import Request

from cashu_client.redaction import SECRET_KEYS, TOKEN_RE, mask, redact, redact_text


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


def result_for_backend(value: Any, key: Any = None) -> Any:
    """The result with its secret strings wrapped in Redacted (same JSON, masked repr)."""
    if isinstance(value, str):
        if (key in SECRET_KEYS and value) or TOKEN_RE.search(value):
            return Redacted(value)
        return value
    if isinstance(value, dict):
        return {k: result_for_backend(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [result_for_backend(v, key) for v in value]
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
    `Celery(..., amqp="tasks.redaction:RedactingAMQP")`."""

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


def _redact_log_arg(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (dict, list, tuple)):
        return redact(value)
    return value
