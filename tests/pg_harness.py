"""A private PostgreSQL cluster for tests that crash their database.

    pg = PrivatePostgres().start()   # initdb (first time) into a temp dir, pg_ctl start
    pg.url("cashu_worker_chaos")     # postgresql+psycopg2://postgres@127.0.0.1:<port>/...
    pg.crash()                       # pg_ctl stop -m immediate: no shutdown checkpoint
    pg.start()                       # the same data directory and port: crash recovery
    pg.stop()                        # a clean stop
    pg.cleanup()                     # stop, and remove the data directory

The cluster lives in a fresh directory under the system's temp dir (the postgres user
must reach it), on a free port of 127.0.0.1, with trust authentication for the
`postgres` role and its unix socket in its own directory (never the shared server's).
PostgreSQL refuses to run as root, so as root initdb and pg_ctl run as the `postgres`
OS user (`runuser -u postgres`), which then owns the directory. The binaries are the
newest /usr/lib/postgresql/*/bin (PG_BINDIR overrides). Its log is `log_path`; a cluster
still running at exit is stopped.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from mint_harness import free_port

OS_USER = "postgres"
START_TIMEOUT = 60

_RUNNING: set[PrivatePostgres] = set()


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: PG_BINDIR, else the newest /usr/lib/postgresql/N/bin."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def available() -> bool:
    """initdb is installed, and (as root) there is a `postgres` OS user to run it as."""
    if postgres_bindir() is None:
        return False
    if os.geteuid() != 0:
        return True
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(OS_USER) is not None
    return False


class PrivatePostgres:
    """A PostgreSQL cluster of the caller's own, that it may crash and start again."""

    def __init__(self, root: Path | None = None) -> None:
        # The system's temp dir, not the checkout: the postgres user must reach the data
        # directory, and a checkout may sit under a directory only root can enter.
        root = root or Path(tempfile.gettempdir())
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL binaries (set PG_BINDIR)")
        self.bindir = bindir
        self.port = free_port()
        root.mkdir(exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="pg-", dir=root))
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self._as_user = os.geteuid() == 0
        if self._as_user:
            user = pwd.getpwnam(OS_USER)
            os.chown(self.dir, user.pw_uid, user.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float = START_TIMEOUT) -> None:
        command = [str(self.bindir / tool), *args]
        if self._as_user:
            command = ["runuser", "-u", OS_USER, "--", *command]
        done = subprocess.run(
            command,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def start(self) -> PrivatePostgres:
        """initdb the first time, then start (after a crash: the server recovers first)."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir}"
        self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT),
        )
        _RUNNING.add(self)
        return self

    def crash(self) -> None:
        """Stop at once, as a crash would: every backend killed, no checkpoint."""
        self._stop("immediate")

    def stop(self) -> None:
        self._stop("fast")

    def _stop(self, mode: str) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w")
        _RUNNING.discard(self)

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<PrivatePostgres port={self.port} dir={self.dir}>"


@atexit.register
def _stop_all() -> None:
    for cluster in list(_RUNNING):
        with contextlib.suppress(Exception):
            cluster.stop()
