"""Start and stop a real Celery worker (`celery -A tasks worker`) for integration tests.

The worker runs as a subprocess in its own process group, from the repository root,
with the test database, a test Redis database and the test mnemonic:

    worker = start_worker(database_url=..., redis_url="redis://127.0.0.1:6379/15",
                          mnemonic=TEST_MNEMONIC)
    worker.client.send_task("cashu.mints.list").get(timeout=30)
    worker.kill_hard()   # SIGKILL the whole group: a crash mid-task
    worker.restart()     # same settings, a new worker
    worker.stop()

Its output goes to a log file under .test-mints/ (git-ignored); `worker.log_tail()`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from celery import Celery

REPO_ROOT = Path(__file__).resolve().parent.parent
CELERY_BIN = REPO_ROOT / ".venv" / "bin" / "celery"
LOG_DIR = REPO_ROOT / ".test-mints"  # git-ignored
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0

_RUNNING: set[RunningWorker] = set()


class WorkerStartError(RuntimeError):
    pass


def make_client(redis_url: str, database_url: str, broker_url: str | None = None) -> Celery:
    """A Celery app configured like the worker (broker, backend, JSON, routes), to send tasks.
    The broker is `broker_url`, else the Redis of `redis_url`."""
    from tasks.app import celery_config
    from tasks.config import Settings

    settings = Settings(redis_url=redis_url, database_url=database_url, broker_url=broker_url)
    client = Celery(f"cashu-test-client-{uuid.uuid4().hex[:6]}", set_as_current=False)
    client.conf.update(celery_config(settings))
    return client


class RunningWorker:
    """A `celery -A tasks worker` subprocess. Create with `start_worker()`."""

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        mnemonic: str,
        concurrency: int = 4,
        queues: str | None = "cashu,cashu.beat,cashu.lightning",  # None: the plain command
        env_overrides: dict[str, str | None] | None = None,
        pool: str = "prefork",
        broker_url: str | None = None,  # None: the Redis of redis_url
    ) -> None:
        self.pool = pool
        self.broker_url = broker_url
        self.database_url = database_url
        self.redis_url = redis_url
        self.mnemonic = mnemonic
        self.concurrency = concurrency
        self.queues = queues
        self.env_overrides = dict(env_overrides or {})
        self.hostname = f"cashu-test-{uuid.uuid4().hex[:8]}@%h"
        self.nodename: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        LOG_DIR.mkdir(exist_ok=True)
        self.log_path = LOG_DIR / f"celery-worker-{os.getpid()}-{uuid.uuid4().hex[:6]}.log"
        self.client = make_client(redis_url, database_url, broker_url)

    # --- lifecycle -----------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("WALLET_MNEMONIC_FILE", None)
        env.pop("BROKER_URL", None)
        if self.broker_url:
            env["BROKER_URL"] = self.broker_url
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "WALLET_MNEMONIC": self.mnemonic,
                "CASHU_ENV": "development",
                # Tests call the pollers right after an operation moved, as a beat tick could.
                "CASHU_POLL_MIN_AGE_SECONDS": "0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        for key, value in self.env_overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def command(self) -> list[str]:
        return [
            str(CELERY_BIN),
            "-A",
            "tasks",
            "worker",
            *(["-Q", self.queues] if self.queues else []),
            "-c",
            str(self.concurrency),
            "--pool",
            self.pool,
            "-l",
            "INFO",
            "-n",
            self.hostname,
            "--without-mingle",
            "--without-gossip",
        ]

    def start(self) -> RunningWorker:
        if self.running:
            raise WorkerStartError("worker already running")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        log.write(f"\n==== starting worker {self.hostname} ====\n".encode())
        log.flush()
        try:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=REPO_ROOT,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: kill_hard() kills it all
            )
        finally:
            log.close()
        _RUNNING.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.kill_hard()
            raise
        return self

    def _wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise WorkerStartError(
                    f"worker exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(Exception):
                replies = self.client.control.ping(timeout=1.0)
                for reply in replies:
                    for name in reply:
                        if name.startswith(self.hostname.split("@")[0] + "@"):
                            self.nodename = name
                            return
            time.sleep(0.2)
        raise WorkerStartError(f"worker did not answer ping in {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Warm shutdown (SIGTERM: running tasks finish), then SIGKILL whatever is left."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT)
        self._kill_group()

    def kill_hard(self) -> None:
        """SIGKILL the whole process group at once: a crash, nothing gets to clean up."""
        self._kill_group()

    def restart(self, env_overrides: dict[str, str | None] | None = None) -> RunningWorker:
        """Stop (if still running) and start a new worker with the same settings (+ overrides)."""
        self.stop()
        if env_overrides:
            self.env_overrides.update(env_overrides)
        return self.start()

    def _kill_group(self) -> None:
        proc = self.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        self.proc = None
        self.nodename = None
        _RUNNING.discard(self)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __repr__(self) -> str:
        pid = self.proc.pid if self.proc else None
        return f"RunningWorker({self.hostname!r}, pid={pid}, log={str(self.log_path)!r})"


def start_worker(**kwargs: object) -> RunningWorker:
    """Start a worker and wait until it answers a ping. Takes RunningWorker's keywords."""
    return RunningWorker(**kwargs).start()  # type: ignore[arg-type]


@atexit.register
def _stop_all() -> None:
    for worker in list(_RUNNING):
        worker.kill_hard()
