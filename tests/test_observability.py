"""Monitoring: the Prometheus collector over the operations table (tasks/metrics.py) and the
JSON log lines (tasks/log_format.py) with their task, operation and wallet, and no token."""

from __future__ import annotations

import io
import json
import logging
import socket
import urllib.request
import uuid
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta

import pytest
from celery import Celery, signals
from prometheus_client import generate_latest
from sqlalchemy import delete

from cashu_client.redaction import redact_text
from models import AuditRecord, Event, Operation
from models.db import unit_of_work
from tasks import log_format, metrics
from tasks.config import get_settings
from tasks.log_format import JsonFormatter, bind, current_context, log_context
from tasks.redaction import RedactingLogFilter

TOKEN = "cashuBo2FteBxodHRwOi8vMTI3LjAuMC4xOjMzMzhhdWNzYXRhdIGiYWlI" + "A" * 60


# --- metrics -----------------------------------------------------------------------------------


@pytest.fixture
def operations(database_url: str):
    """An empty operations table on the test database; add(kind, state, age_seconds)."""

    def clear() -> None:
        with unit_of_work(database_url) as session:
            session.execute(delete(Event))
            session.execute(delete(AuditRecord))
            session.execute(delete(Operation))

    def add(kind: str, state: str, age: float) -> None:
        created = datetime.now(UTC) - timedelta(seconds=age)
        with unit_of_work(database_url) as session:
            session.add(
                Operation(
                    wallet=f"obs-{uuid.uuid4().hex[:8]}",
                    kind=kind,
                    state=state,
                    mint_url="http://127.0.0.1:1",
                    amount=10,
                    data={},
                    created_at=created,
                    updated_at=created,
                )
            )

    clear()
    yield add
    clear()


def _sample(registry, name: str, kind: str | None = None, state: str | None = None):
    labels = {"kind": kind, "state": state} if kind else {}
    return registry.get_sample_value(name, labels)


def test_collector_counts_operations_and_ages_open_ones(database_url, operations):
    operations("mint", "pending", age=100)
    operations("mint", "pending", age=40)
    operations("melt", "executing", age=300)
    operations("melt", "finalized", age=5000)
    operations("send", "rolled_back", age=10)
    operations("receive", "prepared", age=20)

    registry = metrics.make_registry(database_url)
    count = "cashu_operations"
    age = "cashu_oldest_open_operation_age_seconds"

    assert _sample(registry, "cashu_metrics_scrape_success") == 1
    assert _sample(registry, count, "mint", "pending") == 2
    assert _sample(registry, count, "melt", "executing") == 1
    assert _sample(registry, count, "melt", "finalized") == 1
    assert _sample(registry, count, "send", "rolled_back") == 1
    assert _sample(registry, count, "receive", "prepared") == 1
    # every state a saga knows is reported, 0 when empty
    assert _sample(registry, count, "mint", "init") == 0
    assert _sample(registry, count, "send", "pending") == 0

    # the oldest of the open ones, from created_at
    assert 100 <= _sample(registry, age, "mint", "pending") < 130
    assert 300 <= _sample(registry, age, "melt", "executing") < 330
    assert 20 <= _sample(registry, age, "receive", "prepared") < 50
    # terminal states and empty states have no age
    assert _sample(registry, age, "melt", "finalized") is None
    assert _sample(registry, age, "send", "rolled_back") is None
    assert _sample(registry, age, "mint", "init") is None

    text = generate_latest(registry).decode()
    assert 'cashu_operations{kind="mint",state="pending"} 2.0' in text
    assert "# TYPE cashu_oldest_open_operation_age_seconds gauge" in text


def test_collector_reads_the_table_on_every_scrape(database_url, operations):
    registry = metrics.make_registry(database_url)
    assert _sample(registry, "cashu_operations", "send", "pending") == 0
    operations("send", "pending", age=1)
    assert _sample(registry, "cashu_operations", "send", "pending") == 1


def test_collector_survives_an_unreachable_database():
    registry = metrics.make_registry("postgresql+psycopg2://postgres@127.0.0.1:1/none")
    assert _sample(registry, "cashu_metrics_scrape_success") == 0
    assert _sample(registry, "cashu_operations", "mint", "pending") is None


def test_metrics_server_serves_the_gauges(database_url, operations, monkeypatch):
    operations("melt", "pending", age=60)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(metrics, "_server", None)
    server = metrics.start_metrics_server(port, "127.0.0.1", database_url)
    assert server is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            body = resp.read().decode()
        assert 'cashu_operations{kind="melt",state="pending"} 1.0' in body
        assert 'cashu_oldest_open_operation_age_seconds{kind="melt",state="pending"}' in body
        # a second call in the same process does not start another server
        assert metrics.start_metrics_server(port, "127.0.0.1", database_url) is server
    finally:
        server.shutdown()
        server.server_close()


# --- JSON logs ---------------------------------------------------------------------------------


