"""The run command (scripts/run.sh) end to end: from an empty database to a worker answering a
balance query, Flower listing the task, Prometheus metrics and JSON log lines; then Ctrl-C
stops every process it started.

run.sh runs in its own session with its own database (cashu_worker_runtest, dropped first so
run.sh creates and migrates it), Redis db 10, a temporary run directory and free ports.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import redis
from celery import Celery
from db_harness import TEST_MNEMONIC as MNEMONIC
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO_ROOT = Path(__file__).resolve().parent.parent
DATABASE = "cashu_worker_runtest"
REDIS_DB = 10
READY_WITHIN = 90.0  # bounded wait for the first balance answer
STOP_WITHIN = 45.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _urls() -> tuple[str, str]:
    base = os.environ.get(
        "TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/cashu_worker_test"
    )
    database_url = make_url(base).set(database=DATABASE).render_as_string(hide_password=False)
    return database_url, f"redis://127.0.0.1:6379/{REDIS_DB}"


def _drop_database(database_url: str) -> None:
    admin = create_engine(
        make_url(database_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _session_pids(sid: int) -> list[int]:
    """Every live process in session `sid` (run.sh and whatever it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            pids.append(int(entry.name))
    return pids


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read()


def _flower_tasks(port: int) -> list[dict]:
    """What Flower's tasks page shows (the page loads it from /tasks/datatable)."""
    query = urllib.parse.urlencode(
        {
            "draw": 1,
            "start": 0,
            "length": 100,
            "search[value]": "",
            "order[0][column]": 0,
            "order[0][dir]": "desc",
            "columns[0][data]": "received",
        }
    )
    _, body = _get(f"http://127.0.0.1:{port}/tasks/datatable?{query}")
    return json.loads(body)["data"]


class RunCommand:
    def __init__(self, tmp_path: Path) -> None:
        self.database_url, self.redis_url = _urls()
        self.flower_port = _free_port()
        self.metrics_port = _free_port()
        self.log_path = tmp_path / "run.log"
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("WALLET_MNEMONIC_FILE", "CASHU_ENV")
        }
        self.env.update(
            {
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "FLOWER_PORT": str(self.flower_port),
                "RUN_DIR": str(tmp_path / "run"),
                "WALLET_MNEMONIC": MNEMONIC,
                "CASHU_LOG_FORMAT": "json",
                "CASHU_METRICS_PORT": str(self.metrics_port),
                "STOP_TIMEOUT": "20",
            }
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["bash", "scripts/run.sh"],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session and process group, like a terminal
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def check_running(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"run.sh exited with {self.proc.returncode}:\n{self.tail()}")

    def kill_leftovers(self) -> None:
        """Last resort: SIGKILL whatever is left in run.sh's session (all started by it)."""
        if self.proc is None:
            return
        for pid in _session_pids(self.proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@pytest.fixture
def run_command(tmp_path: Path):
    run = RunCommand(tmp_path)
    _drop_database(run.database_url)
    redis.Redis.from_url(run.redis_url).flushdb()
    try:
        yield run
    finally:
        run.kill_leftovers()
        with contextlib.suppress(Exception):
            redis.Redis.from_url(run.redis_url).flushdb()


def _client(run: RunCommand) -> Celery:
    from tasks.app import celery_config
    from tasks.config import Settings

    client = Celery("run-command-test", set_as_current=False)
    client.conf.update(
        celery_config(Settings(redis_url=run.redis_url, database_url=run.database_url))
    )
    return client


def _wait(predicate, timeout: float, run: RunCommand, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        run.check_running()
        try:
            value = predicate()
        except Exception as exc:  # not up yet
            last = exc
        else:
            if value:
                return value
            last = value
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout:.0f}s (last: {last!r})\n{run.tail()}")


def _first_balance(run: RunCommand, client: Celery) -> tuple[str, dict]:
    """Wait until a balance query answers: database created and migrated, worker consuming."""

    def balance() -> tuple[str, dict] | None:
        result = client.send_task("cashu.wallet.balance", kwargs={"wallet": "runtest"})
        try:
            return result.id, result.get(timeout=5)
        except Exception:
            result.forget()
            raise

    return _wait(balance, READY_WITHIN, run, "balance query")


def _ctrl_c(run: RunCommand) -> None:
    """SIGINT to run.sh's process group (what Ctrl-C in its terminal does); all must stop."""
    assert run.proc is not None
    os.killpg(run.proc.pid, signal.SIGINT)
    try:
        code = run.proc.wait(timeout=STOP_WITHIN)
    except subprocess.TimeoutExpired:
        pytest.fail(f"run.sh did not stop within {STOP_WITHIN:.0f}s:\n{run.tail()}")
    assert code == 0, run.tail()
    deadline = time.monotonic() + 10
    while _session_pids(run.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _session_pids(run.proc.pid) == [], run.tail()
    assert "SIGKILL" not in run.log(), run.tail()


def test_run_command_serves_flower_metrics_and_stops_on_ctrl_c(run_command: RunCommand):
    run = run_command
    client = _client(run)
    t0 = time.monotonic()
    run.start()

    # 1. a balance query answers
    task_id, answer = _first_balance(run, client)
    elapsed = time.monotonic() - t0
    assert answer["total"] == 0 and answer["unit"] == "sat", answer
    assert elapsed < 60, f"first balance answer after {elapsed:.1f}s"

    # 2. Flower: its page answers and lists a balance task (from the worker's events: off
    #    by default, Flower turns them on once it is up)
    status, page = _get(f"http://127.0.0.1:{run.flower_port}/tasks")
    assert status == 200 and b"Tasks" in page
    sent = {task_id}

    def listed_by_flower() -> list[dict]:
        # A task received before Flower turned events on shows up nameless (Flower saw
        # only its end): wait for one it saw from the start.
        listed = [
            t
            for t in _flower_tasks(run.flower_port)
            if t["uuid"] in sent and t["state"] == "SUCCESS" and t["name"]
        ]
        if not listed:
            sent.add(client.send_task("cashu.wallet.balance", kwargs={"wallet": "runtest"}).id)
        return listed

    listed = _wait(listed_by_flower, 30, run, "Flower listing a balance task")
    assert listed[0]["name"] == "cashu.wallet.balance"
    assert listed[0]["state"] == "SUCCESS"

    # 3. Prometheus metrics from the worker's main process
    _, body = _wait(
        lambda: _get(f"http://127.0.0.1:{run.metrics_port}/metrics"), 20, run, "metrics"
    )
    metrics_text = body.decode()
    assert 'cashu_operations{kind="mint",state="pending"} 0.0' in metrics_text
    assert "cashu_metrics_scrape_success 1.0" in metrics_text

    # 4. JSON log lines, prefixed per process by run.sh
    def logged() -> list[dict]:
        lines = []
        for line in run.log().splitlines():
            prefix, _, rest = line.partition(" | ")
            if prefix.strip() == "worker" and rest.startswith("{"):
                entry = json.loads(rest)
                if entry.get("task_id") == task_id:
                    lines.append(entry)
        return [e for e in lines if "succeeded" in e["message"]]

    (succeeded,) = _wait(logged, 10, run, "the task's JSON log line")
    assert succeeded["task_name"] == "cashu.wallet.balance"
    assert succeeded["wallet"] == "runtest"
    assert succeeded["process"].startswith("ForkPoolWorker")
    log = run.log()
    prefixes = {line.partition(" | ")[0].strip() for line in log.splitlines() if " | " in line}
    assert {"worker", "lightning", "beat", "flower"} <= prefixes, prefixes
    # quiet by default: the beat's ticks, sent every few seconds meanwhile, log nothing
    ticks = [
        line
        for line in log.splitlines()
        if "Sending due task" in line or "cashu.beat." in line and "Task " in line
    ]
    assert ticks == [], ticks[:5]

    # 5. Ctrl-C: everything stops
    assert run.proc is not None
    before = _session_pids(run.proc.pid)
    assert len(before) >= 7, before  # run.sh, 3 commands + 3 prefixers, pool children
    _ctrl_c(run)
    assert "Warm shutdown" in run.log()
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{run.flower_port}/tasks", timeout=2)


@pytest.mark.mint
def test_demo_walks_mint_send_receive_melt_through_the_running_worker(run_command: RunCommand):
    run = run_command
    run.start()
    _first_balance(run, _client(run))

    demo = subprocess.run(
        [sys.executable, "scripts/demo.py"],
        cwd=REPO_ROOT,
        env=run.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = demo.stdout
    assert demo.returncode == 0, f"{out}\n{demo.stderr}\n{run.tail()}"
    for task in ("mint.execute", "send.execute", "receive.redeem", "melt.execute"):
        assert f"cashu.{task}(" in out, out
    assert "cashu.mint.execute(operation_id=" in out and "-> finalized" in out
    assert "minted 1000 sat" in out and "received 99 sat" in out
    assert "send " in out and ": finalized" in out  # the beat's watcher finalized it
    # alice: 1000 - 100 - 1 (send fee) - 200 - melt fees; bob: 100 - 1
    assert "spendable    99" in out
    assert "cashuB" not in out.replace("token cashuB...", "")  # the token is never printed
    _ctrl_c(run)
