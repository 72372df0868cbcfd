"""The protocol core against a real Nutshell mint (FakeWallet, input_fee_ppk=100).

No database, no Celery: MintClient, keysets, NUT-13 outputs and unblinding, the
way the sagas will use them. Every money movement is checked against the
mint's own view (checkstate).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from mint_harness import RunningMint, make_invoice
from protocol_wallet import ProtocolWallet, wait_until_paid

from nuts.amounts import change_blank_count, input_fee, split_amount
from nuts.client import MintClient
from nuts.errors import (
    MintAmbiguousError,
    MintUnreachableError,
    OutputsAlreadySignedError,
    ProofsAlreadySpentError,
    QuoteAlreadyIssuedError,
)
from nuts.keysets import Keyset
from nuts.models import MeltQuoteState, ProofSpentState
from nuts.outputs import unblind_outputs

pytestmark = pytest.mark.mint


@pytest.fixture
def wallet(test_mint: RunningMint) -> Iterator[ProtocolWallet]:
    client = MintClient(test_mint.url)
    yield ProtocolWallet(client)
    client.close()


def test_mint_keysets_verify_as_v2_with_the_configured_fee(wallet: ProtocolWallet) -> None:
    assert wallet.keyset.id.startswith("01") and len(wallet.keyset.id) == 66
    assert wallet.keyset.input_fee_ppk == 100


def test_mint_1000_sat_with_every_dleq_verified(wallet: ProtocolWallet) -> None:
    proofs = wallet.mint(1000)

    assert sum(p.amount for p in proofs) == 1000
    assert all(p.dleq is not None for p in proofs)  # unblind_outputs verified each one
    assert wallet.states(proofs) == {ProofSpentState.UNSPENT}


def test_swap_with_fees_balances_and_spends_the_inputs(wallet: ProtocolWallet) -> None:
    inputs = wallet.mint(64)
    fee = input_fee(inputs, wallet.fees)
    outputs = wallet.outputs(split_amount(64 - fee))

    new_proofs = unblind_outputs(
        outputs, wallet.client.swap(inputs, [o.blinded_message for o in outputs]), wallet.keysets
    )

    assert fee == 1
    assert sum(p.amount for p in new_proofs) == 64 - fee
    assert wallet.states(inputs) == {ProofSpentState.SPENT}
    assert wallet.states(new_proofs) == {ProofSpentState.UNSPENT}


def test_restore_returns_signatures_of_a_swap_whose_response_was_lost(
    wallet: ProtocolWallet,
) -> None:
    inputs = wallet.mint(32)
    outputs = wallet.outputs(split_amount(32 - input_fee(inputs, wallet.fees)))
    wallet.client.swap(inputs, [o.blinded_message for o in outputs])  # response thrown away

    restored = wallet.client.restore([o.blinded_message for o in outputs])
    by_b = {o.B_: o for o in outputs}
    proofs = unblind_outputs(
        [by_b[m.B_] for m in restored.outputs], restored.signatures, wallet.keysets
    )

    assert sorted(p.amount for p in proofs) == sorted(o.amount for o in outputs)
    assert wallet.states(proofs) == {ProofSpentState.UNSPENT}


def test_melt_100_sat_sends_change_blanks_and_unblinds_the_change(wallet: ProtocolWallet) -> None:
    quote = wallet.client.create_melt_quote(make_invoice(100), "sat")
    inputs = wallet.mint(128)
    fee = input_fee(inputs, wallet.fees)
    blanks = wallet.outputs([1] * change_blank_count(128 - fee - quote.amount))
    assert sum(p.amount for p in inputs) >= quote.amount + quote.fee_reserve + fee

    result = wallet.client.melt(quote.quote, inputs, [b.blinded_message for b in blanks])
    change = unblind_outputs(blanks, result.change or [], wallet.keysets)

    assert result.state == MeltQuoteState.PAID
    assert result.payment_preimage
    lightning_fee = 128 - fee - quote.amount - sum(p.amount for p in change)
    assert 0 <= lightning_fee <= quote.fee_reserve
    assert lightning_fee == 1  # FakeWallet's routing fee (docs/test-mint.md)
    assert wallet.states(inputs) == {ProofSpentState.SPENT}
    assert wallet.states(change) == {ProofSpentState.UNSPENT}


def test_spending_a_proof_twice_raises_proofs_already_spent(wallet: ProtocolWallet) -> None:
    inputs = wallet.mint(8)
    first = wallet.outputs(split_amount(8 - input_fee(inputs, wallet.fees)))
    wallet.client.swap(inputs, [o.blinded_message for o in first])
    second = wallet.outputs(split_amount(8 - input_fee(inputs, wallet.fees)))

    with pytest.raises(ProofsAlreadySpentError) as excinfo:
        wallet.client.swap(inputs, [o.blinded_message for o in second])
    assert excinfo.value.mint_code == 11001


def test_reusing_signed_outputs_raises_outputs_already_signed(wallet: ProtocolWallet) -> None:
    inputs = wallet.mint(8)
    outputs = wallet.outputs(split_amount(8 - input_fee(inputs, wallet.fees)))
    wallet.client.swap(inputs, [o.blinded_message for o in outputs])
    more_inputs = wallet.mint(8)

    with pytest.raises(OutputsAlreadySignedError) as excinfo:
        wallet.client.swap(more_inputs, [o.blinded_message for o in outputs])
    assert excinfo.value.mint_code == 11003
    assert wallet.states(more_inputs) == {ProofSpentState.UNSPENT}


def test_minting_an_issued_quote_raises_quote_already_issued(wallet: ProtocolWallet) -> None:
    quote = wallet.client.create_mint_quote(4, "sat")
    wait_until_paid(wallet.client, quote.quote)
    wallet.client.mint(quote.quote, [o.blinded_message for o in wallet.outputs([4])])

    with pytest.raises(QuoteAlreadyIssuedError) as excinfo:
        wallet.client.mint(quote.quote, [o.blinded_message for o in wallet.outputs([4])])
    assert excinfo.value.mint_code == 20002


def test_a_closed_port_raises_the_ambiguous_class() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = MintClient(f"http://127.0.0.1:{port}", timeout=2.0)

    with pytest.raises(MintAmbiguousError) as excinfo:
        client.keysets()
    assert isinstance(excinfo.value, MintUnreachableError)


def test_keyset_from_the_mint_with_a_forged_id_is_rejected(wallet: ProtocolWallet) -> None:
    from nuts.errors import KeysetIdMismatchError

    info = next(i for i in wallet.client.keysets() if i.id == wallet.keyset.id)
    keys = wallet.client.keys(wallet.keyset.id)[0]
    forged = keys.model_copy(update={"keys": {**keys.keys, 1: keys.keys[2]}})

    with pytest.raises(KeysetIdMismatchError):
        Keyset.from_wire(forged, info)
