"""Throughput of the protocol core: blind + unblind + DLEQ-verify, and token codec.

Run by hand:  .venv/bin/python bench/bench_crypto.py [--outputs 1000] [--repeat 5]
Prints the median over the repetitions. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from coincurve import PrivateKey, PublicKey

from nuts.crypto import blind_message, mint_dleq, sign_blinded
from nuts.keysets import Keyset, derive_keyset_id_v2
from nuts.models import DLEQ, BlindSignature
from nuts.outputs import derive_outputs, unblind_outputs
from nuts.tokens import Token, decode_token, encode_token_v3, encode_token_v4


def make_keyset() -> tuple[Keyset, dict[int, PrivateKey]]:
    private = {2**i: PrivateKey() for i in range(20)}
    keys = {amount: key.public_key for amount, key in private.items()}
    keyset_id = derive_keyset_id_v2(keys, "sat", 100)
    return Keyset(id=keyset_id, unit="sat", keys=keys, input_fee_ppk=100), private


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outputs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.outputs
    keyset, private = make_keyset()
    seed = os.urandom(64)
    amounts = [1 << (i % 20) for i in range(n)]

    outputs = derive_outputs(seed, keyset.id, amounts, 0)
    # The mint's side, prepared once outside the timing.
    signatures = []
    for out in outputs:
        B_ = PublicKey(bytes.fromhex(out.B_))
        k = private[out.amount]
        e, s = mint_dleq(B_, k)
        C_ = sign_blinded(B_, k)
        signatures.append(
            BlindSignature(
                amount=out.amount,
                id=keyset.id,
                C_=C_.format().hex(),
                dleq=DLEQ(e=e.hex(), s=s.hex()),
            )
        )
    proofs = unblind_outputs(outputs, signatures, {keyset.id: keyset})
    token = Token(mint="http://127.0.0.1:3338", unit="sat", proofs=proofs[:100], memo="bench")
    v4, v3 = encode_token_v4(token), encode_token_v3(token)

    rows = {
        f"derive {n} outputs (NUT-13 + blind)": (
            n,
            lambda: derive_outputs(seed, keyset.id, amounts, 0),
        ),
        f"blind {n} random secrets": (n, lambda: [blind_message(os.urandom(32)) for _ in range(n)]),
        f"unblind + DLEQ-verify {n} signatures": (
            n,
            lambda: unblind_outputs(outputs, signatures, {keyset.id: keyset}),
        ),
        "encode V4 token of 100 proofs, x100": (
            100,
            lambda: [encode_token_v4(token) for _ in range(100)],
        ),
        "decode V4 token of 100 proofs, x100": (
            100,
            lambda: [decode_token(v4) for _ in range(100)],
        ),
        "encode V3 token of 100 proofs, x100": (
            100,
            lambda: [encode_token_v3(token) for _ in range(100)],
        ),
        "decode V3 token of 100 proofs, x100": (
            100,
            lambda: [decode_token(v3) for _ in range(100)],
        ),
    }
    print(f"{'operation':45} {'median ms':>10} {'per item us':>12}")
    for name, (items, fn) in rows.items():
        median = statistics.median(timed(fn) for _ in range(args.repeat))
        print(f"{name:45} {median * 1000:10.1f} {median / items * 1e6:12.1f}")


if __name__ == "__main__":
    main()
