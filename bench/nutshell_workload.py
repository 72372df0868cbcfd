"""The benchmark's workload through Nutshell's own wallet. Runs ONLY in the .venv-mint interpreter.

Started once by bench/workload.py as `.venv-mint/bin/python bench/nutshell_workload.py`, with a
clean environment (HOME and CASHU_DIR in a temporary directory, TOR=FALSE) and that directory
as its working directory. Reads one JSON request on stdin:

    {"mint_url": ..., "rounds": 10, "repeat": 3, "warmup_invoice": "lnbc...",
     "invoices": [["lnbc...", ...one per round], ...one list per repetition]}

and writes one JSON reply on stdout ({"ok": true, "result": ...} or {"ok": false, "error": ...});
everything Nutshell prints goes to stderr. The timing happens here, in one process.

Per repetition a fresh pair of wallets (A and B, each its own SQLite directory) runs the rounds:
A mints 100 sat, A sends 7 sat as a token, B receives it, A melts a 5 sat invoice. The wallet
API is used the way tests/_nutshell_driver.py (and Nutshell's own CLI for `pay`) uses it:

    mint     request_mint, get_mint_quote until PAID, mint
    send     select_to_send(7, set_reserved=True) (swaps unless proofs add up to 7 exactly),
             serialize_proofs (V4, with DLEQ)
    receive  deserialize the token, helpers.receive (which loads the mint and redeems)
    melt     melt_quote, select_to_send(amount + fee reserve, include_fees=True), melt

Input fees are counted at the two requests that take inputs (LedgerAPI.split = POST
/v1/swap, LedgerAPI.melt = POST /v1/melt/bolt11): ceil(sum of the inputs' ppk / 1000) each,
by Nutshell's own get_fees_for_proofs. They are checked against balance arithmetic:
minted - melted - routing fees - (A's unreserved balance + B's balance).
"""

import asyncio
import contextlib
import json
import os
import sys
import time
import traceback

KINDS = ("mint", "send", "receive", "melt")
MINT_AMOUNT = 100
SEND_AMOUNT = 7


class FeeCounter:
    """Input fees of every swap and melt request a wallet made (patched into LedgerAPI)."""

    def __init__(self):
        self.fees = 0
        self.requests = 0

    def install(self):
        from cashu.wallet.v1_api import LedgerAPI

        counter = self
        original_split, original_melt = LedgerAPI.split, LedgerAPI.melt

        async def split(self, proofs, outputs):
            result = await original_split(self, proofs, outputs)
            counter.fees += self.get_fees_for_proofs(proofs)
            counter.requests += 1
            return result

        async def melt(self, quote, proofs, outputs, *args, **kwargs):
            result = await original_melt(self, quote, proofs, outputs, *args, **kwargs)
            counter.fees += self.get_fees_for_proofs(proofs)
            counter.requests += 1
            return result

        LedgerAPI.split, LedgerAPI.melt = split, melt


async def new_wallet(mint_url, directory):
    from cashu.wallet.wallet import Wallet

    wallet = await Wallet.with_db(mint_url, directory, name="wallet", skip_db_read=True)
    await wallet._init_private_key(None)
    await wallet.load_mint()
    if not wallet.keysets:
        raise RuntimeError(f"could not load keysets from mint {mint_url}")
    return wallet


def unreserved(wallet):
    return sum(p.amount for p in wallet.proofs if not p.reserved)


async def mint(wallet, amount):
    from cashu.core.base import MintQuoteState

    quote = await wallet.request_mint(amount)
    for _ in range(400):  # FAKEWALLET_BRR pays the invoice by itself
        if (await wallet.get_mint_quote(quote.quote)).state == MintQuoteState.paid:
            break
        await asyncio.sleep(0.01)
    else:
        raise RuntimeError(f"mint quote {quote.quote} was never paid")
    await wallet.mint(amount, quote_id=quote.quote)


async def send(wallet, amount):
    proofs, _ = await wallet.select_to_send(wallet.proofs, amount, set_reserved=True)
    return await wallet.serialize_proofs(proofs, include_dleq=True, legacy=False)


