"""A walk through the four operations against a local test mint, through the running worker.

    bash scripts/run.sh                  # in one terminal: worker, beat, Flower
    .venv/bin/python scripts/demo.py     # in another

Starts a Nutshell FakeWallet test mint (tests/mint_harness.py; .venv-mint is installed on
first use), registers it, then sends the tasks by name, as any service would: mint 1000 sat
into a wallet, send 100 as a token, receive the token into a second wallet, melt a Lightning
invoice. It prints each step and both wallets' balances; Flower (http://127.0.0.1:5555)
shows the same tasks. At the end the mint is marked untrusted (it is about to disappear, so
nothing ever contacts it again) and stopped. Uses REDIS_URL, like the worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

from celery import Celery  # noqa: E402

TIMEOUT = 60


def client() -> Celery:
    from tasks.app import celery_config
    from tasks.config import get_settings

    # RedactingAMQP: the token sent to cashu.receive.redeem stays out of message headers
    app = Celery("cashu-demo", amqp="tasks.redaction:RedactingAMQP", set_as_current=False)
    app.conf.update(celery_config(get_settings()))
    return app


class Demo:
    def __init__(self, app: Celery) -> None:
        self.app = app
        suffix = uuid.uuid4().hex[:6]
        self.alice, self.bob = f"alice-{suffix}", f"bob-{suffix}"
        self.mint_url = ""

    def call(self, name: str, **kwargs: Any) -> Any:
        shown = {k: ("<token>" if k == "token" else v) for k, v in kwargs.items()}
        args = ", ".join(f"{k}={_short(v)}" for k, v in shown.items())
        t0 = time.monotonic()
        result = self.app.send_task(name, kwargs=kwargs).get(timeout=TIMEOUT)
        took = time.monotonic() - t0
        state = f" -> {result['state']}" if isinstance(result, dict) and "state" in result else ""
        print(f"    {name}({args}){state}  [{took * 1000:.0f} ms]")
        return result

    def balances(self) -> None:
        for wallet in (self.alice, self.bob):
            b = self.app.send_task(
                "cashu.wallet.balance", kwargs={"wallet": wallet, "mint_url": self.mint_url}
            ).get(timeout=TIMEOUT)
            print(
                f"    {wallet:>13}: spendable {b['spendable']:>5}  reserved {b['reserved']:>4}"
                f"  pending {b['pending']:>4}  total {b['total']:>5} sat"
            )

    def run(self, mint_url: str) -> None:
        step("register the mint (keysets fetched and verified, trusted)")
        self.mint_url = self.call("cashu.mints.add", url=mint_url)["url"]

        step(f"mint 1000 sat into {self.alice}")
        op = self.call("cashu.mint.prepare", wallet=self.alice, mint_url=self.mint_url, amount=1000)
        print(f"    invoice to pay: {op['request'][:40]}... (the FakeWallet pays it at once)")
        op = self.call("cashu.mint.execute", operation_id=op["id"])
        print(f"    minted {op.get('minted_amount', op['amount'])} sat")
        self.balances()

        step(f"send 100 sat from {self.alice} as a token")
        send = self.call(
            "cashu.send.prepare", wallet=self.alice, mint_url=self.mint_url, amount=100
        )
        print(f"    fee {send['fee']} sat, inputs reserved: {send['input_amount']} sat")
        sent = self.call("cashu.send.execute", operation_id=send["id"])
        token = sent["token"]
        print(f"    token {token[:6]}... ({len(token)} chars; bearer money: never logged)")
        self.balances()

        step(f"{self.bob} receives the token (swapped into his own proofs)")
        received = self.call("cashu.receive.redeem", wallet=self.bob, token=token)
        print(f"    received {received['amount']} sat (fee {received.get('fee', 0)} sat)")
        self.balances()

        step("the beat notices the token was claimed and finalizes the send")
        deadline = time.monotonic() + 30
        state = sent["state"]
        while state != "finalized" and time.monotonic() < deadline:
            time.sleep(1)
            state = self.app.send_task("cashu.ops.get", kwargs={"operation_id": send["id"]}).get(
                timeout=TIMEOUT
            )["state"]
        print(f"    send {send['id']}: {state}")
        self.balances()

        step(f"{self.alice} pays a 200 sat Lightning invoice (melt)")
        from mint_harness import make_invoice

        melt = self.call(
            "cashu.melt.prepare",
            wallet=self.alice,
            mint_url=self.mint_url,
            invoice=make_invoice(200),
        )
        print(f"    fee reserve {melt['fee_reserve']} sat, inputs {melt['input_amount']} sat")
        paid = self.call("cashu.melt.execute", operation_id=melt["id"])
        print(
            f"    paid: effective fee {paid.get('effective_fee')} sat, change "
            f"{paid.get('change_amount')} sat returned"
        )
        self.balances()


def step(text: str) -> None:
    print(f"\n== {text}")


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def ensure_mint_venv() -> None:
    if (REPO_ROOT / ".venv-mint" / "bin" / "mint").exists():
        return
    print("installing the Nutshell test mint into .venv-mint (once)")
    subprocess.run(
        ["bash", "-c", "source scripts/common.sh && ensure_mint_venv"],
        cwd=REPO_ROOT,
        env={**os.environ, "SCRIPT_TAG": "demo"},
        check=True,
    )


def main() -> int:
    app = client()
    try:
        replies = app.control.ping(timeout=2.0)
    except Exception as exc:
        print(f"cannot reach the broker ({exc}); is Redis running?", file=sys.stderr)
        return 1
    if not replies:
        print("no worker answers: start one first with  bash scripts/run.sh", file=sys.stderr)
        return 1
    print(f"workers: {', '.join(name for reply in replies for name in reply)}")

    ensure_mint_venv()
    from mint_harness import start_mint

    step("start a Nutshell FakeWallet test mint (input fee 100 ppk)")
    mint = start_mint(input_fee_ppk=100)
    print(f"    {mint.url} answered in {mint.startup_seconds:.1f} s")
    demo = Demo(app)
    try:
        demo.run(mint.url)
    finally:
        if demo.mint_url:
            # the mint goes away with this script: never contact it again
            app.send_task(
                "cashu.mints.set_trusted", kwargs={"url": demo.mint_url, "trusted": False}
            ).get(timeout=TIMEOUT)
        mint.stop()
    flower = f"http://127.0.0.1:{os.environ.get('FLOWER_PORT', '5555')}/tasks"
    print(f"\ndone: the same tasks are listed in Flower ({flower})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
