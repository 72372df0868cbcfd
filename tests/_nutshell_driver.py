"""Drives Nutshell's own wallet. Runs ONLY in the .venv-mint interpreter.

Started by tests/nutshell_wallet.py as `.venv-mint/bin/python _nutshell_driver.py`
with a clean environment (CASHU_DIR, HOME, TOR=FALSE) and a temporary working
directory. Reads one JSON request on stdin, writes one JSON reply on stdout:
{"ok": true, "result": ...} or {"ok": false, "error": "..."} (exit code 1).
Everything Nutshell prints goes to stderr.
"""

import asyncio
import contextlib
import json
import os
import sys
import traceback


async def _wallet(mint_url, mnemonic=None):
    from cashu.core.settings import settings
    from cashu.wallet.wallet import Wallet

    wallet = await Wallet.with_db(
        mint_url, os.path.join(settings.cashu_dir, "wallet"), name="wallet", skip_db_read=True
    )
    await wallet._init_private_key(mnemonic)
    await wallet.load_mint()
    if not wallet.keysets:
        raise RuntimeError(f"could not load keysets from mint {mint_url}")
    return wallet


def _balance(wallet):
    from cashu.core.helpers import sum_proofs

    return int(sum_proofs([p for p in wallet.proofs if not p.reserved]))


async def _mint(wallet, amount):
    from cashu.core.base import MintQuoteState

    quote = await wallet.request_mint(amount)
    for _ in range(200):  # FAKEWALLET_BRR pays the invoice asynchronously
        q = await wallet.get_mint_quote(quote.quote)
        if q.state == MintQuoteState.paid:
            break
        await asyncio.sleep(0.05)
    else:
        raise RuntimeError(f"mint quote {quote.quote} was not paid (is FAKEWALLET_BRR on?)")
    await wallet.mint(amount, quote_id=quote.quote)
    await wallet.load_proofs(reload=True)


async def _exact_send_proofs(wallet, amount):
    from cashu.core.helpers import sum_proofs

    proofs = wallet.active_proofs(wallet.proofs)
    selected = wallet.coinselect(proofs, amount)
    if selected and sum_proofs(selected) == amount:
        return selected
    _, send_proofs = await wallet.swap_to_send(proofs, amount, set_reserved=False)
    return send_proofs


async def op_receive(req):
    from cashu.wallet.helpers import deserialize_token_from_string, receive

    wallet = await _wallet(req["mint_url"], req.get("mnemonic"))
    token = deserialize_token_from_string(req["token"].strip())
    mint_wallet = await receive(wallet, token)
    await mint_wallet.load_proofs(reload=True)
    return {"amount": _balance(mint_wallet), "mnemonic": wallet.mnemonic}


async def op_mint_and_send(req):
    wallet = await _wallet(req["mint_url"], req.get("mnemonic"))
    await _mint(wallet, int(req["mint_amount"]))
    send_proofs = await _exact_send_proofs(wallet, int(req["send_amount"]))
    token = await wallet.serialize_proofs(
        send_proofs, include_dleq=True, legacy=int(req["version"]) == 3
    )
    await wallet.set_reserved_for_send(send_proofs, reserved=True)
    await wallet.load_proofs(reload=True)
    return {"token": token, "mnemonic": wallet.mnemonic, "balance": _balance(wallet)}


async def op_p2pk_lock_and_send(req):
    wallet = await _wallet(req["mint_url"], req.get("mnemonic"))
    amount = int(req["amount"])
    # the swap fee is paid by the sender: mint a little more than the amount
    await _mint(wallet, int(req.get("mint_amount") or amount + 8))
    lock = await wallet.create_p2pk_lock(
        req["pubkey"], locktime_seconds=req.get("locktime_seconds")
    )
    _, send_proofs = await wallet.swap_to_send(
        wallet.proofs, amount, secret_lock=lock, set_reserved=True
    )
    token = await wallet.serialize_proofs(
        send_proofs, include_dleq=True, legacy=int(req.get("version", 4)) == 3
    )
    return {"token": token, "mnemonic": wallet.mnemonic}


async def op_derive_secrets(req):
    from bip32 import BIP32
    from cashu.wallet.secrets import WalletSecrets
    from mnemonic import Mnemonic

    mnemo = Mnemonic("english")
    if not mnemo.check(req["mnemonic"]):
        raise ValueError("Invalid mnemonic")
    obj = WalletSecrets()  # the derivation only needs .seed (v2 ids) / .bip32 (v1 ids)
    obj.seed = mnemo.to_seed(req["mnemonic"])
    obj.bip32 = BIP32.from_seed(obj.seed)
    out = []
    for counter in req["counters"]:
        secret, r, _path = await obj.generate_determinstic_secret(counter, req["keyset_id"])
        # Nutshell uses secret.hex() as the proof secret string
        out.append([secret.hex(), r.hex()])
    return {"secrets": out}


async def op_restore(req):
    """Nutshell restores a wallet from a mnemonic (NUT-09/13) and reports its balance."""
    wallet = await _wallet(req["mint_url"], req["mnemonic"])
    await wallet.restore_wallet_from_mnemonic(req["mnemonic"], to=3, batch=100)
    await wallet.load_proofs(reload=True)
    return {"balance": _balance(wallet)}


OPS = {
    "receive": op_receive,
    "mint_and_send": op_mint_and_send,
    "p2pk_lock_and_send": op_p2pk_lock_and_send,
    "derive_secrets": op_derive_secrets,
    "restore": op_restore,
}


def main():
    req = json.loads(sys.stdin.read())
    real_stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        try:
            from loguru import logger

            logger.remove()
            logger.add(sys.stderr, level=os.environ.get("NUTSHELL_LOG_LEVEL", "WARNING"))
            import cashu.core.settings  # noqa: F401 - sets sys.tracebacklimit = 0

            sys.tracebacklimit = 1000
            result = asyncio.run(OPS[req["op"]](req))
            reply = {"ok": True, "result": result}
        except Exception as e:  # report Nutshell's own message to the caller
            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    real_stdout.write(json.dumps(reply) + "\n")
    real_stdout.flush()
    return 0 if reply["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
