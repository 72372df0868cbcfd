"""A minimal wallet over the protocol core, for tests: a seed, a counter, the keysets."""

from __future__ import annotations

import os
import time

from nuts.amounts import input_fee, split_amount
from nuts.client import MintClient
from nuts.keysets import fetch_keysets
from nuts.models import MintQuoteState, Proof, ProofSpentState
from nuts.outputs import PreparedOutput, derive_outputs, proof_y, unblind_outputs


class ProtocolWallet:
    """Just enough wallet to drive the protocol."""

    def __init__(self, client: MintClient) -> None:
        self.client = client
        self.seed = os.urandom(64)
        self.counter = 0
        self.keysets = fetch_keysets(client)
        self.keyset = next(k for k in self.keysets.values() if k.active and k.unit == "sat")

    @property
    def fees(self) -> dict[str, int]:
        return {k.id: k.input_fee_ppk for k in self.keysets.values()}

    def outputs(self, amounts: list[int]) -> list[PreparedOutput]:
        outputs = derive_outputs(self.seed, self.keyset.id, amounts, self.counter)
        self.counter += len(amounts)
        return outputs

    def mint(self, amount: int) -> list[Proof]:
        quote = self.client.create_mint_quote(amount, "sat")
        wait_until_paid(self.client, quote.quote)
        outputs = self.outputs(split_amount(amount))
        signatures = self.client.mint(quote.quote, [o.blinded_message for o in outputs])
        return unblind_outputs(outputs, signatures, self.keysets)

    def states(self, proofs: list[Proof]) -> set[ProofSpentState]:
        return {s.state for s in self.client.checkstate([proof_y(p) for p in proofs])}


def wait_until_paid(client: MintClient, quote_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while client.check_mint_quote(quote_id).state != MintQuoteState.PAID:
        assert time.monotonic() < deadline, "FakeWallet never paid the mint quote"
        time.sleep(0.05)


def swap_to(wallet: ProtocolWallet, inputs: list[Proof]) -> list[Proof]:
    """Swap inputs into fresh proofs of this wallet, paying the input fee."""
    amount = sum(p.amount for p in inputs) - input_fee(inputs, wallet.fees)
    outputs = wallet.outputs(split_amount(amount))
    signatures = wallet.client.swap(inputs, [o.blinded_message for o in outputs])
    return unblind_outputs(outputs, signatures, wallet.keysets)
