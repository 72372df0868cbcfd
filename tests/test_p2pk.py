"""nuts.p2pk: NUT-10 well-known secrets, NUT-11 P2PK locks (SIG_INPUTS, SIG_ALL, multisig,
locktime and refund) and NUT-20 signed mint quotes."""

from __future__ import annotations

import json

import pytest
from coincurve import PrivateKey

from nuts.models import BlindedMessage, Proof
from nuts.p2pk import (
    SIG_ALL,
    SIG_INPUTS,
    P2PKConditions,
    SpendingConditionError,
    WellKnownSecret,
    p2pk_secret,
    parse_secret,
    schnorr_sign,
    schnorr_verify,
    sig_all_message,
    sign_mint_quote,
    sign_p2pk_inputs,
    verify_mint_quote_signature,
    verify_p2pk_proof,
)

KEYSET_ID = "009a1f293253e41e"
LOCKTIME = 1_700_000_000
BEFORE = LOCKTIME - 1
AFTER = LOCKTIME + 1


def key(n: int) -> PrivateKey:
    return PrivateKey((n + 1000).to_bytes(32, "big"))


def pub(k: PrivateKey) -> str:
    return k.public_key.format().hex()


ALICE, BOB, CAROL = key(1), key(2), key(3)


def locked_proof(secret: str, n: int = 0, witness: str | None = None) -> Proof:
    return Proof(
        id=KEYSET_ID,
        amount=8,
        secret=secret,
        C=pub(key(100 + n)),
        witness=witness,
    )


def witness_of(*signatures: str) -> str:
    return json.dumps({"signatures": list(signatures)})


def signed_by(proof: Proof, *keys: PrivateKey) -> Proof:
    """The proof with a witness holding each key's signature over its secret."""
    signatures = [schnorr_sign(k, proof.secret.encode()) for k in keys]
    return proof.model_copy(update={"witness": witness_of(*signatures)})


def outputs(n: int = 2) -> list[BlindedMessage]:
    return [BlindedMessage(amount=1 << i, id=KEYSET_ID, B_=pub(key(200 + i))) for i in range(n)]


# --- secrets --------------------------------------------------------------------------------------


def test_p2pk_secret_round_trips_through_parse_secret():
    secret = p2pk_secret(
        pub(ALICE),
        sigflag=SIG_ALL,
        pubkeys=[pub(BOB)],
        n_sigs=2,
        locktime=LOCKTIME,
        refund=[pub(CAROL)],
    )
    parsed = parse_secret(secret)
    assert parsed is not None
    assert parsed.kind == "P2PK"
    assert parsed.data == pub(ALICE)
    assert parsed.tag("sigflag") == [SIG_ALL]
    assert parsed.tag("pubkeys") == [pub(BOB)]
    assert parsed.tag("n_sigs") == ["2"]
    assert parsed.tag("locktime") == [str(LOCKTIME)]
    assert parsed.tag("refund") == [pub(CAROL)]
    assert parsed.serialize() == secret


def test_p2pk_secret_conditions_are_read_back():
    secret = p2pk_secret(
        pub(ALICE), pubkeys=[pub(BOB)], n_sigs=2, locktime=LOCKTIME, refund=[pub(CAROL)]
    )
    conditions = P2PKConditions.of(parse_secret(secret))
    assert conditions.keys == [pub(ALICE), pub(BOB)]
    assert conditions.n_sigs == 2
    assert conditions.refund_keys == [pub(CAROL)]
    assert conditions.n_sigs_refund == 1
    assert conditions.locktime == LOCKTIME
    assert conditions.sigflag == SIG_INPUTS


def test_plain_p2pk_secret_has_no_tags_and_defaults_to_sig_inputs():
    parsed = parse_secret(p2pk_secret(pub(ALICE)))
    assert parsed.tags == []
    conditions = P2PKConditions.of(parsed)
    assert (conditions.n_sigs, conditions.locktime, conditions.sigflag) == (1, None, SIG_INPUTS)


def test_p2pk_secrets_get_a_fresh_nonce_each_time():
    first, second = parse_secret(p2pk_secret(pub(ALICE))), parse_secret(p2pk_secret(pub(ALICE)))
    assert first.nonce != second.nonce
    assert len(bytes.fromhex(first.nonce)) == 16


