"""nuts.outputs against a local fake mint: unblinding (NUT-00), DLEQ checks (NUT-12), NUT-08
change; and nuts.keysets.Keyset.from_wire refusing keys that do not match their id."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from coincurve import PrivateKey, PublicKey

from nuts.crypto import mint_dleq, sign_blinded, verify_signature
from nuts.errors import InvalidSignatureError, KeysetIdMismatchError
from nuts.keysets import Keyset, derive_keyset_id_v2
from nuts.models import DLEQ, BlindSignature, KeysetInfo, KeysetKeys
from nuts.outputs import (
    BLANK_AMOUNT,
    PreparedOutput,
    derive_outputs,
    random_outputs,
    unblind_outputs,
    verify_proof_dleq,
)

AMOUNTS = (1, 2, 4, 8, 16)
SEED = bytes(range(64))


@dataclass
class FakeMint:
    """A keyset's private keys and the signing half of the protocol, nothing else."""

    private_keys: dict[int, PrivateKey]
    keyset: Keyset

    @classmethod
    def create(cls, salt: int = 0, unit: str = "sat") -> FakeMint:
        private_keys = {a: PrivateKey((1000 * (salt + 1) + a).to_bytes(32, "big")) for a in AMOUNTS}
        public_keys = {a: k.public_key for a, k in private_keys.items()}
        keyset_id = derive_keyset_id_v2(public_keys, unit)
        return cls(private_keys, Keyset(id=keyset_id, unit=unit, keys=public_keys))

    @property
    def id(self) -> str:
        return self.keyset.id

    def sign(self, output: PreparedOutput, amount: int | None = None, dleq: bool = True):
        """Sign the output's B_ with the key for `amount` (default: the output's amount)."""
        amount = output.amount if amount is None else amount
        k = self.private_keys[amount]
        B_ = PublicKey(bytes.fromhex(output.B_))
        e, s = mint_dleq(B_, k)
        return BlindSignature(
            amount=amount,
            id=self.id,
            C_=sign_blinded(B_, k).format().hex(),
            dleq=DLEQ(e=e.hex(), s=s.hex()) if dleq else None,
        )

    def accepts(self, proof) -> bool:
        """The mint's own check of a proof: C == k * hash_to_curve(secret)."""
        C = PublicKey(bytes.fromhex(proof.C))
        return verify_signature(proof.secret.encode(), C, self.private_keys[proof.amount])

    def wire_keys(self) -> KeysetKeys:
        return KeysetKeys(
            id=self.id,
            unit=self.keyset.unit,
            keys={a: k.public_key.format().hex() for a, k in self.private_keys.items()},
        )


@pytest.fixture
def mint() -> FakeMint:
    return FakeMint.create()


def outputs_for(mint: FakeMint, amounts, first_counter: int = 0) -> list[PreparedOutput]:
    return derive_outputs(SEED, mint.id, amounts, first_counter)


# --- unblinding -----------------------------------------------------------------------------------


def test_unblinded_proofs_are_accepted_by_the_mint(mint):
    outputs = outputs_for(mint, [1, 2, 4, 8, 16])
    proofs = unblind_outputs(outputs, [mint.sign(o) for o in outputs], {mint.id: mint.keyset})
    assert [p.amount for p in proofs] == [1, 2, 4, 8, 16]
    assert [p.secret for p in proofs] == [o.secret for o in outputs]
    assert all(p.id == mint.id for p in proofs)
    assert all(mint.accepts(p) for p in proofs)


def test_unblinded_proofs_of_random_outputs_are_accepted_by_the_mint(mint):
    outputs = random_outputs(mint.id, [4, 4])
    proofs = unblind_outputs(outputs, [mint.sign(o) for o in outputs], {mint.id: mint.keyset})
    assert all(mint.accepts(p) for p in proofs)


def test_unblinded_proof_keeps_the_dleq_with_our_blinding_factor(mint):
    [output] = outputs_for(mint, [8])
    signature = mint.sign(output)
    [proof] = unblind_outputs([output], [signature], {mint.id: mint.keyset})
    assert (proof.dleq.e, proof.dleq.s, proof.dleq.r) == (
        signature.dleq.e,
        signature.dleq.s,
        output.r,
    )
    assert proof.witness is None


