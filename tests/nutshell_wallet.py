"""Interop helpers: drive Nutshell's OWN wallet (cashu==0.20.2) from tests.

Each call runs tests/_nutshell_driver.py in the separate .venv-mint interpreter
(the two venvs never mix), with JSON in/out, a fresh temporary CASHU_DIR (so a
fresh wallet and wallet database per call), TOR=FALSE and a clean environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MINT_PYTHON = REPO_ROOT / ".venv-mint" / "bin" / "python"
DRIVER = Path(__file__).resolve().parent / "_nutshell_driver.py"
TIMEOUT = 120


class NutshellWalletError(RuntimeError):
    """Nutshell's wallet failed; the message is Nutshell's error."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


def _run(request: dict[str, Any], *, cashu_dir: str | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="nutshell-wallet-") as tmp:
        home = Path(tmp)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),  # no ~/.cashu/.env of the user is read
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
            "CASHU_DIR": cashu_dir or str(home / ".cashu"),
            "TOR": "FALSE",
            "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        }
        if "mint_url" in request:
            env["MINT_URL"] = request["mint_url"]
        if "NUTSHELL_LOG_LEVEL" in os.environ:
            env["NUTSHELL_LOG_LEVEL"] = os.environ["NUTSHELL_LOG_LEVEL"]
        proc = subprocess.run(
            [str(MINT_PYTHON), str(DRIVER)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            cwd=home,  # no stray ./.env
            env=env,
            timeout=TIMEOUT,
        )
    stderr_tail = "\n".join(proc.stderr.splitlines()[-30:])
    lines = proc.stdout.strip().splitlines()
    try:
        reply = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise NutshellWalletError(
            f"Nutshell driver exited {proc.returncode} without a reply:\n{stderr_tail}",
            proc.stderr,
        ) from None
    if not reply.get("ok"):
        raise NutshellWalletError(reply.get("error", "unknown error"), proc.stderr)
    return reply["result"]


def nutshell_receive(mint_url: str, token: str, *, mnemonic: str | None = None) -> int:
    """A fresh Nutshell wallet receives `token`; returns its balance afterwards."""
    result = _run({"op": "receive", "mint_url": mint_url, "token": token, "mnemonic": mnemonic})
    return int(result["amount"])


def nutshell_mint_and_send(
    mint_url: str,
    mint_amount: int,
    send_amount: int,
    *,
    version: int = 4,
    mnemonic: str | None = None,
) -> str:
    """A fresh Nutshell wallet mints `mint_amount` (FakeWallet pays) and returns a
    token of exactly `send_amount`, V3 (cashuA) or V4 (cashuB), with DLEQ proofs."""
    if version not in (3, 4):
        raise ValueError("version must be 3 or 4")
    result = _run(
        {
            "op": "mint_and_send",
            "mint_url": mint_url,
            "mint_amount": mint_amount,
            "send_amount": send_amount,
            "version": version,
            "mnemonic": mnemonic,
        }
    )
    return result["token"]


def nutshell_derive_secrets(
    mnemonic: str, keyset_id: str, counters: list[int]
) -> list[tuple[str, str]]:
    """(secret, r hex) per counter, as Nutshell's wallet derives them (NUT-13;
    HMAC-SHA256 for `01` keyset ids, BIP32 for `00` ids). No mint needed."""
    result = _run(
        {
            "op": "derive_secrets",
            "mnemonic": mnemonic,
            "keyset_id": keyset_id,
            "counters": list(counters),
        }
    )
    return [(s, r) for s, r in result["secrets"]]


def nutshell_p2pk_lock_and_send(
    mint_url: str,
    amount: int,
    pubkey_hex: str,
    *,
    locktime_seconds: int | None = None,
    version: int = 4,
) -> str:
    """A fresh Nutshell wallet mints, then sends a token of `amount` locked to
    `pubkey_hex` (NUT-11 P2PK, SIG_INPUTS, no locktime unless given)."""
    result = _run(
        {
            "op": "p2pk_lock_and_send",
            "mint_url": mint_url,
            "amount": amount,
            "pubkey": pubkey_hex,
            "locktime_seconds": locktime_seconds,
            "version": version,
        }
    )
    return result["token"]


def nutshell_restore(mint_url: str, mnemonic: str) -> int:
    """A fresh Nutshell wallet restores from `mnemonic` (NUT-09/13); returns its balance."""
    result = _run({"op": "restore", "mint_url": mint_url, "mnemonic": mnemonic})
    return int(result["balance"])