async def receive(wallet, token):
    from cashu.wallet.helpers import deserialize_token_from_string
    from cashu.wallet.helpers import receive as nutshell_receive

    await nutshell_receive(wallet, deserialize_token_from_string(token))


async def melt(wallet, invoice):
    """Returns (amount, routing fee)."""
    quote = await wallet.melt_quote(invoice)
    total = quote.amount + quote.fee_reserve
    proofs, _ = await wallet.select_to_send(
        wallet.proofs, total, include_fees=True, set_reserved=False
    )
    response = await wallet.melt(proofs, invoice, quote.fee_reserve, quote.quote)
    if str(getattr(response.state, "value", response.state)).upper() != "PAID":
        raise RuntimeError(f"melt not paid: {response.state}")
    change = sum(c.amount for c in response.change or [])
    paid_in = sum(p.amount for p in proofs)
    return quote.amount, paid_in - wallet.get_fees_for_proofs(proofs) - quote.amount - change


async def one_round(a, b, invoice, times=None):
    routing = melted = 0
    steps = []
    t0 = time.perf_counter()
    await mint(a, MINT_AMOUNT)
    steps.append(time.perf_counter())
    token = await send(a, SEND_AMOUNT)
    steps.append(time.perf_counter())
    await receive(b, token)
    steps.append(time.perf_counter())
    melted, routing = await melt(a, invoice)
    steps.append(time.perf_counter())
    if times is not None:
        previous = t0
        for kind, at in zip(KINDS, steps, strict=True):
            times[kind].append(at - previous)
            previous = at
    return melted, routing


async def run(request):
    from importlib.metadata import version

    from cashu.core.settings import settings

    counter = FeeCounter()
    counter.install()
    base = settings.cashu_dir
    url = request["mint_url"]

    # one untimed round: imports, first connections, first SQLite files
    wa = await new_wallet(url, os.path.join(base, "warmup", "A"))
    wb = await new_wallet(url, os.path.join(base, "warmup", "B"))
    await one_round(wa, wb, request["warmup_invoice"])

    reps = []
    for rep, invoices in enumerate(request["invoices"][: request["repeat"]]):
        a = await new_wallet(url, os.path.join(base, f"rep{rep}", "A"))
        b = await new_wallet(url, os.path.join(base, f"rep{rep}", "B"))
        times = {kind: [] for kind in KINDS}
        fees_before, requests_before = counter.fees, counter.requests
        melted = routing = 0
        started = time.perf_counter()
        for invoice in invoices[: request["rounds"]]:
            m, r = await one_round(a, b, invoice, times)
            melted, routing = melted + m, routing + r
        elapsed = time.perf_counter() - started
        await a.load_proofs(reload=True)
        await b.load_proofs(reload=True)
        minted = MINT_AMOUNT * request["rounds"]
        balance = unreserved(a) + unreserved(b)
        reps.append(
            {
                "times": times,
                "elapsed": elapsed,
                "fees": counter.fees - fees_before,
                "fee_requests": counter.requests - requests_before,
                "minted": minted,
                "melted": melted,
                "routing": routing,
                "balance": balance,
                "fees_by_balance": minted - melted - routing - balance,
                "proofs_kept": len([p for p in a.proofs if not p.reserved]) + len(b.proofs),
            }
        )
    return {"version": version("cashu"), "reps": reps}


def main():
    request = json.loads(sys.stdin.read())
    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        try:
            from loguru import logger

            logger.remove()
            logger.add(sys.stderr, level=os.environ.get("NUTSHELL_LOG_LEVEL", "WARNING"))
            import cashu.core.settings  # noqa: F401 - sets sys.tracebacklimit = 0

            sys.tracebacklimit = 1000
            reply = {"ok": True, "result": asyncio.run(run(request))}
        except Exception as e:
            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    real_stdout.write(json.dumps(reply) + "\n")
    real_stdout.flush()
    return 0 if reply["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
