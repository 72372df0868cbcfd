"""What may be shown of a value that can hold money: Cashu tokens and the values under
secret keys masked. Pure and dependency-free: the client library and the worker (its logs,
task events, inspect replies, stored arguments) share it."""

from __future__ import annotations

import re
from typing import Any

TOKEN_RE = re.compile(r"cashu[AB][A-Za-z0-9_\-+/=]+")
SECRET_KEYS = frozenset(
    {"token", "tokens", "secret", "secrets", "seed", "mnemonic", "proofs", "inputs", "outputs"}
)


def mask(text: str) -> str:
    return f"<redacted {len(text)} chars>"


def redact_text(text: str) -> str:
    """`text` with every Cashu token (cashuA..., cashuB...) in it replaced by a placeholder."""
    return TOKEN_RE.sub(lambda m: mask(m.group(0)), text) if "cashu" in text else text


def redact(value: Any, key: Any = None) -> Any:
    """A copy of a JSON-like value safe to show: secret keys' values and tokens masked."""
    if key in SECRET_KEYS and value not in (None, "", [], {}):
        return mask(value) if isinstance(value, str) else "<redacted>"
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