def test_signature_without_dleq_is_unblinded_unchecked(mint):
    [output] = outputs_for(mint, [2])
    [proof] = unblind_outputs([output], [mint.sign(output, dleq=False)], {mint.id: mint.keyset})
    assert proof.dleq is None
    assert mint.accepts(proof)


def test_signature_with_a_wrong_dleq_raises(mint):
    first, second = outputs_for(mint, [4, 4])
    signature = mint.sign(first).model_copy(update={"dleq": mint.sign(second).dleq})
    with pytest.raises(InvalidSignatureError, match="DLEQ"):
        unblind_outputs([first], [signature], {mint.id: mint.keyset})


def test_signature_with_an_altered_dleq_s_raises(mint):
    [output] = outputs_for(mint, [4])
    signature = mint.sign(output)
    s = bytearray(bytes.fromhex(signature.dleq.s))
    s[-1] ^= 1
    forged = signature.model_copy(update={"dleq": DLEQ(e=signature.dleq.e, s=s.hex())})
    with pytest.raises(InvalidSignatureError):
        unblind_outputs([output], [forged], {mint.id: mint.keyset})


def test_signature_by_the_key_of_another_amount_raises(mint):
    [output] = outputs_for(mint, [8])
    by_key_1 = mint.sign(output, amount=1).model_copy(update={"amount": 8})
    with pytest.raises(InvalidSignatureError):
        unblind_outputs([output], [by_key_1], {mint.id: mint.keyset})


def test_signature_from_another_keyset_id_raises(mint):
    other = FakeMint.create(salt=1)
    [output] = outputs_for(mint, [2])
    signature = other.sign(output)
    keysets = {mint.id: mint.keyset, other.id: other.keyset}
    with pytest.raises(InvalidSignatureError, match="keyset"):
        unblind_outputs([output], [signature], keysets)


def test_more_signatures_than_outputs_raises(mint):
    outputs = outputs_for(mint, [1, 2])
    signatures = [mint.sign(o) for o in outputs]
    with pytest.raises(InvalidSignatureError, match="more signatures"):
        unblind_outputs(outputs[:1], signatures, {mint.id: mint.keyset})


def test_fewer_signatures_than_outputs_unblinds_only_the_signed_ones(mint):
    outputs = outputs_for(mint, [1, 2, 4])
    proofs = unblind_outputs(outputs, [mint.sign(outputs[0])], {mint.id: mint.keyset})
    assert [p.secret for p in proofs] == [outputs[0].secret]


def test_change_takes_the_amount_the_mint_chose(mint):
    blanks = outputs_for(mint, [BLANK_AMOUNT] * 4)
    # NUT-08: 10 sats of change come back on the first two blanks as 8 + 2.
    signatures = [mint.sign(blanks[0], amount=8), mint.sign(blanks[1], amount=2)]
    proofs = unblind_outputs(blanks, signatures, {mint.id: mint.keyset})
    assert [p.amount for p in proofs] == [8, 2]
    assert [p.secret for p in proofs] == [blanks[0].secret, blanks[1].secret]
    assert all(mint.accepts(p) for p in proofs)


def test_no_change_signatures_give_no_proofs(mint):
    assert unblind_outputs(outputs_for(mint, [1, 1]), [], {mint.id: mint.keyset}) == []


# --- verify_proof_dleq ----------------------------------------------------------------------------


def signed_proof(mint: FakeMint, amount: int = 8, dleq: bool = True):
    [output] = outputs_for(mint, [amount], first_counter=amount)
    [proof] = unblind_outputs([output], [mint.sign(output, dleq=dleq)], {mint.id: mint.keyset})
    return proof


def test_proof_with_a_good_dleq_verifies(mint):
    assert verify_proof_dleq(signed_proof(mint), mint.keyset) is True


def test_proof_with_a_tampered_amount_fails_dleq(mint):
    proof = signed_proof(mint, 8).model_copy(update={"amount": 16})
    assert verify_proof_dleq(proof, mint.keyset) is False


def test_proof_with_an_amount_outside_the_keyset_fails_dleq(mint):
    proof = signed_proof(mint, 8).model_copy(update={"amount": 3})
    assert verify_proof_dleq(proof, mint.keyset) is False


def test_proof_with_a_tampered_secret_fails_dleq(mint):
    proof = signed_proof(mint).model_copy(update={"secret": "00" * 32})
    assert verify_proof_dleq(proof, mint.keyset) is False


