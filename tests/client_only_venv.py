"""Run by tests/test_client.py in a venv that has only celery[redis] installed, with a
copy of cashu_client (and nothing else of the repository) on sys.path.

    python client_only_venv.py REDIS_URL MINT_URL WALLET CLIENT_DIR

Adds the mint, mints 100 sat, reads the balance, provokes typed errors, and prints one
JSON object: what happened, and which of the worker's packages this process could see.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid

redis_url, mint_url, wallet, client_dir = sys.argv[1:5]
sys.path.insert(0, client_dir)

from cashu_client import (  # noqa: E402
    CashuClient,
    CashuWorkerError,
    InvalidAmountError,
    SagaError,
    TaskTimeoutError,
)

out: dict = {"errors": {}}


def capture(label: str, call) -> None:
    try:
        call()
    except Exception as exc:
        cause = exc.__cause__
        out["errors"][label] = {
            "class": type(exc).__name__,
            "module": type(exc).__module__,
            "code": getattr(exc, "code", None),
            "message": str(exc),
            "is_worker_error": isinstance(exc, CashuWorkerError),
            "is_saga_error": isinstance(exc, SagaError),
            "is_timeout": isinstance(exc, TimeoutError) and isinstance(exc, TaskTimeoutError),
            "remote_type": getattr(exc, "remote_type", None),
            "has_task_id": bool(getattr(exc, "task_id", None)),
            "cause": f"{type(cause).__module__}.{type(cause).__name__}" if cause else None,
        }
    else:
        out["errors"][label] = None


with CashuClient(redis_url, timeout=60) as client:
    mint = client.mints_add(mint_url)
    out["mint"] = {"url": mint["url"], "trusted": mint["trusted"]}
    op = client.mint_prepare(wallet, mint["url"], 100)
    out["prepared"] = {"state": op["state"], "amount": op["amount"], "kind": op["kind"]}
    done = client.mint_execute(op["id"])
    out["executed"] = {"state": done["state"], "minted_amount": done.get("minted_amount")}
    out["balance"] = client.balance(wallet, mint_url=mint["url"])

    capture("amount_zero", lambda: client.mint_prepare(wallet, mint["url"], 0))
    client.mints_set_trusted(mint["url"], False)
    try:
        capture("untrusted", lambda: client.mint_prepare(wallet, mint["url"], 10))
    finally:
        client.mints_set_trusted(mint["url"], True)
    capture("unknown_argument", lambda: client.call("cashu.mints.list", bogus=1))
    try:
        client.mint_prepare(wallet, mint["url"], -1)
    except InvalidAmountError as exc:  # caught by its own class
        out["caught_by_class"] = exc.code
    out["balance_after"] = client.balance(wallet, mint_url=mint["url"])

nobody = f"cashu-client-test-{uuid.uuid4().hex[:8]}"  # a queue no worker consumes
with CashuClient(redis_url, queue=nobody, timeout=0.5) as idle:
    capture("timeout", idle.mints_list)
try:
    import redis

    conn = redis.Redis.from_url(redis_url)
    conn.delete(nobody, f"_kombu.binding.{nobody}")
    conn.close()
except Exception:  # only the cleanup of an unconsumed message
    pass

out["ours_imported"] = sorted(m for m in ("nuts", "sagas", "models", "tasks") if m in sys.modules)
out["ours_importable"] = sorted(
    m for m in ("nuts", "sagas", "models", "tasks") if importlib.util.find_spec(m) is not None
)
out["worker_deps_importable"] = sorted(
    m
    for m in ("sqlalchemy", "httpx", "coincurve", "psycopg2", "pydantic", "cbor2")
    if importlib.util.find_spec(m) is not None
)
print(json.dumps(out))
