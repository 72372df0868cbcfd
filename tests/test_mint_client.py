"""MintClient against httpx.MockTransport: request shapes, answer mapping, error typing."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable

import httpx
import pytest
from coincurve import PrivateKey

from nuts.client import MintClient, close_mint_clients, get_mint_client, sort_outputs
from nuts.errors import (
    MINT_ERRORS,
    KeysetInactiveError,
    MintAmbiguousError,
    MintRejectedError,
    MintServerError,
    MintTimeoutError,
    MintUnreachableError,
    ProofsAlreadySpentError,
    QuoteNotPaidError,
    mint_error_from_response,
)
from nuts.models import (
    BlindedMessage,
    MeltQuoteState,
    MintQuoteState,
    Proof,
    ProofSpentState,
)
from nuts.p2pk import verify_mint_quote_signature

MINT = "https://mint.test"
KEYSET = "009a1f293253e41e"

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, **kwargs) -> MintClient:
    return MintClient(MINT, transport=httpx.MockTransport(handler), **kwargs)


def output(amount: int, tag: str) -> BlindedMessage:
    return BlindedMessage(amount=amount, id=KEYSET, B_=f"02{tag}")


def proof(amount: int, secret: str = "s") -> Proof:
    return Proof(id=KEYSET, amount=amount, secret=secret, C="02cc")


def sign(outputs: list[dict]) -> list[dict]:
    """What a mint answers: one signature per sent output, in the sent order, C_ tagged by B_."""
    return [{"id": o["id"], "amount": o["amount"], "C_": "C" + o["B_"]} for o in outputs]


def melt_quote_body(**extra) -> dict:
    body = {"quote": "mq1", "amount": 100, "fee_reserve": 2, "state": "UNPAID", "expiry": 1}
    body.update(extra)
    return body


def rejecting(status: int, body: object) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, (dict, list)):
            return httpx.Response(status, json=body)
        return httpx.Response(status, text=str(body))

    return handler


# --- request shapes and answers ---------------------------------------------------------------


def test_url_is_normalized_without_trailing_slash() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"name": "m", "nuts": {}})

    client = MintClient("https://mint.test/cashu/ ", transport=httpx.MockTransport(handler))
    client.info()
    assert client.url == "https://mint.test/cashu"
    assert seen == ["https://mint.test/cashu/v1/info"]


def test_info_parses_mint_info() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("GET", "/v1/info")
        return httpx.Response(
            200,
            json={"name": "m", "version": "Nutshell/0.20.2", "nuts": {"7": {"supported": True}}},
        )

    info = client_for(handler).info()
    assert info.name == "m"
    assert info.supports(7)


def test_keysets_and_keys_parse_and_address_one_keyset() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/v1/keysets":
            return httpx.Response(
                200, json={"keysets": [{"id": KEYSET, "unit": "sat", "active": True}]}
            )
        return httpx.Response(
            200,
            json={
                "keysets": [{"id": KEYSET, "unit": "sat", "active": True, "keys": {"1": "02aa"}}]
            },
        )

    client = client_for(handler)
    assert [k.id for k in client.keysets()] == [KEYSET]
    assert client.keys()[0].keys == {1: "02aa"}
    client.keys(KEYSET)
    assert paths == ["/v1/keysets", "/v1/keys", f"/v1/keys/{KEYSET}"]


def test_swap_sends_outputs_sorted_by_amount_and_returns_callers_order() -> None:
    sent: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        sent.update(json.loads(request.content))
        return httpx.Response(200, json={"signatures": sign(sent["outputs"])})

    outputs = [output(8, "a"), output(2, "b"), output(8, "c"), output(1, "d")]
    signatures = client_for(handler).swap([proof(16), proof(2, "t")], outputs)

    assert [o["amount"] for o in sent["outputs"]] == [1, 2, 8, 8]
    assert [o["B_"] for o in sent["outputs"]] == ["02d", "02b", "02a", "02c"]  # stable
    assert [s.C_ for s in signatures] == ["C02a", "C02b", "C02c", "C02d"]
    assert sent["inputs"] == [p.to_wire() for p in (proof(16), proof(2, "t"))]


def test_swap_with_wrong_signature_count_is_ambiguous() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"signatures": sign(json.loads(request.content)["outputs"])[:1]}
        )

    with pytest.raises(MintAmbiguousError):
        client_for(handler).swap([proof(3)], [output(1, "a"), output(2, "b")])


def test_mint_sends_sorted_outputs_without_signature_when_quote_is_unlocked() -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/mint/bolt11"
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"signatures": sign(bodies[-1]["outputs"])})

    outputs = [output(4, "a"), output(1, "b")]
    signatures = client_for(handler).mint("q1", outputs)

    assert [s.C_ for s in signatures] == ["C02a", "C02b"]
    assert bodies[0]["quote"] == "q1" and "signature" not in bodies[0]
    assert [o["B_"] for o in bodies[0]["outputs"]] == [o.B_ for o in sort_outputs(outputs)]


def test_mint_with_quote_key_signs_the_outputs_in_sent_order() -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"signatures": sign(bodies[-1]["outputs"])})

    key = PrivateKey()
    outputs = [output(4, "a"), output(1, "b")]
    client_for(handler).mint("q1", outputs, quote_key=key)

    sent = [BlindedMessage.model_validate(o) for o in bodies[0]["outputs"]]
    pubkey = key.public_key.format().hex()
    assert verify_mint_quote_signature(pubkey, "q1", sent, bodies[0]["signature"])
    assert not verify_mint_quote_signature(pubkey, "q1", outputs, bodies[0]["signature"])


def test_swap_refused_with_code_0_is_ambiguous() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"detail": "database is locked", "code": 0})

    with pytest.raises(MintAmbiguousError):
        client_for(handler).swap([proof(3)], [output(2, "a")])


def test_quote_check_refused_with_code_0_is_a_rejection() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"detail": "quote not found", "code": 0})

    with pytest.raises(MintRejectedError) as excinfo:
        client_for(handler).check_mint_quote("nope")
    assert excinfo.value.mint_code == 0


def test_create_mint_quote_omits_unset_optional_fields() -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/mint/quote/bolt11"
        bodies.append(json.loads(request.content))
        return httpx.Response(
            200, json={"quote": "q1", "request": "lnbc1", "state": "UNPAID", "amount": 100}
        )

    client = client_for(handler)
    quote = client.create_mint_quote(100)
    client.create_mint_quote(100, pubkey="02pk", description="hi")
    assert quote.state is MintQuoteState.UNPAID
    assert bodies == [
        {"amount": 100, "unit": "sat"},
        {"amount": 100, "unit": "sat", "description": "hi", "pubkey": "02pk"},
    ]


def test_check_quotes_escape_the_quote_id_in_the_path() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        if "/mint/" in request.url.path:
            return httpx.Response(200, json={"quote": "a/b", "request": "ln", "state": "PAID"})
        return httpx.Response(200, json=melt_quote_body(state="PENDING"))

    client = client_for(handler)
    assert client.check_mint_quote("a/b").state is MintQuoteState.PAID
    assert client.check_melt_quote("mq1").state is MeltQuoteState.PENDING
    assert paths == ["/v1/mint/quote/bolt11/a%2Fb", "/v1/melt/quote/bolt11/mq1"]


def test_melt_uses_long_timeout() -> None:
    timeouts: dict[str, dict] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        timeouts[request.url.path] = request.extensions["timeout"]
        if request.url.path == "/v1/melt/bolt11":
            return httpx.Response(200, json=melt_quote_body(state="PAID"))
        return httpx.Response(200, json=melt_quote_body())

    client = client_for(handler, timeout=5.0, melt_timeout=90.0)
    client.create_melt_quote("lnbc1")
    client.melt("mq1", [proof(102)])
    assert timeouts["/v1/melt/quote/bolt11"]["read"] == 5.0
    assert timeouts["/v1/melt/bolt11"]["read"] == 90.0
    assert timeouts["/v1/melt/bolt11"]["connect"] == 5.0


def test_melt_sends_change_blanks_unsorted_and_returns_change_as_is() -> None:
    sent: dict = {}

    def handler(request: httpx.Request) -> httpx.Response:
        sent.update(json.loads(request.content))
        change = [{"id": KEYSET, "amount": 2, "C_": "C1"}, {"id": KEYSET, "amount": 1, "C_": "C2"}]
        return httpx.Response(
            200, json=melt_quote_body(state="PAID", payment_preimage="00" * 32, change=change)
        )

    blanks = [output(1, "x"), output(1, "y"), output(1, "z")]
    result = client_for(handler).melt("mq1", [proof(104)], blanks)
    assert sent["quote"] == "mq1"
    assert [o["B_"] for o in sent["outputs"]] == ["02x", "02y", "02z"]
    assert result.state is MeltQuoteState.PAID
    assert [c.C_ for c in result.change or []] == ["C1", "C2"]


def test_checkstate_returns_states_in_requested_order() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content) == {"Ys": ["y1", "y2", "y3"]}
        states = [
            {"Y": "y3", "state": "SPENT"},
            {"Y": "y1", "state": "UNSPENT"},
            {"Y": "y2", "state": "PENDING"},
        ]
        return httpx.Response(200, json={"states": states})

    states = client_for(handler).checkstate(["y1", "y2", "y3"])
    assert [(s.Y, s.state) for s in states] == [
        ("y1", ProofSpentState.UNSPENT),
        ("y2", ProofSpentState.PENDING),
        ("y3", ProofSpentState.SPENT),
    ]


def test_checkstate_missing_a_y_is_ambiguous() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"states": [{"Y": "y1", "state": "UNSPENT"}]})

    with pytest.raises(MintAmbiguousError):
        client_for(handler).checkstate(["y1", "y2"])


def test_restore_parses_outputs_and_signatures() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        outputs = json.loads(request.content)["outputs"][:1]
        return httpx.Response(200, json={"outputs": outputs, "signatures": sign(outputs)})

    result = client_for(handler).restore([output(1, "a"), output(2, "b")])
    assert [o.B_ for o in result.outputs] == ["02a"]
    assert [s.C_ for s in result.signatures] == ["C02a"]


def test_restore_accepts_legacy_promises_field() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        outputs = json.loads(request.content)["outputs"]
        return httpx.Response(200, json={"outputs": outputs, "promises": sign(outputs)})

    result = client_for(handler).restore([output(1, "a")])
    assert [s.C_ for s in result.signatures] == ["C02a"]


# --- rejections (definitive) ---------------------------------------------------------------------


def test_mint_error_code_11001_raises_proofs_already_spent() -> None:
    handler = rejecting(400, {"detail": "proofs already spent", "code": 11001})
    with pytest.raises(ProofsAlreadySpentError) as info:
        client_for(handler).swap([proof(1)], [output(1, "a")])
    err = info.value
    assert isinstance(err, MintRejectedError)
    assert (err.mint_code, err.status_code, err.code) == (11001, 400, "PROOFS_ALREADY_SPENT")
    assert err.detail == "proofs already spent"


def test_mint_error_code_20001_raises_quote_not_paid() -> None:
    handler = rejecting(400, {"detail": "quote not paid", "code": 20001})
    with pytest.raises(QuoteNotPaidError):
        client_for(handler).mint("q1", [output(1, "a")])


def test_unknown_mint_error_code_is_plain_rejected() -> None:
    handler = rejecting(400, {"detail": "quote not found", "code": 0})
    with pytest.raises(MintRejectedError) as info:
        client_for(handler).check_mint_quote("q1")
    assert type(info.value) is MintRejectedError
    assert info.value.mint_code == 0


def test_4xx_without_code_is_rejected() -> None:
    with pytest.raises(MintRejectedError) as info:
        client_for(rejecting(404, "Not Found")).keys("00ffffffffffffff")
    assert type(info.value) is MintRejectedError
    assert (info.value.mint_code, info.value.status_code) == (None, 404)
    assert not isinstance(info.value, MintAmbiguousError)


def test_validation_error_detail_does_not_echo_request_input() -> None:
    body = {
        "detail": [{"loc": ["body", "inputs", 0], "msg": "bad", "input": {"secret": "TOPSECRET"}}]
    }
    with pytest.raises(MintRejectedError) as info:
        client_for(rejecting(422, body)).swap([proof(1, "TOPSECRET")], [output(1, "a")])
    assert "TOPSECRET" not in str(info.value)
    assert "body.inputs.0: bad" in info.value.detail


def test_registry_maps_every_code_to_its_class() -> None:
    assert MINT_ERRORS[12002] is KeysetInactiveError
    assert all(cls.mint_code == code for code, cls in MINT_ERRORS.items())
    assert len({cls.code for cls in MINT_ERRORS.values()}) == len(MINT_ERRORS)
    err = mint_error_from_response(400, {"detail": "inactive", "code": "12002"})
    assert isinstance(err, KeysetInactiveError) and err.mint_code == 12002


# --- ambiguous answers (never release funds) --------------------------------------------------


def test_timeout_raises_ambiguous_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(MintTimeoutError) as info:
        client_for(handler).swap([proof(1)], [output(1, "a")])
    assert isinstance(info.value, MintAmbiguousError)
    assert info.value.code == "MINT_TIMEOUT"


def test_connection_refused_is_ambiguous() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (
        MintClient(f"http://127.0.0.1:{port}", timeout=2.0) as client,
        pytest.raises(MintUnreachableError) as info,
    ):
        client.info()
    assert isinstance(info.value, MintAmbiguousError)
    assert info.value.code == "MINT_UNREACHABLE"


def test_dropped_connection_after_send_is_ambiguous_not_unreachable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("peer closed connection", request=request)

    with pytest.raises(MintAmbiguousError) as info:
        client_for(handler).melt("mq1", [proof(102)])
    assert type(info.value) is MintAmbiguousError


def test_500_is_ambiguous_not_rejected() -> None:
    with pytest.raises(MintServerError) as info:
        client_for(rejecting(500, "Internal Server Error")).swap([proof(1)], [output(1, "a")])
    assert isinstance(info.value, MintAmbiguousError)
    assert not isinstance(info.value, MintRejectedError)
    assert info.value.status_code == 500
    assert info.value.body == "Internal Server Error"


def test_5xx_with_nut_error_body_is_still_ambiguous() -> None:
    handler = rejecting(502, {"detail": "proofs already spent", "code": 11001})
    with pytest.raises(MintServerError):
        client_for(handler).swap([proof(1)], [output(1, "a")])


def test_unparseable_2xx_is_ambiguous() -> None:
    with pytest.raises(MintAmbiguousError):
        client_for(rejecting(200, "<html>proxy</html>")).swap([proof(1)], [output(1, "a")])


def test_2xx_failing_model_validation_is_ambiguous() -> None:
    handler = rejecting(200, {"quote": "mq1", "state": "WEIRD"})
    with pytest.raises(MintAmbiguousError):
        client_for(handler).melt("mq1", [proof(1)])


def test_redirect_is_ambiguous() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(301, headers={"Location": "https://elsewhere.test/v1/swap"})

    with pytest.raises(MintAmbiguousError):
        client_for(handler).swap([proof(1)], [output(1, "a")])


# --- the shared client cache ---------------------------------------------------------------------


def test_get_mint_client_returns_one_client_per_normalized_url() -> None:
    try:
        results: list[MintClient] = []
        threads = [
            threading.Thread(target=lambda: results.append(get_mint_client(MINT + "/")))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({id(c) for c in results}) == 1
        assert get_mint_client(MINT) is results[0]
        results[0].close()
        assert get_mint_client(MINT) is not results[0]  # a closed client is replaced
    finally:
        close_mint_clients()


def test_non_http_url_is_refused() -> None:
    with pytest.raises(ValueError):
        MintClient("ftp://mint.test")
