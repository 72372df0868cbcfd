"""A redis-server of a test's own, on a free port and without persistence, so that a test
can SIGKILL it and start it again (empty) without touching the machine's shared Redis.

    server = RedisServer().start()
    server.url(13)     # redis://127.0.0.1:<port>/13
    server.kill()      # SIGKILL: nothing saved, nobody told
    server.start()     # the same port, empty
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import redis
from mint_harness import MINT_ROOT_DIR, free_port

LOG_DIR = MINT_ROOT_DIR  # .test-mints/, git-ignored


class RedisServer:
    """A redis-server of the harness's own (no persistence), so it can be killed."""

    def __init__(self) -> None:
        self.port = free_port()
        LOG_DIR.mkdir(exist_ok=True)
        self.log_path = LOG_DIR / f"redis-{os.getpid()}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(LOG_DIR),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        probe = redis.Redis(port=self.port, socket_connect_timeout=1)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            with contextlib.suppress(redis.RedisError):
                if probe.ping():
                    probe.close()
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        """SIGKILL (-9) its process group: nothing is saved, nothing is said goodbye."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.proc = None
