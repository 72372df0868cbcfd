"""A small client for cashu-worker: its public tasks as methods, its errors as classes.

Needs only Celery (and the broker's client library, e.g. `celery[redis]`); nothing of the
worker's code. See cashu_client.client and cashu_client.errors; the command line
`cashu-worker` is cashu_client.cli.
"""

from cashu_client.client import CashuClient
from cashu_client.errors import *  # noqa: F403  (the typed errors, one class per code)
from cashu_client.errors import __all__ as _errors_all

__all__ = ["CashuClient", *_errors_all]
