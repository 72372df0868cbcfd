"""Configuration from the environment (pydantic-settings) and the master mnemonic.

Connection settings use their usual names (DATABASE_URL, REDIS_URL, BROKER_URL,
WALLET_MNEMONIC, WALLET_MNEMONIC_FILE, CASHU_ENV); the tuning knobs take the
CASHU_ prefix: CASHU_MINT_TIMEOUT, CASHU_TASK_TIME_LIMIT,
CASHU_POLL_MINT_QUOTES_SECONDS, ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal

from mnemonic import Mnemonic
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.db import DEFAULT_DATABASE_URL
from nuts.secrets import InvalidMnemonicError, validate_mnemonic

logger = logging.getLogger(__name__)

DEV_MNEMONIC_FILE = "wallet-mnemonic.txt"  # in the working directory; git-ignored


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CASHU_", extra="ignore", populate_by_name=True, frozen=True
    )

    database_url: str = Field(DEFAULT_DATABASE_URL, validation_alias="DATABASE_URL")
    # Redis keeps the locks, the results and the event stream, and is the broker unless
    # BROKER_URL names another (RabbitMQ: amqp://user:password@host:5672/vhost).
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    broker_url: str | None = Field(None, validation_alias="BROKER_URL")
    wallet_mnemonic: str | None = Field(None, validation_alias="WALLET_MNEMONIC", repr=False)
    wallet_mnemonic_file: str | None = Field(None, validation_alias="WALLET_MNEMONIC_FILE")
    environment: Literal["development", "production"] = Field(
        "development", validation_alias="CASHU_ENV"
    )

    # The Lightning network melts pay on, as BOLT 11 invoices name it: "bc" (mainnet),
    # "tb" (testnet), "tbs" (signet), "bcrt" (regtest). Invoices for another are refused.
    lightning_network: Literal["bc", "tb", "tbs", "bcrt"] = "bc"

    # MintClient timeouts (seconds); a melt waits for a Lightning payment.
    mint_timeout: float = 10.0
    melt_timeout: float = 120.0

    # Celery limits (seconds). soft < hard < visibility timeout: a step is always dead
    # before Redis hands its unacknowledged message to another worker.
    task_time_limit: int = 300
    task_soft_time_limit: int = 270
    visibility_timeout: int = 360
    # The operation lock is a lease its holder renews every third of it (tasks/locks.py):
    # a dead holder's lock lapses within this many seconds.
    lock_lease_seconds: float = Field(10.0, ge=1.0)
    max_deliveries: int = 5  # a message redelivered more often than this fails (poison pill)

    # Melts ask the mint to pay in the background where it can (NUT-05 prefer_async): the
    # worker's pay step returns at once and a short check settles the payment. Off: the
    # pay step waits for the payment on the cashu.lightning queue.
    async_melts: bool = True
    # A step handed on to its own task that has not started after this long (a backlog on
    # its queue, or a message Redis lost) is handed on again by the beat's sweep.
    handoff_grace_seconds: float = Field(30.0, gt=0)

    # Celery task events (task-sent ... task-succeeded). Off by default: they cost about
    # 1 ms per task (bench/README.md). Flower turns the workers' events on by itself while
    # it runs (it broadcasts enable_events).
    task_events: bool = False
    # The STARTED state in the result backend, for callers that poll AsyncResult.state:
    # one more backend write and one more message to the waiting caller before each task
    # runs (about 1.3 ms per task). Flower needs only the events.
    task_track_started: bool = False

    # Queue for the tasks named in `notify_task` (they run in the caller's workers).
    notify_queue: str = "celery"

    # Beat intervals (seconds).
    poll_mint_quotes_seconds: float = 5.0
    poll_melts_seconds: float = 5.0
    # Pollers skip operations that moved less than this long ago (their caller is on it).
    poll_min_age_seconds: float = 3.0
    check_sends_seconds: float = 5.0
    retry_in_flight_seconds: float = 5.0
    recovery_seconds: float = 30.0
    relay_events_seconds: float = 2.0
    refresh_keysets_seconds: float = 3600.0

    # A prepared operation (inputs reserved, nothing sent yet) that nobody executed is
    # cancelled by cashu.beat.cancel_stale once untouched for this long.
    prepared_max_age_seconds: int = Field(86400, gt=0)

    # Observability: "json" logs one JSON object per line (tasks/log_format.py); with a
    # metrics port the worker's main process serves Prometheus metrics (tasks/metrics.py).
    log_format: Literal["plain", "json"] = "plain"
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_addr: str = "127.0.0.1"

    @property
    def broker(self) -> str:
        """The Celery broker: BROKER_URL, else the Redis of REDIS_URL."""
        return self.broker_url or self.redis_url

    @property
    def broker_is_redis(self) -> bool:
        return self.broker.startswith(("redis://", "rediss://", "redis+socket://"))

    @model_validator(mode="after")
    def _limits_in_order(self) -> Settings:
        if not 0 < self.task_soft_time_limit < self.task_time_limit:
            raise ValueError("task_soft_time_limit must be positive and below task_time_limit")
        if self.visibility_timeout <= self.task_time_limit:
            raise ValueError("visibility_timeout must exceed task_time_limit")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


class MnemonicConfigError(RuntimeError):
    """The master mnemonic is missing or invalid (a startup error)."""


def master_mnemonic(settings: Settings) -> str:
    """The validated master mnemonic. Never logged.

    WALLET_MNEMONIC, else the file WALLET_MNEMONIC_FILE. In production one of them is
    required. In development, without either, ./wallet-mnemonic.txt is used, and created
    (mode 0600, a fresh 24-word mnemonic) if it does not exist yet.
    """
    if settings.wallet_mnemonic:
        return _validated(settings.wallet_mnemonic, "WALLET_MNEMONIC")
    if settings.wallet_mnemonic_file:
        path = Path(settings.wallet_mnemonic_file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise MnemonicConfigError(
                f"WALLET_MNEMONIC_FILE={path} cannot be read: {exc.strerror}"
            ) from None
        return _validated(text, f"WALLET_MNEMONIC_FILE={path}")
    if settings.environment == "production":
        raise MnemonicConfigError(
            "no master mnemonic: set WALLET_MNEMONIC or WALLET_MNEMONIC_FILE (CASHU_ENV=production)"
        )
    path = Path(DEV_MNEMONIC_FILE).resolve()
    if _create_dev_mnemonic(path):
        logger.warning(
            "!!! DEVELOPMENT: no WALLET_MNEMONIC / WALLET_MNEMONIC_FILE set; created a NEW master "
            "mnemonic in %s (mode 0600). Every wallet's ecash derives from it: back it up, and "
            "never use this in production (set CASHU_ENV=production and a real mnemonic). !!!",
            path,
        )
    else:
        logger.warning(
            "DEVELOPMENT: using the master mnemonic in %s (set WALLET_MNEMONIC or "
            "WALLET_MNEMONIC_FILE to choose one)",
            path,
        )
    return _validated(path.read_text(), str(path))


def _create_dev_mnemonic(path: Path) -> bool:
    """Write a fresh mnemonic to `path` unless it exists; True if this call created it.

    Written to a private temporary file and linked into place, so two processes starting
    at once never see a half-written file and never both create one.
    """
    if path.exists():
        return False
    words = Mnemonic("english").generate(256)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".wallet-mnemonic-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(words + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _validated(mnemonic: str, source: str) -> str:
    try:
        return validate_mnemonic(mnemonic)
    except InvalidMnemonicError:
        raise MnemonicConfigError(f"{source} is not a valid BIP39 mnemonic") from None