def _json_logger(name: str) -> tuple[logging.Logger, io.StringIO]:
    """A logger set up like the worker's handlers: redaction filter, JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingLogFilter())
    handler.setFormatter(JsonFormatter(redact_text))
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_inside_a_task_carries_task_operation_and_wallet_and_no_token():
    logger, stream = _json_logger("test.obs.task")
    client = Celery("obs-test", set_as_current=False)
    operation_id = str(uuid.uuid4())

    @client.task(name="obs.test.step")
    def step(wallet: str, token: str, operation_id: str | None = None) -> str:
        logger.info("received %s", token)
        logger.info("raw " + token)
        try:
            raise ValueError(f"bad token {token}")
        except ValueError:
            logger.exception("failed")
        return "ok"

    # positional arguments are matched to the task's parameters too
    result = step.apply(args=["alice", TOKEN], kwargs={"operation_id": operation_id})
    assert result.get() == "ok"

    output = stream.getvalue()
    assert TOKEN not in output and TOKEN[:40] not in output
    lines = _lines(stream)
    assert len(lines) == 3
    for line in lines:
        assert line["task_id"] == result.id
        assert line["task_name"] == "obs.test.step"
        assert line["operation_id"] == operation_id
        assert line["wallet"] == "alice"
        assert line["logger"] == "test.obs.task"
        assert line["level"] in ("INFO", "ERROR")
        assert {"time", "process", "message"} <= set(line)
        datetime.fromisoformat(line["time"])
    assert lines[0]["message"].startswith("received <redacted ")
    assert lines[1]["message"].startswith("raw <redacted ")
    assert "ValueError: bad token <redacted " in lines[2]["exc"]
    # the task's context ends with the task
    assert current_context() == {}


def test_json_line_outside_a_task():
    logger, stream = _json_logger("test.obs.plain")
    logger.info("hello %s", "world")
    with log_context(operation_id="op-1", wallet="bob"):
        logger.warning("inside")
    logger.info("after")
    # a worker line about a task (Celery passes the task in record.data)
    logger.info("Task %s received", "x", extra={"data": {"id": "tid-1", "name": "cashu.x"}})

    first, inside, after, received = _lines(stream)
    assert first["message"] == "hello world" and first["level"] == "INFO"
    assert not {"task_id", "task_name", "operation_id", "wallet"} & set(first)
    assert inside["operation_id"] == "op-1" and inside["wallet"] == "bob"
    assert "operation_id" not in after
    assert received["task_id"] == "tid-1" and received["task_name"] == "cashu.x"


def test_bind_adds_to_the_current_context_only():
    bind(operation_id="ignored")  # no context open: nothing happens
    assert current_context() == {}
    with log_context(wallet="w"):
        bind(operation_id="op", wallet=None, other="dropped")
        assert current_context() == {"wallet": "w", "operation_id": "op"}
    assert current_context() == {}


def test_steps_bind_the_operation_and_its_wallet(monkeypatch):
    """run_locked_step names the operation before the step; run_step adds what it returned."""
    from tasks import steps

    seen: list[dict] = []
    monkeypatch.setattr(steps, "operation_lock", lambda operation_id, **_: nullcontext())
    monkeypatch.setattr(steps, "request_relay", lambda: None)
    monkeypatch.setattr(steps, "saga_context", lambda: None)

    def step(ctx, operation_id):
        seen.append(current_context())
        return {"id": operation_id, "wallet": "carol", "state": "finalized"}

    with log_context():
        steps.run_locked_step(step, "op-42")
        assert seen == [{"operation_id": "op-42"}]
        assert current_context() == {"operation_id": "op-42", "wallet": "carol"}

    def create(ctx, wallet, amount):
        return {"id": "op-new", "wallet": wallet}

    with log_context(wallet="dave"):
        steps.run_step(create, "dave", 5)
        assert current_context() == {"operation_id": "op-new", "wallet": "dave"}


def test_celery_logging_setup_switches_to_json_with_the_setting(monkeypatch):
    """CASHU_LOG_FORMAT=json: the handlers Celery sets up get the JSON formatter and keep the
    redaction filter; the default leaves Celery's formatter alone."""
    root = logging.getLogger()
    saved = root.handlers[:]

    def setup(fmt: str | None) -> logging.Handler:
        handler = logging.StreamHandler(io.StringIO())
        target = logging.getLogger(f"test.obs.setup.{fmt}")
        target.handlers = [handler]
        with monkeypatch.context() as m:
            if fmt is None:
                m.delenv("CASHU_LOG_FORMAT", raising=False)
            else:
                m.setenv("CASHU_LOG_FORMAT", fmt)
            get_settings.cache_clear()
            root.handlers = []  # pytest's handlers stay as they are
            try:
                signals.after_setup_logger.send(sender=None, logger=target, loglevel=20)
            finally:
                root.handlers = saved
                get_settings.cache_clear()
        return handler

    handler = setup("json")
    assert isinstance(handler.formatter, log_format.JsonFormatter)
    assert any(isinstance(f, RedactingLogFilter) for f in handler.filters)

    plain = setup(None)
    assert not isinstance(plain.formatter, log_format.JsonFormatter)
    assert any(isinstance(f, RedactingLogFilter) for f in plain.filters)
