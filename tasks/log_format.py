"""Structured logs: one JSON object per line (CASHU_LOG_FORMAT=json; the default is Celery's
plain text).

Each line carries time, level, logger, process and message, plus what is known of the work
at hand: task_id and task_name (Celery's current task, or the task a worker log line is
about), operation_id and wallet (the log context below). Exceptions go in "exc". Record
extras are never dumped: only these fields, so nothing a caller passed along leaks.

The log context is a contextvar holding a dict per task: opened at task_prerun with the
task's own `wallet` and `operation_id` arguments (when it has them), added to by the saga
step layer (tasks/steps.py: the operation a step works on or created), closed at
task_postrun, after Celery logged the task's outcome.

Token redaction (tasks/redaction.py: RedactingLogFilter on every handler) runs before any
formatter; JsonFormatter applies its `redact` function to the message and the exception
text once more, as the last step before the line is written.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from celery import signals

from cashu_client.redaction import redact_text
from tasks.config import get_settings
from tasks.redaction import RedactingLogFilter

CONTEXT_KEYS = ("operation_id", "wallet")
_context: ContextVar[dict[str, str] | None] = ContextVar("cashu_log_context", default=None)
_task_tokens: dict[str, Token[dict[str, str] | None]] = {}


def _clean(fields: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in fields.items() if k in CONTEXT_KEYS and v not in (None, "")}


def current_context() -> dict[str, str]:
    """operation_id / wallet of the work at hand (a copy; empty outside any context)."""
    return dict(_context.get() or {})


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """A nested log context: the current fields plus these, until the block ends."""
    token = _context.set({**(_context.get() or {}), **_clean(fields)})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: Any) -> None:
    """Add operation_id / wallet to the current log context (a task's, opened at
    task_prerun) for the rest of it. Outside any context, does nothing."""
    current = _context.get()
    if current is not None:
        current.update(_clean(fields))


# --- the task's context: opened at task_prerun, closed at task_postrun -------------------------


@lru_cache(maxsize=512)
def task_signature(func: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def _context_arguments(task: Any, args: Any, kwargs: Any) -> dict[str, Any]:
    """The task's own `wallet` / `operation_id` arguments, however they were passed."""
    found = {k: kwargs[k] for k in CONTEXT_KEYS if isinstance(kwargs, dict) and k in kwargs}
    if args and len(found) < len(CONTEXT_KEYS):
        signature = task_signature(getattr(task, "run", task))
        if signature is not None:
            try:
                bound = signature.bind_partial(*args, **(kwargs or {}))
            except TypeError:
                return found
            found.update({k: bound.arguments[k] for k in CONTEXT_KEYS if k in bound.arguments})
    return {k: v for k, v in found.items() if isinstance(v, str)}


def open_task_context(
    task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None, **_: Any
) -> None:
    """task_prerun receiver."""
    fields = _clean(_context_arguments(task, args, kwargs)) if task is not None else {}
    token = _context.set(fields)
    if task_id:
        _task_tokens[task_id] = token


def close_task_context(task_id: str | None = None, **_: Any) -> None:
    """task_postrun receiver."""
    token = _task_tokens.pop(task_id, None) if task_id else None
    if token is not None:
        try:
            _context.reset(token)
        except ValueError:  # set in another context (should not happen): just clear it
            _context.set(None)


# --- the formatter ---------------------------------------------------------------------------


def _current_task() -> Any:
    try:
        from celery._state import get_current_task
    except ImportError:  # pragma: no cover
        return None
    return get_current_task()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, message, and task_id,
    task_name, operation_id, wallet when known; exc when there is an exception."""

    def __init__(self, redact: Callable[[str], str] | None = None) -> None:
        super().__init__()
        self.redact = redact or (lambda text: text)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": self.redact(record.getMessage()),
        }
        task = _current_task()
        request = getattr(task, "request", None) if task is not None else None
        task_id = getattr(request, "id", None)
        task_name = getattr(task, "name", None) if task_id else None
        data = getattr(record, "data", None)  # Celery's fields of a log line about a task
        if not task_id and isinstance(data, dict):
            task_id, task_name = data.get("id"), data.get("name")
        if task_id:
            entry["task_id"] = str(task_id)
        if task_name:
            entry["task_name"] = str(task_name)
        entry.update(current_context())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = self.redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = self.redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def use_json(
    loggers: Iterator[logging.Logger] | tuple[logging.Logger | None, ...],
    redact: Callable[[str], str] | None = None,
) -> None:
    """Put a JsonFormatter on every handler of these loggers."""
    for target in loggers:
        for handler in getattr(target, "handlers", ()):
            if not isinstance(handler.formatter, JsonFormatter):
                handler.setFormatter(JsonFormatter(redact))


# --- the worker's log handlers: redacted, quiet when idle, JSON when asked -------------------

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
        use_json((logger, logging.getLogger()), redact=redact_text)


# operation_id / wallet of the task at hand, for the JSON log lines
signals.task_prerun.connect(open_task_context)
signals.task_postrun.connect(close_task_context)