def test_plain_random_secret_is_not_a_well_known_secret():
    assert parse_secret("407915bc212be61a77e3e6d2aeb4c727980bda51cd06a6afc29e2861768a7837") is None


@pytest.mark.parametrize(
    "secret",
    [
        "[not json",
        '["P2PK"]',
        '["P2PK", {"data": "x"}, 3]',
        '["P2PK", "body"]',
        '["P2PK", {"data": "02ab"}]',
        '["P2PK", {"nonce": "00"}]',
        '["P2PK", {"nonce": "00", "data": "x", "tags": "sigflag"}]',
        '["P2PK", {"nonce": "00", "data": "x", "tags": [["n_sigs", 2]]}]',
        '["P2PK", {"nonce": "00", "data": "x", "tags": [[1, "2"]]}]',
    ],
)
def test_malformed_well_known_secret_raises(secret):
    with pytest.raises(SpendingConditionError):
        parse_secret(secret)


def test_well_known_secret_with_non_string_data_is_malformed():
    with pytest.raises(SpendingConditionError):
        verify_p2pk_proof(locked_proof('["P2PK", {"nonce": "00", "data": 5}]'))


def test_conditions_of_a_non_p2pk_secret_raise():
    htlc = WellKnownSecret(kind="HTLC", data="00" * 32, nonce="00")
    with pytest.raises(SpendingConditionError):
        P2PKConditions.of(htlc)


def test_unparsable_locktime_is_a_permanent_lock():
    secret = WellKnownSecret("P2PK", pub(ALICE), "00", [["locktime", "soon"], ["refund", pub(BOB)]])
    proof = locked_proof(secret.serialize())
    assert P2PKConditions.of(secret).locktime is None
    assert verify_p2pk_proof(signed_by(proof, BOB), now=2**40) is False
    assert verify_p2pk_proof(signed_by(proof, ALICE), now=2**40) is True


# --- SIG_INPUTS -----------------------------------------------------------------------------------


def test_signed_inputs_verify():
    inputs = [locked_proof(p2pk_secret(pub(ALICE)), n) for n in range(3)]
    signed = sign_p2pk_inputs(inputs, ALICE)
    assert all(p.witness for p in signed)
    assert all(verify_p2pk_proof(p) for p in signed)


def test_locked_input_without_witness_does_not_verify():
    assert verify_p2pk_proof(locked_proof(p2pk_secret(pub(ALICE)))) is False


def test_plain_proof_needs_no_witness():
    assert verify_p2pk_proof(locked_proof("ab" * 32)) is True


def test_signing_leaves_unlocked_inputs_untouched():
    plain = locked_proof("ab" * 32, 1)
    locked = locked_proof(p2pk_secret(pub(ALICE)), 2)
    signed_plain, signed_locked = sign_p2pk_inputs([plain, locked], ALICE)
    assert signed_plain == plain
    assert signed_locked.witness is not None


def test_signature_by_another_key_does_not_verify():
    proof = locked_proof(p2pk_secret(pub(ALICE)))
    assert verify_p2pk_proof(sign_p2pk_inputs([proof], BOB)[0]) is False


def test_signature_over_another_secret_does_not_verify():
    proof = locked_proof(p2pk_secret(pub(ALICE)))
    other = signed_by(locked_proof(p2pk_secret(pub(ALICE))), ALICE)
    assert verify_p2pk_proof(proof.model_copy(update={"witness": other.witness})) is False


@pytest.mark.parametrize(
    "witness", ["not json", "[]", '{"signatures": ["zz"]}', '{"signatures": [""]}', '{"sig": 1}']
)
def test_garbage_witness_does_not_verify(witness):
    assert verify_p2pk_proof(locked_proof(p2pk_secret(pub(ALICE)), witness=witness)) is False


def test_witness_whose_signatures_are_not_a_list_does_not_verify():
    proof = locked_proof(p2pk_secret(pub(ALICE)), witness='{"signatures": 5}')
    assert verify_p2pk_proof(proof) is False


def test_key_matches_by_x_coordinate_whatever_its_parity_prefix():
    x_only = pub(ALICE)[2:]
    flipped = ("03" if pub(ALICE).startswith("02") else "02") + x_only
    proof = locked_proof(p2pk_secret(flipped))
    assert verify_p2pk_proof(signed_by(proof, ALICE)) is True


# --- multisig -------------------------------------------------------------------------------------