def test_proof_with_a_tampered_blinding_factor_fails_dleq(mint):
    proof = signed_proof(mint)
    dleq = proof.dleq.model_copy(update={"r": "11" * 32})
    assert verify_proof_dleq(proof.model_copy(update={"dleq": dleq}), mint.keyset) is False


def test_proof_checked_against_another_keyset_fails_dleq(mint):
    other = FakeMint.create(salt=1)
    assert verify_proof_dleq(signed_proof(mint), other.keyset) is False


def test_proof_with_malformed_dleq_hex_fails_dleq(mint):
    proof = signed_proof(mint)
    dleq = proof.dleq.model_copy(update={"e": "zz"})
    assert verify_proof_dleq(proof.model_copy(update={"dleq": dleq}), mint.keyset) is False


def test_proof_without_dleq_is_unverifiable_and_passes(mint):
    assert verify_proof_dleq(signed_proof(mint, dleq=False), mint.keyset) is True


# --- PreparedOutput -------------------------------------------------------------------------------


def test_prepared_output_round_trips_through_a_dict(mint):
    for output in outputs_for(mint, [1, 8], first_counter=3) + random_outputs(mint.id, [2]):
        assert PreparedOutput.from_dict(output.to_dict()) == output


def test_prepared_output_round_trips_through_json(mint):
    [output] = outputs_for(mint, [4], first_counter=9)
    assert PreparedOutput.from_dict(json.loads(json.dumps(output.to_dict()))) == output


def test_random_output_has_no_counter(mint):
    assert random_outputs(mint.id, [1])[0].counter is None


def test_prepared_output_blinded_message_is_what_the_mint_signs(mint):
    [output] = outputs_for(mint, [16])
    message = output.blinded_message
    assert (message.amount, message.id, message.B_) == (16, mint.id, output.B_)
    assert message.to_wire() == {"amount": 16, "id": mint.id, "B_": output.B_}


# --- Keyset.from_wire -----------------------------------------------------------------------------


def test_from_wire_accepts_keys_that_hash_to_their_id(mint):
    keyset = Keyset.from_wire(mint.wire_keys())
    assert keyset.id == mint.id
    assert keyset.keys == mint.keyset.keys
    assert keyset.amounts == sorted(AMOUNTS, reverse=True)


def test_from_wire_takes_fee_and_state_from_the_keyset_info(mint):
    public_keys = {a: k.public_key for a, k in mint.private_keys.items()}
    keyset_id = derive_keyset_id_v2(public_keys, "sat", input_fee_ppk=100)
    keys = mint.wire_keys().model_copy(update={"id": keyset_id})
    info = KeysetInfo(id=keyset_id, unit="sat", active=False, input_fee_ppk=100)
    keyset = Keyset.from_wire(keys, info)
    assert (keyset.input_fee_ppk, keyset.active) == (100, False)


def test_from_wire_rejects_a_fee_the_id_does_not_commit_to(mint):
    info = KeysetInfo(id=mint.id, unit="sat", input_fee_ppk=100)
    with pytest.raises(KeysetIdMismatchError):
        Keyset.from_wire(mint.wire_keys(), info)


def test_from_wire_rejects_a_forged_id(mint):
    forged_id = mint.id[:-1] + ("0" if mint.id[-1] != "0" else "1")
    with pytest.raises(KeysetIdMismatchError):
        Keyset.from_wire(mint.wire_keys().model_copy(update={"id": forged_id}))


def test_from_wire_rejects_a_swapped_key(mint):
    keys = mint.wire_keys()
    swapped = dict(keys.keys)
    swapped[8] = PrivateKey().public_key.format().hex()
    with pytest.raises(KeysetIdMismatchError):
        Keyset.from_wire(keys.model_copy(update={"keys": swapped}))


def test_from_wire_rejects_an_uncompressed_key(mint):
    keys = {a: k.public_key.format().hex() for a, k in mint.private_keys.items()}
    keys[4] = mint.private_keys[4].public_key.format(compressed=False).hex()
    honest_id = derive_keyset_id_v2(keys, "sat")  # the id matches: only the key format is wrong
    with pytest.raises(KeysetIdMismatchError, match="invalid key"):
        Keyset.from_wire(KeysetKeys(id=honest_id, unit="sat", keys=keys))
