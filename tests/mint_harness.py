"""Start and stop a real Nutshell mint (FakeWallet backend) for tests and benchmarks.

The mint runs from the separate `.venv-mint` (Nutshell 0.20.2, the default) or
`.venv-mint21` (0.21.0: `start_mint(version="0.21.0")`; docs/test-mint.md) as a
subprocess in its own process group, with a clean environment, a temporary working
directory and HOME (so no stray `.env` or `~/.cashu/.env` is read), a free port on
127.0.0.1 and its own SQLite directory.

    mint = start_mint(input_fee_ppk=100)
    ...  # talk to mint.url
    mint.restart({"FAKEWALLET_PAYMENT_STATE": "SETTLED"})  # same database, same keys
    mint.stop()
    start_mint(version="0.21.0")  # one of MINT_VERSIONS; mint.version, kept by restart()

Also: `make_invoice(amount_sat)` signs a bolt11 invoice the FakeWallet will "pay".
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import bolt11

REPO_ROOT = Path(__file__).resolve().parent.parent
MINT_VENV = REPO_ROOT / ".venv-mint"
MINT_BIN = MINT_VENV / "bin" / "mint"
# The Nutshell versions a test mint can run, each from its own venv (scripts/common.sh
# installs both); the first is the default.
MINT_VERSIONS = ("0.20.2", "0.21.0")
DEFAULT_MINT_VERSION = MINT_VERSIONS[0]
MINT_VENVS = {"0.20.2": MINT_VENV, "0.21.0": REPO_ROOT / ".venv-mint21"}
MINT_ROOT_DIR = REPO_ROOT / ".test-mints"  # git-ignored
# A usd keyset and usd quotes beside sat (the second index of a derivation path is its unit)
USD_SETTINGS = {
    "MINT_BACKEND_BOLT11_USD": "FakeWallet",
    "MINT_DERIVATION_PATH_LIST": "[\"m/0'/0'/0'\", \"m/0'/2'/0'\"]",
}
START_TIMEOUT = 30.0

_RUNNING: set[RunningMint] = set()


def mint_bin(version: str = DEFAULT_MINT_VERSION) -> Path:
    """The `mint` executable of a supported Nutshell version."""
    if version not in MINT_VENVS:
        raise ValueError(f"unsupported Nutshell version {version!r}: one of {MINT_VERSIONS}")
    return MINT_VENVS[version] / "bin" / "mint"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MintStartError(RuntimeError):
    pass


class RunningMint:
    """A Nutshell mint subprocess. Create with `start_mint()`."""

    def __init__(
        self,
        *,
        port: int,
        db_dir: Path,
        env_overrides: dict[str, str | None],
        input_fee_ppk: int,
        private_key: str,
        owns_db_dir: bool,
        version: str = DEFAULT_MINT_VERSION,
    ) -> None:
        self.port = port
        self.version = version  # the Nutshell version; restart() keeps it
        self.db_dir = db_dir
        self.env_overrides = dict(env_overrides)
        self.input_fee_ppk = input_fee_ppk
        self.private_key = private_key
        self.owns_db_dir = owns_db_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.db_dir / "mint.log"

    def env(self) -> dict[str, str]:
        home = self.db_dir / "cwd"
        env = {
            # a minimal, clean environment: nothing of the caller's leaks into the
            # mint's settings (Nutshell reads every env var matching a setting name)
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
            "PYTHONUNBUFFERED": "1",
            "MINT_BACKEND_BOLT11_SAT": "FakeWallet",
            "MINT_PRIVATE_KEY": self.private_key,
            "MINT_LISTEN_HOST": "127.0.0.1",
            "MINT_LISTEN_PORT": str(self.port),
            "MINT_DATABASE": str(self.db_dir),
            "MINT_AUTH_DATABASE": str(self.db_dir / "auth"),
            "MINT_INPUT_FEE_PPK": str(self.input_fee_ppk),
            "MINT_RATE_LIMIT": "FALSE",
            "FAKEWALLET_BRR": "TRUE",
            "FAKEWALLET_DELAY_INCOMING_PAYMENT": "0",
            "FAKEWALLET_DELAY_OUTGOING_PAYMENT": "0",
            "CASHU_DIR": str(home / ".cashu"),
            "TOR": "FALSE",
        }
        for key, value in self.env_overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        return env

    def _spawn(self) -> None:
        cwd = self.db_dir / "cwd"
        cwd.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        log.write(f"\n==== starting mint on port {self.port} ====\n".encode())
        log.flush()
        try:
            self.proc = subprocess.Popen(
                [str(mint_bin(self.version))],
                cwd=cwd,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() kills it all
            )
        finally:
            log.close()
        _RUNNING.add(self)

    def _wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        t0 = time.monotonic()
        deadline = t0 + timeout
        last_err: str = ""
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise MintStartError(
                    f"mint exited with code {self.proc.returncode} during startup\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(self.url + "/v1/info", timeout=2) as resp:
                    if resp.status == 200:
                        info = json.loads(resp.read())
                        self._check_version(info)
                        self.startup_seconds = time.monotonic() - t0
                        return
            except (OSError, urllib.error.URLError, ValueError) as e:
                last_err = str(e)
            time.sleep(0.1)
        self._kill()
        raise MintStartError(
            f"mint did not answer {self.url}/v1/info within {timeout:.0f}s "
            f"(last error: {last_err})\n" + self.log_tail()
        )

    def _check_version(self, info: dict) -> None:
        """/v1/info must name the Nutshell version this mint was started as."""
        if info.get("version") != f"Nutshell/{self.version}":
            self._kill()
            raise MintStartError(
                f"mint on {self.url} reports version {info.get('version')!r}, expected "
                f"'Nutshell/{self.version}' (reinstall its venv: bash scripts/test.sh)"
            )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no mint log)"
        return "---- mint log tail ----\n" + "\n".join(text.splitlines()[-lines:])

    def start(self) -> RunningMint:
        self._spawn()
        self._wait_ready()
        return self

    def _kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        else:
            # the leader is gone; make sure no child of its group lingers
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.proc = None
        _RUNNING.discard(self)

    def stop(self, *, remove_db: bool | None = None) -> None:
        """Stop the mint (the whole process group). Removes the db dir if the
        harness created it (override with remove_db)."""
        self._kill()
        if remove_db is None:
            remove_db = self.owns_db_dir
        if remove_db:
            shutil.rmtree(self.db_dir, ignore_errors=True)

    def restart(self, env_overrides: dict[str, str | None] | None = None) -> RunningMint:
        """Stop and start again on the same port, database and private key.

        `env_overrides` is merged into the current overrides (a value of None
        removes a variable), e.g. restart({"FAKEWALLET_PAYMENT_STATE": "SETTLED"}).
        """
        self._kill()
        if env_overrides:
            self.env_overrides.update(env_overrides)
        self._spawn()
        self._wait_ready()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> RunningMint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<RunningMint {self.version} {self.url} db={self.db_dir}>"


def start_mint(
    *,
    port: int | None = None,
    db_dir: str | os.PathLike[str] | None = None,
    env_overrides: dict[str, str | None] | None = None,
    input_fee_ppk: int = 100,
    private_key: str | None = None,
    version: str = DEFAULT_MINT_VERSION,
) -> RunningMint:
    """Start a Nutshell FakeWallet mint (`version`, one of MINT_VERSIONS) and wait until
    GET /v1/info answers with that version."""
    binary = mint_bin(version)
    if not binary.exists():
        raise MintStartError(
            f"{binary} not found: create {binary.parent.parent.name} (bash scripts/test.sh does it)"
        )
    owns = db_dir is None
    if db_dir is None:
        MINT_ROOT_DIR.mkdir(exist_ok=True)
        db_path = Path(tempfile.mkdtemp(prefix="mint-", dir=MINT_ROOT_DIR))
    else:
        db_path = Path(db_dir).resolve()
        db_path.mkdir(parents=True, exist_ok=True)
    key = private_key or f"cashu-worker-test-mint-{uuid.uuid4().hex}"
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        mint = RunningMint(
            port=port if port is not None else free_port(),
            db_dir=db_path,
            env_overrides=env_overrides or {},
            input_fee_ppk=input_fee_ppk,
            private_key=key,
            owns_db_dir=owns,
            version=version,
        )
        try:
            return mint.start()
        except MintStartError as e:
            mint._kill()
            # a free port may be taken between probing and binding: try another
            if attempt + 1 < attempts and "address already in use" in str(e).lower():
                continue
            raise  # the db dir (with mint.log) stays for post-mortem
    raise AssertionError("unreachable")


@atexit.register
def _stop_all() -> None:
    for mint in list(_RUNNING):
        with contextlib.suppress(Exception):
            mint._kill()


# ---------------------------------------------------------------- invoices

_INVOICE_KEY = hashlib.sha256(b"cashu-worker test invoice key").hexdigest()


def _invoice(
    amount_msat: int | None, expiry: int, payment_hash: str | None, network: str = "bc"
) -> str:
    tags = bolt11.Tags()
    tags.add(bolt11.TagChar.payment_hash, payment_hash or os.urandom(32).hex())
    tags.add(bolt11.TagChar.payment_secret, os.urandom(32).hex())
    tags.add(bolt11.TagChar.description, "cashu-worker test invoice")
    tags.add(bolt11.TagChar.expire_time, expiry)
    invoice = bolt11.Bolt11(
        currency=network,
        amount_msat=bolt11.MilliSatoshi(amount_msat) if amount_msat is not None else None,
        date=int(time.time()),
        tags=tags,
    )
    return bolt11.encode(invoice, _INVOICE_KEY)


def make_invoice(
    amount_sat: int,
    *,
    expiry: int = 3600,
    payment_hash: str | None = None,
    network: str = "bc",
) -> str:
    """A signed bolt11 invoice for `amount_sat` (random payment hash), mainnet unless
    `network` names another ("tb" testnet, "tbs" signet, "bcrt" regtest)."""
    return _invoice(amount_sat * 1000, expiry, payment_hash, network)


def make_invoice_without_amount(*, expiry: int = 3600) -> str:
    """A signed bolt11 invoice with no amount."""
    return _invoice(None, expiry, None)