def two_of_two() -> Proof:
    return locked_proof(p2pk_secret(pub(ALICE), pubkeys=[pub(BOB)], n_sigs=2))


def test_two_of_two_with_one_signature_does_not_verify():
    assert verify_p2pk_proof(signed_by(two_of_two(), ALICE)) is False
    assert verify_p2pk_proof(sign_p2pk_inputs([two_of_two()], BOB)[0]) is False


def test_two_of_two_with_both_signatures_verifies():
    assert verify_p2pk_proof(signed_by(two_of_two(), ALICE, BOB)) is True
    assert verify_p2pk_proof(signed_by(two_of_two(), BOB, ALICE)) is True


def test_the_same_signature_twice_counts_once():
    proof = two_of_two()
    signature = schnorr_sign(ALICE, proof.secret.encode())
    doubled = proof.model_copy(update={"witness": witness_of(signature, signature)})
    assert verify_p2pk_proof(doubled) is False


def test_two_of_two_with_an_outsider_signature_does_not_verify():
    assert verify_p2pk_proof(signed_by(two_of_two(), ALICE, CAROL)) is False


def test_one_of_two_is_met_by_either_key():
    proof = locked_proof(p2pk_secret(pub(ALICE), pubkeys=[pub(BOB)]))
    assert verify_p2pk_proof(signed_by(proof, ALICE)) is True
    assert verify_p2pk_proof(signed_by(proof, BOB)) is True


def test_negative_n_sigs_is_never_met_without_signatures():
    proof = locked_proof(p2pk_secret(pub(ALICE), pubkeys=[pub(BOB)], n_sigs=-1))
    try:
        satisfied = verify_p2pk_proof(proof)
    except SpendingConditionError:
        satisfied = False
    assert satisfied is False


@pytest.mark.parametrize(
    "conditions",
    [
        {"pubkeys": [pub(ALICE)]},
        {"pubkeys": [pub(BOB), pub(BOB)]},
        {"pubkeys": [("03" if pub(ALICE)[:2] == "02" else "02") + pub(ALICE)[2:]]},
        {"refund": [pub(BOB), pub(BOB)], "locktime": LOCKTIME},
    ],
    ids=["data-repeated", "pubkeys-repeated", "same-x-other-parity", "refund-repeated"],
)
def test_duplicate_key_in_a_pathway_raises(conditions):
    proof = locked_proof(p2pk_secret(pub(ALICE), **conditions))
    with pytest.raises(SpendingConditionError, match="same key twice"):
        P2PKConditions.of(parse_secret(proof.secret))
    with pytest.raises(SpendingConditionError):
        verify_p2pk_proof(signed_by(proof, ALICE))


# --- locktime and refund --------------------------------------------------------------------------


def test_expired_lock_without_refund_keys_is_spendable_without_witness():
    proof = locked_proof(p2pk_secret(pub(ALICE), locktime=LOCKTIME))
    assert verify_p2pk_proof(proof, now=AFTER) is True


def test_unexpired_lock_without_refund_keys_needs_the_signature():
    proof = locked_proof(p2pk_secret(pub(ALICE), locktime=LOCKTIME))
    assert verify_p2pk_proof(proof, now=BEFORE) is False
    assert verify_p2pk_proof(signed_by(proof, ALICE), now=BEFORE) is True


def test_refund_signature_works_after_the_locktime():
    proof = locked_proof(p2pk_secret(pub(ALICE), locktime=LOCKTIME, refund=[pub(BOB)]))
    assert verify_p2pk_proof(signed_by(proof, BOB), now=AFTER) is True


def test_refund_signature_does_not_work_before_the_locktime():
    proof = locked_proof(p2pk_secret(pub(ALICE), locktime=LOCKTIME, refund=[pub(BOB)]))
    assert verify_p2pk_proof(signed_by(proof, BOB), now=BEFORE) is False


def test_expired_lock_with_refund_keys_still_needs_a_signature():
    proof = locked_proof(p2pk_secret(pub(ALICE), locktime=LOCKTIME, refund=[pub(BOB)]))
    assert verify_p2pk_proof(proof, now=AFTER) is False
    assert verify_p2pk_proof(signed_by(proof, CAROL), now=AFTER) is False


def test_main_key_still_works_after_the_locktime():
    proof = locked_proof(p2pk_secret(pub(ALICE), locktime=LOCKTIME, refund=[pub(BOB)]))
    assert verify_p2pk_proof(signed_by(proof, ALICE), now=AFTER) is True


