"""Try it by hand: a test mint that keeps running, and invoices to pay.

    .venv/bin/python scripts/dev.py mint [--port 3338] [--version 0.20.2] [--usd]
        a Nutshell FakeWallet mint (docs/test-mint.md) in the foreground until Ctrl-C: its
        invoices count as paid at once, it pays any invoice with a 1 sat routing fee.
    .venv/bin/python scripts/dev.py invoice AMOUNT [--network bc]
        prints a bolt11 invoice for AMOUNT sat that the test mint's FakeWallet will pay.

Then, with scripts/run.sh running, register it (`.venv/bin/cashu-worker mints add
http://127.0.0.1:3338`), mint into a wallet with cashu.mint.prepare / cashu.mint.execute,
and pay an invoice from `dev.py invoice` with cashu.melt.pay (README: calling it).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from mint_harness import MINT_VERSIONS, USD_SETTINGS, make_invoice, start_mint  # noqa: E402


def run_mint(port: int, version: str, usd: bool) -> int:
    from demo import ensure_mint_venv

    if version == MINT_VERSIONS[0]:
        ensure_mint_venv()
    stop = threading.Event()  # a Ctrl-C while the mint starts stops it once it is up
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    mint = start_mint(port=port, version=version, env_overrides=USD_SETTINGS if usd else None)
    print(f"test mint {version} on {mint.url} (database {mint.db_dir}); Ctrl-C stops it")
    try:
        while not stop.wait(1.0):
            if mint.proc is not None and mint.proc.poll() is not None:
                print(f"the mint exited ({mint.proc.returncode}):\n{mint.log_tail()}")
                return 1
    finally:
        mint.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/dev.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    mint = commands.add_parser("mint", help="run a test mint until Ctrl-C")
    mint.add_argument("--port", type=int, default=3338)
    mint.add_argument("--version", choices=MINT_VERSIONS, default=MINT_VERSIONS[0])
    mint.add_argument("--usd", action="store_true", help="a usd keyset beside sat")
    invoice = commands.add_parser("invoice", help="print an invoice the test mint pays")
    invoice.add_argument("amount", type=int, help="sat")
    invoice.add_argument("--network", choices=("bc", "tb", "tbs", "bcrt"), default="bc")
    args = parser.parse_args(argv)
    if args.command == "mint":
        return run_mint(args.port, args.version, args.usd)
    if args.amount <= 0:
        parser.error("amount must be a positive number of sat")
    print(make_invoice(args.amount, network=args.network))
    return 0


if __name__ == "__main__":
    sys.exit(main())
