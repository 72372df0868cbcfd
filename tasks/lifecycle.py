"""The worker's and the beat's lifecycle: configuration checked at start, sockets not shared
across a fork, start-up recovery, the metrics server."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from models.db import dispose_engines
from nuts.client import close_mint_clients
from tasks.config import get_settings
from tasks.queues import PUBLIC_QUEUE

logger = logging.getLogger(__name__)


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
        sender.app.send_task("cashu.recovery.run", queue=PUBLIC_QUEUE)
    except Exception:
        logger.exception("could not send the start-up recovery run")


@signals.worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    """CASHU_METRICS_PORT set: Prometheus metrics from the worker's main process."""
    settings = get_settings()
    if settings.metrics_port:
        from tasks.metrics import start_metrics_server

        start_metrics_server(settings.metrics_port, settings.metrics_addr, settings.database_url)