def test_refund_pathway_honours_n_sigs_refund():
    secret = WellKnownSecret(
        "P2PK",
        pub(ALICE),
        "00",
        [["locktime", str(LOCKTIME)], ["refund", pub(BOB), pub(CAROL)], ["n_sigs_refund", "2"]],
    )
    proof = locked_proof(secret.serialize())
    assert verify_p2pk_proof(signed_by(proof, BOB), now=AFTER) is False
    assert verify_p2pk_proof(signed_by(proof, BOB, CAROL), now=AFTER) is True


# --- SIG_ALL --------------------------------------------------------------------------------------


def sig_all_inputs() -> list[Proof]:
    return [locked_proof(p2pk_secret(pub(ALICE), sigflag=SIG_ALL), n) for n in range(3)]


def test_sig_all_puts_one_signature_on_the_first_input_only():
    inputs, outs = sig_all_inputs(), outputs()
    signed = sign_p2pk_inputs(inputs, ALICE, outs)
    signatures = json.loads(signed[0].witness)["signatures"]
    assert len(signatures) == 1
    assert signed[1:] == inputs[1:]
    assert all(p.witness is None for p in signed[1:])


def test_sig_all_signature_covers_the_sig_all_message():
    inputs, outs = sig_all_inputs(), outputs()
    signed = sign_p2pk_inputs(inputs, ALICE, outs)
    [signature] = json.loads(signed[0].witness)["signatures"]
    message = sig_all_message(inputs, outs).encode()
    assert schnorr_verify(pub(ALICE), message, signature)


def test_sig_all_signature_does_not_cover_other_outputs():
    inputs, outs = sig_all_inputs(), outputs()
    signed = sign_p2pk_inputs(inputs, ALICE, outs)
    [signature] = json.loads(signed[0].witness)["signatures"]
    message = sig_all_message(inputs, list(reversed(outs))).encode()
    assert not schnorr_verify(pub(ALICE), message, signature)


def test_sig_all_signature_for_a_melt_covers_the_quote_id():
    inputs, outs = sig_all_inputs(), outputs()
    signed = sign_p2pk_inputs(inputs, ALICE, outs, quote_id="quote-1")
    [signature] = json.loads(signed[0].witness)["signatures"]
    assert schnorr_verify(pub(ALICE), sig_all_message(inputs, outs, "quote-1").encode(), signature)
    assert not schnorr_verify(pub(ALICE), sig_all_message(inputs, outs).encode(), signature)


def test_sig_all_message_concatenates_inputs_outputs_and_quote():
    inputs, outs = sig_all_inputs()[:2], outputs(2)
    expected = (
        inputs[0].secret
        + inputs[0].C
        + inputs[1].secret
        + inputs[1].C
        + f"1{outs[0].B_}"
        + f"2{outs[1].B_}"
        + "q"
    )
    assert sig_all_message(inputs, outs, "q") == expected


# --- NUT-20 ---------------------------------------------------------------------------------------


def test_mint_quote_signature_round_trips():
    outs = outputs(3)
    signature = sign_mint_quote(ALICE, "quote-1", outs)
    assert verify_mint_quote_signature(pub(ALICE), "quote-1", outs, signature) is True


def test_mint_quote_signature_fails_for_reordered_outputs():
    outs = outputs(3)
    signature = sign_mint_quote(ALICE, "quote-1", outs)
    reordered = [outs[1], outs[0], outs[2]]
    assert verify_mint_quote_signature(pub(ALICE), "quote-1", reordered, signature) is False


def test_mint_quote_signature_fails_for_another_quote():
    outs = outputs(3)
    signature = sign_mint_quote(ALICE, "quote-1", outs)
    assert verify_mint_quote_signature(pub(ALICE), "quote-2", outs, signature) is False


def test_mint_quote_signature_fails_for_another_key():
    outs = outputs(3)
    signature = sign_mint_quote(ALICE, "quote-1", outs)
    assert verify_mint_quote_signature(pub(BOB), "quote-1", outs, signature) is False


def test_schnorr_verify_rejects_garbage_instead_of_raising():
    assert schnorr_verify("zz", b"m", "00" * 64) is False
    assert schnorr_verify(pub(ALICE), b"m", "not hex") is False
