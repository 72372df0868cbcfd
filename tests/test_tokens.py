"""nuts.tokens: V4 (cashuB, CBOR) and V3 (cashuA, JSON) tokens; every bad token is an
InvalidTokenError with a message that says what is wrong."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import cbor2
import pytest
from coincurve import PrivateKey

from nuts.errors import AmbiguousKeysetIdError, InvalidTokenError, UnknownKeysetError
from nuts.models import Proof, ProofDLEQ
from nuts.tokens import (
    Token,
    decode_token,
    encode_token_v3,
    encode_token_v4,
    expand_keyset_ids,
)

MINT = "https://mint.example.com"
V1_ID = "009a1f293253e41e"
V2_ID = "01" + "ab" * 32
OTHER_V2_ID = "01" + "ab" * 7 + "cd" * 25  # shares V2_ID's first 8 bytes
UNRELATED_V2_ID = "01" + "ef" * 32


def point(seed: int) -> str:
    return PrivateKey((seed + 1).to_bytes(32, "big")).public_key.format().hex()


def scalar(seed: int) -> str:
    return (seed + 7).to_bytes(32, "big").hex()


def make_proof(
    amount: int = 8,
    keyset_id: str = V2_ID,
    n: int = 0,
    *,
    dleq: bool = False,
    witness: str | None = None,
) -> Proof:
    return Proof(
        id=keyset_id,
        amount=amount,
        secret=f"{n:064x}",
        C=point(n),
        dleq=ProofDLEQ(e=scalar(n), s=scalar(n + 100), r=scalar(n + 200)) if dleq else None,
        witness=witness,
    )


def rich_token() -> Token:
    """Memo, unit, DLEQ, witness, two keysets: everything a token can carry."""
    return Token(
        mint=MINT,
        unit="usd",
        memo="thanks for lunch ☕ >>>??? ~~~",
        proofs=[
            make_proof(8, V2_ID, 1, dleq=True),
            make_proof(2, V2_ID, 2, witness=json.dumps({"signatures": ["aa" * 64]})),
            make_proof(1, V1_ID, 3, dleq=True, witness='{"preimage":"00"}'),
        ],
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def v3_text(data: Any) -> str:
    return "cashuA" + b64(json.dumps(data).encode())


def v4_text(data: Any) -> str:
    return "cashuB" + b64(cbor2.dumps(data))


def v3_proof(**overrides: Any) -> dict:
    proof = {"amount": 8, "id": V1_ID, "secret": "s1", "C": point(1)}
    proof.update(overrides)
    return {k: v for k, v in proof.items() if v is not ...}


def v3_data(*proofs: dict, mint: str = MINT, **extra: Any) -> dict:
    return {"token": [{"mint": mint, "proofs": list(proofs) or [v3_proof()]}], **extra}


def v4_proof(**overrides: Any) -> dict:
    proof = {"a": 8, "s": "s1", "c": bytes.fromhex(point(1))}
    proof.update(overrides)
    return {k: v for k, v in proof.items() if v is not ...}


def v4_data(*proofs: dict, keyset_id: bytes = bytes.fromhex(V2_ID), **overrides: Any) -> dict:
    data = {
        "t": [{"i": keyset_id, "p": list(proofs) or [v4_proof()]}],
        "m": MINT,
        "u": "sat",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not ...}


def assert_invalid(text: Any, *message_parts: str) -> InvalidTokenError:
    with pytest.raises(InvalidTokenError) as excinfo:
        decode_token(text)
    assert excinfo.type is InvalidTokenError
    message = str(excinfo.value).lower()
    for part in message_parts:
        assert part.lower() in message, message
    return excinfo.value


# --- round trips ----------------------------------------------------------------------------------


def test_v4_round_trip_keeps_memo_unit_dleq_and_witness():
    token = rich_token()
    text = encode_token_v4(token)
    assert text.startswith("cashuB")
    assert decode_token(text) == token


def test_v3_round_trip_keeps_memo_unit_dleq_and_witness():
    token = rich_token()
    text = encode_token_v3(token)
    assert text.startswith("cashuA")
    assert decode_token(text) == token


def test_round_trip_without_memo_leaves_memo_none():
    token = Token(mint=MINT, unit="sat", proofs=[make_proof()])
    assert decode_token(encode_token_v4(token)).memo is None
    assert decode_token(encode_token_v3(token)).memo is None


def test_v4_encoding_is_deterministic():
    assert encode_token_v4(rich_token()) == encode_token_v4(rich_token())


def test_v4_encoding_has_no_base64_padding():
    assert "=" not in encode_token_v4(rich_token())
    assert "=" not in encode_token_v3(rich_token())


def test_token_amount_and_keyset_ids():
    token = rich_token()
    assert token.amount == 11
    assert token.keyset_ids == sorted({V1_ID, V2_ID})


def test_v3_token_without_unit_defaults_to_sat():
    assert decode_token(v3_text(v3_data())).unit == "sat"


def test_v3_mint_url_loses_its_trailing_slash():
    assert decode_token(v3_text(v3_data(mint=MINT + "/"))).mint == MINT


@pytest.mark.parametrize("encode", [encode_token_v4, encode_token_v3])
def test_decoding_accepts_base64_padding(encode):
    padding_seen = set()
    for extra in ("", "x", "xy"):  # one of three payload lengths needs "=", another "=="
        token = rich_token()
        token.memo += extra
        text = encode(token)
        padding = "=" * (-(len(text) - len("cashuX")) % 4)
        padding_seen.add(padding)
        assert decode_token(text + padding) == token
    assert padding_seen == {"", "=", "=="}


@pytest.mark.parametrize("encode", [encode_token_v4, encode_token_v3])
def test_decoding_accepts_the_standard_base64_alphabet(encode):
    text = encode(rich_token())
    standard = text[:6] + text[6:].replace("-", "+").replace("_", "/")
    assert standard != text  # the fixture must contain url-safe-only characters
    assert decode_token(standard) == rich_token()


def test_decoding_accepts_the_cashu_uri_prefix():
    text = encode_token_v4(rich_token())
    assert decode_token("cashu:" + text) == rich_token()
    assert decode_token("CASHU:" + text) == rich_token()


def test_decoding_ignores_surrounding_whitespace():
    assert decode_token("  " + encode_token_v4(rich_token()) + "\n") == rich_token()


# --- short keyset ids -----------------------------------------------------------------------------


def short_id_token() -> Token:
    return Token(mint=MINT, unit="sat", proofs=[make_proof(4, V2_ID[:16], 1)])


def test_v4_token_may_carry_a_short_keyset_id():
    token = short_id_token()
    assert decode_token(encode_token_v4(token)).proofs[0].id == V2_ID[:16]


def test_expand_keyset_ids_replaces_a_short_id_with_the_full_id():
    expanded = expand_keyset_ids(short_id_token(), [UNRELATED_V2_ID, V2_ID])
    assert [p.id for p in expanded.proofs] == [V2_ID]
    assert expanded.amount == short_id_token().amount
    assert expanded.mint == MINT


def test_expand_keyset_ids_keeps_full_ids():
    token = rich_token()
    assert expand_keyset_ids(token, [V1_ID, V2_ID, OTHER_V2_ID]) == token


def test_expand_keyset_ids_unknown_short_id_raises():
    with pytest.raises(UnknownKeysetError):
        expand_keyset_ids(short_id_token(), [UNRELATED_V2_ID])


def test_expand_keyset_ids_ambiguous_short_id_raises():
    with pytest.raises(AmbiguousKeysetIdError):
        expand_keyset_ids(short_id_token(), [V2_ID, OTHER_V2_ID])


# --- malformed tokens -----------------------------------------------------------------------------


def test_empty_string_is_invalid():
    assert_invalid("", "cashuA or cashuB")


def test_unknown_prefix_is_invalid():
    assert_invalid("cashuC" + encode_token_v4(rich_token())[6:], "cashuA or cashuB")


@pytest.mark.parametrize("value", [None, b"cashuBo2F0", 42])
def test_non_string_input_is_invalid(value):
    assert_invalid(value, "must be a string")


@pytest.mark.parametrize("encode", [encode_token_v4, encode_token_v3])
def test_truncated_token_is_invalid(encode):
    text = encode(rich_token())
    with pytest.raises(InvalidTokenError) as excinfo:
        decode_token(text[: len(text) // 2])
    assert excinfo.type is InvalidTokenError
    assert any(w in str(excinfo.value) for w in ("base64", "CBOR", "JSON")), excinfo.value


def test_base64_with_impossible_length_is_invalid():
    assert_invalid("cashuBabcde", "base64")


def test_base64_garbage_is_invalid():
    assert_invalid("cashuB!!!!")


def test_characters_outside_the_base64_alphabet_are_rejected():
    text = encode_token_v4(rich_token())
    middle = len(text) // 2
    assert_invalid(text[:middle] + "!*!*" + text[middle:])


def test_bad_cbor_is_invalid():
    assert_invalid("cashuB" + b64(b"\xff\xfe\xfd"), "CBOR")


def test_bad_json_is_invalid():
    assert_invalid("cashuA" + b64(b"{not json"), "JSON")


def test_json_that_is_not_valid_utf8_is_invalid():
    assert_invalid("cashuA" + b64(b'{"token": "\xff\xfe"}'), "JSON")


def test_json_list_instead_of_object_is_invalid():
    assert_invalid("cashuA" + b64(b"[1, 2]"), "token", "dict")


def test_cbor_list_instead_of_map_is_invalid():
    assert_invalid(v4_text([1, 2]), "token", "dict")


def test_deeply_nested_json_is_invalid():
    assert_invalid("cashuA" + b64(b"[" * 100_000), "JSON")


def test_deeply_nested_cbor_is_invalid():
    assert_invalid("cashuB" + b64(b"\x81" * 100_000), "CBOR")


def test_token_longer_than_the_limit_is_invalid():
    assert_invalid("cashuB" + "A" * 1_000_001, "too long")


MISSING_FIELDS = {
    "v3 without token list": ({"unit": "sat"}, "'token' list"),
    "v3 token entry not an object": ({"token": ["x"]}, "token entry"),
    "v3 without mint": ({"token": [{"proofs": [v3_proof()]}]}, "mint url"),
    "v3 without proofs": ({"token": [{"mint": MINT}]}, "proofs"),
    "v3 proof without amount": (v3_data(v3_proof(amount=...)), "amount"),
    "v3 proof without id": (v3_data(v3_proof(id=...)), "keyset id"),
    "v3 proof without secret": (v3_data(v3_proof(secret=...)), "secret"),
    "v3 proof without C": (v3_data(v3_proof(C=...)), "signature c"),
    "v3 dleq without r": (v3_data(v3_proof(dleq={"e": "00", "s": "00"})), "dleq r"),
}


@pytest.mark.parametrize(("data", "message"), MISSING_FIELDS.values(), ids=MISSING_FIELDS.keys())
def test_v3_token_missing_a_field_is_invalid(data, message):
    assert_invalid(v3_text(data), message)


V4_MISSING_FIELDS = {
    "without mint": (v4_data(m=...), "mint url"),
    "without unit": (v4_data(u=...), "unit"),
    "without proof groups": (v4_data(t=...), "proof groups"),
    "group without keyset id": ({"t": [{"p": [v4_proof()]}], "m": MINT, "u": "sat"}, "keyset id"),
    "group without proofs": ({"t": [{"i": b"\x00" * 8}], "m": MINT, "u": "sat"}, "proofs"),
    "proof without amount": (v4_data(v4_proof(a=...)), "amount"),
    "proof without secret": (v4_data(v4_proof(s=...)), "secret"),
    "proof without signature": (v4_data(v4_proof(c=...)), "signature"),
    "dleq without e": (v4_data(v4_proof(d={"s": b"\x01", "r": b"\x01"})), "dleq e"),
}


@pytest.mark.parametrize(
    ("data", "message"), V4_MISSING_FIELDS.values(), ids=V4_MISSING_FIELDS.keys()
)
def test_v4_token_missing_a_field_is_invalid(data, message):
    assert_invalid(v4_text(data), message)


WRONG_TYPES = {
    "amount as string": (v3_proof(amount="8"), "amount must be an integer"),
    "amount as bool": (v3_proof(amount=True), "amount must be an integer"),
    "amount as float": (v3_proof(amount=8.0), "amount must be an integer"),
    "C not hex": (v3_proof(C="zz" * 33), "signature c is not hex"),
    "C not a compressed point": (v3_proof(C="04" + "11" * 32), "compressed point"),
    "C too short": (v3_proof(C=point(1)[:64]), "compressed point"),
    "keyset id wrong length": (v3_proof(id="00abcd"), "invalid length"),
    "keyset id not hex": (v3_proof(id="zz" * 8), "keyset id is not hex"),
    "secret empty": (v3_proof(secret=""), "secret must be a non-empty string"),
    "secret not a string": (v3_proof(secret=123), "secret must be a non-empty string"),
    "witness not a string": (v3_proof(witness={"signatures": []}), "witness"),
}


@pytest.mark.parametrize(("proof", "message"), WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_v3_proof_field_of_wrong_type_is_invalid(proof, message):
    assert_invalid(v3_text(v3_data(proof)), message)


V4_WRONG_TYPES = {
    "amount as string": (v4_data(v4_proof(a="8")), "amount must be an integer"),
    "amount as bool": (v4_data(v4_proof(a=True)), "amount must be an integer"),
    "signature as hex string": (v4_data(v4_proof(c=point(1))), "signature"),
    "keyset id wrong length": (v4_data(keyset_id=b"\x00" * 5), "invalid length"),
    "keyset id as string": (v4_data(keyset_id=V1_ID), "keyset id"),
    "secret empty": (v4_data(v4_proof(s="")), "secret must be a non-empty string"),
    "secret as bytes": (v4_data(v4_proof(s=b"s1")), "secret must be a non-empty string"),
    "memo not a string": (v4_data(d=5), "memo"),
    "unit empty": (v4_data(u=""), "empty unit"),
}


@pytest.mark.parametrize(("data", "message"), V4_WRONG_TYPES.values(), ids=V4_WRONG_TYPES.keys())
def test_v4_field_of_wrong_type_is_invalid(data, message):
    assert_invalid(v4_text(data), message)


@pytest.mark.parametrize("amount", [0, -1, -(2**64), 2**64])
def test_amount_out_of_range_is_invalid(amount):
    assert_invalid(v3_text(v3_data(v3_proof(amount=amount))), "out of range")
    assert_invalid(v4_text(v4_data(v4_proof(a=amount))), "out of range")


def test_v3_token_with_two_mints_is_invalid():
    data = {
        "token": [
            {"mint": MINT, "proofs": [v3_proof(secret="a")]},
            {"mint": "https://other.example.com", "proofs": [v3_proof(secret="b")]},
        ]
    }
    assert_invalid(v3_text(data), "exactly one mint")


def test_v3_entries_of_the_same_mint_merge():
    data = {
        "token": [
            {"mint": MINT, "proofs": [v3_proof(secret="a")]},
            {"mint": MINT + "/", "proofs": [v3_proof(secret="b")]},
        ]
    }
    assert [p.secret for p in decode_token(v3_text(data)).proofs] == ["a", "b"]


def test_v3_token_with_no_entries_is_invalid():
    assert_invalid(v3_text({"token": []}), "mint")


def test_token_with_no_proofs_is_invalid():
    assert_invalid(v3_text({"token": [{"mint": MINT, "proofs": []}]}), "no proofs")
    assert_invalid(v4_text(v4_data(t=[])), "no proofs")
    assert_invalid(v4_text(v4_data(t=[{"i": bytes.fromhex(V2_ID), "p": []}])), "no proofs")


def test_token_with_a_duplicated_proof_is_invalid():
    assert_invalid(v3_text(v3_data(v3_proof(), v3_proof())), "same proof twice")
    assert_invalid(v4_text(v4_data(v4_proof(), v4_proof())), "same proof twice")


@pytest.mark.parametrize(
    "mint", ["ftp://mint.example.com", "mint.example.com", "javascript:alert(1)", ""]
)
def test_mint_url_that_is_not_http_is_invalid(mint):
    assert_invalid(v3_text(v3_data(mint=mint)), "http(s)")
    assert_invalid(v4_text(v4_data(m=mint)), "http(s)")


def test_mint_url_that_is_not_a_string_is_invalid():
    assert_invalid(v4_text(v4_data(m=5)), "mint url")


def test_mint_url_without_a_host_is_invalid():
    assert_invalid(v3_text(v3_data(mint="https://")))


def test_secret_that_is_not_encodable_text_is_invalid():
    assert_invalid(v3_text(v3_data(v3_proof(secret="\ud800"))), "secret")


# --- fuzz -----------------------------------------------------------------------------------------


def assert_invalid_or_sound(text: str) -> None:
    """decode_token either raises InvalidTokenError or returns a token that can be used."""
    try:
        token = decode_token(text)
    except InvalidTokenError:
        return
    assert token.mint.startswith(("http://", "https://")), token
    assert token.unit and token.proofs
    assert all(isinstance(p.amount, int) and p.amount > 0 for p in token.proofs), token
    assert all(p.secret.encode() for p in token.proofs)
    assert decode_token(encode_token_v4(token)) == token
    assert decode_token(encode_token_v3(token)) == token


def _mutate(rng: random.Random, data: bytes | str, alphabet: bytes | str) -> Any:
    items = list(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(["flip", "insert", "delete", "truncate"])
        position = rng.randrange(len(items)) if items else 0
        if op == "flip" and items:
            items[position] = rng.choice(alphabet)
        elif op == "insert":
            items.insert(position, rng.choice(alphabet))
        elif op == "delete" and items:
            del items[position]
        elif op == "truncate":
            items = items[:position]
    return bytes(items) if isinstance(data, bytes) else "".join(items)


B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/="


def test_fuzz_random_base64_payloads_never_raise_anything_but_invalid_token():
    rng = random.Random(1234)
    for _ in range(1000):
        payload = rng.randbytes(rng.randint(0, 200))
        assert_invalid_or_sound(rng.choice(["cashuA", "cashuB"]) + b64(payload))


def test_fuzz_mutated_tokens_never_raise_anything_but_invalid_token():
    rng = random.Random(1234)
    token = rich_token()
    texts = [encode_token_v4(token), encode_token_v3(token)]
    raw_v4 = base64.urlsafe_b64decode(texts[0][6:] + "==")
    raw_v3 = base64.urlsafe_b64decode(texts[1][6:] + "==")
    byte_alphabet = bytes(range(256))
    for case in range(1500):
        kind = case % 3
        if kind == 0:
            text = rng.choice(texts)
            assert_invalid_or_sound(text[:6] + _mutate(rng, text[6:], B64_ALPHABET))
        elif kind == 1:
            assert_invalid_or_sound("cashuB" + b64(_mutate(rng, raw_v4, byte_alphabet)))
        else:
            assert_invalid_or_sound("cashuA" + b64(_mutate(rng, raw_v3, b'{}[]",:0123456789ax')))
