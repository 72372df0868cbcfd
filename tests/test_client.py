"""cashu_client (CashuClient, its typed errors) and the `cashu-worker` command line,
against a real worker and a real mint.

One test runs the client in a venv that has only celery[redis] installed (made once,
cached in .test-mints/client-venv), to show it needs nothing of the worker. Every test
that moves money ends on the wallet's balance.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cashu_client import (
    CashuClient,
    CashuWorkerError,
    InsufficientBalanceError,
    MintRejectedError,
    OperationNotFoundError,
    SagaError,
    TaskTimeoutError,
    UntrustedMintError,
)
from cashu_client import errors as client_errors
from cashu_client.cli import main
from nuts import errors as nuts_errors
from sagas import errors as saga_errors

REPO = Path(__file__).resolve().parent.parent
CLIENT_VENV = REPO / ".test-mints" / "client-venv"  # git-ignored
CLIENT_REQUIREMENT = "celery[redis]>=5.3"
TIMEOUT = 60


# --- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="session")
def client(celery_worker, redis_url: str) -> Iterator[CashuClient]:
    """A CashuClient on the test worker's broker (started by the celery_worker fixture)."""
    with CashuClient(redis_url, timeout=TIMEOUT) as c:
        yield c


@pytest.fixture
def mint_url(client: CashuClient, test_mint) -> str:
    view = client.mints_add(test_mint.url)
    assert view["trusted"] is True
    return view["url"]


def new_wallet(prefix: str = "cl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def fund(client: CashuClient, wallet: str, mint_url: str, amount: int) -> dict:
    op = client.mint_prepare(wallet, mint_url, amount)
    assert op["state"] == "pending", op
    done = client.mint_execute(op["id"])
    assert done["state"] == "finalized", done
    return done


def assert_balance(
    client: CashuClient, wallet: str, *, spendable: int, pending: int = 0, reserved: int = 0
) -> None:
    bal = client.balance(wallet)
    assert (bal["spendable"], bal["pending"], bal["reserved"]) == (spendable, pending, reserved)
    assert bal["total"] == spendable + pending + reserved, bal


def run_cli(monkeypatch, redis_url: str, *argv: str) -> tuple[int, str]:
    """main(argv) in this process, REDIS_URL from the environment; (exit code, stdout)."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def cli_json(monkeypatch, redis_url: str, *argv: str):
    code, out = run_cli(monkeypatch, redis_url, *argv, "--json")
    assert code == 0, out
    return json.loads(out)


def stream_end(redis_url: str) -> str:
    newest = redis.Redis.from_url(redis_url, decode_responses=True).xrevrange(
        "cashu:events", count=1
    )
    return newest[0][0] if newest else "0-0"


# --- the error table -------------------------------------------------------------------------


def test_every_worker_error_has_its_class_and_code() -> None:
    import inspect

    import nuts.errors
    import sagas.errors
    from tasks.deliveries import TooManyDeliveriesError

    worker_classes = [TooManyDeliveriesError]
    for module in (nuts.errors, sagas.errors):
        worker_classes += [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, nuts.errors.CashuError) and cls.__module__ == module.__name__
        ]
    assert len(worker_classes) > 60
    for cls in worker_classes:
        ours = client_errors.ERRORS.get(cls.__name__)
        assert ours is not None, f"{cls.__name__} missing in cashu_client.errors"
        assert ours.code == cls.code, cls
        assert issubclass(ours, CashuWorkerError)
    names = {cls.__name__ for cls in worker_classes}
    assert set(client_errors.ERRORS) == names  # nothing made up
    # the families carry over
    assert issubclass(client_errors.QuoteNotPaidError, MintRejectedError)
    assert issubclass(client_errors.MintTimeoutError, client_errors.MintAmbiguousError)
    assert issubclass(client_errors.StaleOperationError, client_errors.InvalidStateError)
    assert issubclass(client_errors.QuoteExpiredError, MintRejectedError)
    assert InsufficientBalanceError.code == "INSUFFICIENT_BALANCE"
    assert issubclass(TaskTimeoutError, TimeoutError) and TaskTimeoutError.code == "TASK_TIMEOUT"


SPENT = "The token was already claimed (its proofs are spent at the mint)."


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (
            nuts_errors.InvalidTokenError(),
            "The token could not be decoded or is not a valid Cashu token.",
        ),
        (saga_errors.TokenAlreadySpentError(), SPENT),
        (
            nuts_errors.ProofsAlreadySpentError(mint_code=11001),
            "mint rejected the request (HTTP 400, code 11001): Proofs already spent (11001).",
        ),
        (client_errors.TokenAlreadySpentError(), SPENT),
        (saga_errors.SagaError(), "SAGA_ERROR"),  # no message of its own: its code
    ],
)
def test_an_error_raised_without_a_message_says_its_default_message(
    error: Exception, message: str
) -> None:
    assert str(error) == message


@pytest.mark.parametrize(
    "cls",
    [nuts_errors.InvalidTokenError, nuts_errors.ProofsAlreadySpentError, client_errors.BrokerError],
)
def test_editing_an_errors_docstring_leaves_its_message_alone(
    cls: type[Exception], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = str(cls())
    monkeypatch.setattr(cls, "__doc__", "Reworded.")

    assert str(cls()) == before


def test_an_error_the_client_does_not_know_arrives_as_unknown_with_its_remote_type() -> None:
    err = client_errors.from_task_failure(TypeError("f() got an unexpected keyword 'bogus'"))

    assert type(err) is CashuWorkerError
    assert (err.code, err.remote_type) == ("UNKNOWN", "TypeError")
    assert "bogus" in str(err)


def test_the_client_package_imports_nothing_of_the_worker(tmp_path: Path) -> None:
    shutil.copytree(REPO / "cashu_client", tmp_path / "cashu_client")
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import cashu_client, cashu_client.cli; "
        "assert cashu_client.__file__.startswith(sys.argv[1]); "
        "print(sorted(m for m in ('nuts','sagas','models','tasks') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_melts_execute_and_pay_go_to_the_lightning_queue_and_the_rest_to_the_queue(
    redis_url: str,
) -> None:
    """Where the worker runs a melt's requests: sent there, no worker hands them over."""
    queue, lightning = (f"cashu-client-test-{uuid.uuid4().hex[:8]}" for _ in "ql")
    conn = redis.Redis.from_url(redis_url)
    invoice = "lnbc1u1p" + "x" * 40  # never read: nobody consumes these queues
    try:
        with CashuClient(redis_url, queue=queue, lightning_queue=lightning, timeout=0.3) as idle:
            with pytest.raises(TaskTimeoutError) as caught:
                idle.melt_pay("someone", "http://127.0.0.1:1", invoice)
            assert repr(lightning) in str(caught.value)
            with pytest.raises(TaskTimeoutError):
                idle.melt_execute(str(uuid.uuid4()))
            with pytest.raises(TaskTimeoutError):
                idle.melt_prepare("someone", "http://127.0.0.1:1", invoice)

        def sent_to(name: str) -> list[str]:
            return sorted(json.loads(raw)["headers"]["task"] for raw in conn.lrange(name, 0, -1))

        assert sent_to(lightning) == ["cashu.melt.execute", "cashu.melt.pay"]
        assert sent_to(queue) == ["cashu.melt.prepare"]
    finally:
        for name in (queue, lightning):
            conn.delete(name, f"_kombu.binding.{name}")


def test_a_token_argument_stays_out_of_the_message_headers(redis_url: str) -> None:
    """kwargsrepr (headers, task-sent events) has the token masked; the body carries it."""
    queue = f"cashu-client-test-{uuid.uuid4().hex[:8]}"  # nobody consumes it
    token = "cashuB" + base64.urlsafe_b64encode(uuid.uuid4().bytes * 4).decode().rstrip("=")
    conn = redis.Redis.from_url(redis_url)
    try:
        with CashuClient(redis_url, queue=queue, timeout=0.3) as idle:
            with pytest.raises(TaskTimeoutError) as caught:
                idle.receive_redeem("someone", token)
            assert caught.value.code == "TASK_TIMEOUT" and caught.value.task_id
            with pytest.raises(TaskTimeoutError):
                idle.receive_prepare("someone", token, trust_mint=True)
        messages = [json.loads(raw) for raw in conn.lrange(queue, 0, -1)]
    finally:
        conn.delete(queue, f"_kombu.binding.{queue}")
    assert [m["headers"]["task"] for m in sorted(messages, key=lambda m: m["headers"]["task"])] == [
        "cashu.receive.prepare",
        "cashu.receive.redeem",
    ]
    for message in messages:
        headers = json.dumps(message["headers"])
        assert token not in headers and "cashuB" not in headers
        assert f"<redacted {len(token)} chars>" in message["headers"]["kwargsrepr"]
        assert "'wallet': 'someone'" in message["headers"]["kwargsrepr"]
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        assert kwargs["token"] == token  # the task itself gets the real token


# --- a process with only Celery --------------------------------------------------------------


@pytest.fixture(scope="session")
def client_only_python() -> Path:
    """A venv with celery[redis] and nothing else, made once and cached."""
    python = CLIENT_VENV / "bin" / "python"
    stamp = CLIENT_VENV / ".installed"
    CLIENT_VENV.parent.mkdir(exist_ok=True)
    with open(CLIENT_VENV.parent / "client-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions never build it at once
        if not (python.exists() and stamp.exists() and stamp.read_text() == CLIENT_REQUIREMENT):
            shutil.rmtree(CLIENT_VENV, ignore_errors=True)
            subprocess.run(["python3", "-m", "venv", str(CLIENT_VENV)], check=True, timeout=120)
            pip = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", CLIENT_REQUIREMENT],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if pip.returncode != 0:
                pytest.fail(f"pip install {CLIENT_REQUIREMENT} failed:\n{pip.stderr[-2000:]}")
            stamp.write_text(CLIENT_REQUIREMENT)
    return python


def test_client_in_a_process_with_only_celery(
    client_only_python: Path,
    client: CashuClient,
    redis_url: str,
    test_mint,
    tmp_path: Path,
) -> None:
    shutil.copytree(REPO / "cashu_client", tmp_path / "lib" / "cashu_client")
    shutil.copy(REPO / "tests" / "client_only_venv.py", tmp_path / "script.py")
    wallet = new_wallet("only-celery")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no PYTHONPATH, no repo
    proc = subprocess.run(
        [str(client_only_python), "script.py", redis_url, test_mint.url, wallet, "lib"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    mint_url = out["mint"]["url"]

    assert out["mint"]["trusted"] is True
    assert out["prepared"] == {"state": "pending", "amount": 100, "kind": "mint"}
    assert out["executed"] == {"state": "finalized", "minted_amount": 100}
    assert out["balance"]["spendable"] == 100 and out["balance"]["total"] == 100
    assert out["balance"]["by_mint"][mint_url]["spendable"] == 100

    errors = out["errors"]
    rebuilt = "celery.exceptions"  # Celery's made-up class: the worker's code is not here
    assert errors["amount_zero"]["class"] == "InvalidAmountError"
    assert errors["amount_zero"]["module"] == "cashu_client.errors"
    assert errors["amount_zero"]["code"] == "INVALID_AMOUNT"
    assert errors["amount_zero"]["is_worker_error"] and errors["amount_zero"]["is_saga_error"]
    assert errors["amount_zero"]["cause"] == f"{rebuilt}.InvalidAmountError"
    assert errors["amount_zero"]["has_task_id"]
    assert errors["untrusted"]["class"] == "UntrustedMintError"
    assert errors["untrusted"]["code"] == "UNTRUSTED_MINT"
    assert errors["untrusted"]["message"] == (
        f"mint {mint_url} is not trusted; it will not be contacted"
    )
    assert errors["untrusted"]["cause"] == f"{rebuilt}.UntrustedMintError"
    assert errors["unknown_argument"]["class"] == "InvalidRequestError"  # never a raw TypeError
    assert errors["unknown_argument"]["code"] == "INVALID_REQUEST"
    assert "bogus" in errors["unknown_argument"]["message"]
    assert errors["timeout"]["class"] == "TaskTimeoutError"
    assert errors["timeout"]["code"] == "TASK_TIMEOUT" and errors["timeout"]["is_timeout"]
    assert out["caught_by_class"] == "INVALID_AMOUNT"

    assert out["ours_imported"] == []
    assert out["ours_importable"] == []
    assert out["worker_deps_importable"] == []
    assert out["balance_after"]["spendable"] == 100
    assert_balance(client, wallet, spendable=100)


# --- the client in this process --------------------------------------------------------------


def test_client_methods_move_money_and_raise_typed_errors(
    client: CashuClient, mint_url: str
) -> None:
    alice, bob = new_wallet("alice"), new_wallet("bob")
    assert client.mints_list()["mints"]
    assert any(m["url"] == mint_url for m in client.mints_list()["mints"])
    assert client.wallet_info(alice)["pubkey"]
    funded = fund(client, alice, mint_url, 64)
    assert client.ops_get(funded["id"]) == funded
    assert client.ops_get(str(uuid.uuid4())) is None
    assert [o["id"] for o in client.ops_list(alice, kind="mint")["operations"]] == [funded["id"]]
    assert client.ops_list(alice, states=["pending"])["operations"] == []

    with pytest.raises(InsufficientBalanceError) as caught:
        client.send_prepare(alice, mint_url, 10_000)
    assert caught.value.code == "INSUFFICIENT_BALANCE" and caught.value.message
    with pytest.raises(OperationNotFoundError):
        client.send_execute(str(uuid.uuid4()))

    sent = client.send_prepare(alice, mint_url, 20, memo="for bob")
    sent = client.send_execute(sent["id"])
    assert sent["state"] == "pending" and sent["token"].startswith("cashuB")
    received = client.receive_redeem(bob, sent["token"])
    assert received["state"] == "finalized" and received["amount"] == 20 - received["fee"]
    assert client.send_refresh(sent["id"])["state"] == "finalized"

    entries = client.history_list(alice)["entries"]
    assert [(e["kind"], e["direction"]) for e in entries] == [("send", "out"), ("mint", "in")]
    assert all("token" not in e for e in entries)
    assert_balance(client, alice, spendable=64 - 20 - sent["fee"])
    assert_balance(client, bob, spendable=20 - received["fee"])


def test_untrusted_mint_through_the_cli_and_the_client(
    monkeypatch, client: CashuClient, mint_url: str, redis_url: str
) -> None:
    wallet = new_wallet()
    view = cli_json(monkeypatch, redis_url, "mints", "untrust", mint_url)
    assert view["url"] == mint_url and view["trusted"] is False
    try:
        with pytest.raises(UntrustedMintError) as caught:
            client.mint_prepare(wallet, mint_url, 10)
        assert caught.value.code == "UNTRUSTED_MINT"
        assert isinstance(caught.value, SagaError)
    finally:
        view = cli_json(monkeypatch, redis_url, "mints", "trust", mint_url)
    assert view["trusted"] is True
    assert client.ops_list(wallet)["operations"] == []
    assert_balance(client, wallet, spendable=0)


# --- the command line ------------------------------------------------------------------------


def test_cli_json(monkeypatch, client: CashuClient, mint_url: str, redis_url: str) -> None:
    wallet = new_wallet("cli")
    listed = cli_json(monkeypatch, redis_url, "mints", "list")
    assert mint_url in [m["url"] for m in listed["mints"]]
    added = cli_json(monkeypatch, redis_url, "mints", "add", mint_url)
    assert added["url"] == mint_url and added["trusted"] is True and added["keysets"]

    start = stream_end(redis_url)
    op = fund(client, wallet, mint_url, 32)

    bal = cli_json(monkeypatch, redis_url, "balance", wallet)
    assert bal["spendable"] == 32 and bal["by_mint"][mint_url]["spendable"] == 32
    bal = cli_json(monkeypatch, redis_url, "balance", wallet, "--mint", mint_url)
    assert bal["total"] == 32

    ops = cli_json(monkeypatch, redis_url, "ops", "list", wallet)["operations"]
    assert [o["id"] for o in ops] == [op["id"]]
    ops = cli_json(monkeypatch, redis_url, "ops", "list", wallet, "--kind", "mint", "--limit", "1")
    assert [o["id"] for o in ops["operations"]] == [op["id"]]
    ops = cli_json(monkeypatch, redis_url, "ops", "list", wallet, "--state", "pending", "failed")
    assert ops["operations"] == []
    shown = cli_json(monkeypatch, redis_url, "ops", "show", op["id"])
    assert shown == op

    history = cli_json(monkeypatch, redis_url, "history", wallet, "--limit", "5")["entries"]
    assert [(e["operation_id"], e["amount"], e["direction"]) for e in history] == [
        (op["id"], 32, "in")
    ]
    counts = cli_json(monkeypatch, redis_url, "recovery", "run")
    assert set(counts) >= {"recovered", "rolled_back", "still_pending", "failed"}

    code, out = run_cli(
        monkeypatch, redis_url, "events", "follow", "--from", start, "--count", "1", "--wait", "30"
    )
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0]) if lines[0].startswith("{") else None
    assert event is None  # without --json: a plain line
    assert op["id"] in lines[0] and "mint-op:pending" in lines[0]
    code, out = run_cli(
        monkeypatch,
        redis_url,
        "events",
        "follow",
        "--from",
        start,
        "--count",
        "3",
        "--wait",
        "30",
        "--json",
    )
    assert code == 0
    events = [json.loads(line) for line in out.strip().splitlines()]
    assert [(e["type"], e["operation_id"]) for e in events] == [
        ("mint-op:pending", op["id"]),
        ("mint-op:executing", op["id"]),
        ("mint-op:finalized", op["id"]),
    ]
    assert events[-1]["payload"]["state"] == "finalized"
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert all(e["stream_id"] > start for e in events)
    assert_balance(client, wallet, spendable=32)


def test_cli_plain_tables(monkeypatch, client: CashuClient, mint_url: str, redis_url: str) -> None:
    wallet = new_wallet("plain")
    op = fund(client, wallet, mint_url, 16)

    code, out = run_cli(monkeypatch, redis_url, "mints", "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["URL", "TRUSTED", "NAME", "UNITS", "KEYSETS"]
    assert any(row.startswith(mint_url) and " yes " in row for row in rows)

    code, out = run_cli(monkeypatch, redis_url, "balance", wallet)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["MINT", "UNIT", "SPENDABLE", "RESERVED", "PENDING", "TOTAL"]
    assert lines[1].split() == [mint_url, "sat", "16", "0", "0", "16"]
    assert lines[2].split() == ["total", "sat", "16", "0", "0", "16"]
    # numbers are right-aligned under their header
    spendable_ends = lines[0].index("SPENDABLE") + len("SPENDABLE")
    assert lines[1][:spendable_ends].endswith(" 16")  # (the URL's port may hold a 16 too)

    code, out = run_cli(monkeypatch, redis_url, "ops", "list", wallet)
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:4] == ["ID", "KIND", "STATE", "AMOUNT"]
    assert row.split()[:4] == [op["id"], "mint", "finalized", "16"]

    code, out = run_cli(monkeypatch, redis_url, "ops", "show", op["id"])
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert fields["id"] == op["id"] and fields["state"] == "finalized"
    assert fields["error"] == "-"

    code, out = run_cli(monkeypatch, redis_url, "history", wallet)
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:5] == ["CREATED", "DIR", "KIND", "STATE", "AMOUNT"]
    assert row.split()[2:7] == ["in", "mint", "finalized", "16", "0"]

    code, out = run_cli(monkeypatch, redis_url, "recovery", "run")
    assert code == 0
    assert {line.split()[0] for line in out.splitlines()} >= {"recovered", "failed"}

    code, out = run_cli(monkeypatch, redis_url, "ops", "list", new_wallet())
    assert code == 0 and out.splitlines()[-1] == "(none)"
    assert_balance(client, wallet, spendable=16)


def test_cli_masks_tokens_unless_asked(
    monkeypatch, client: CashuClient, mint_url: str, redis_url: str
) -> None:
    wallet = new_wallet("tok")
    fund(client, wallet, mint_url, 32)
    sent = client.send_execute(client.send_prepare(wallet, mint_url, 8)["id"])
    token = sent["token"]
    for argv in (("ops", "show", sent["id"]), ("ops", "list", wallet)):
        code, out = run_cli(monkeypatch, redis_url, *argv)
        assert code == 0 and token not in out and "cashuB" not in out
        code, out = run_cli(monkeypatch, redis_url, *argv, "--json")
        assert code == 0 and token not in out
        code, out = run_cli(monkeypatch, redis_url, *argv, "--json", "--show-secrets")
        assert code == 0 and token in out
    shown = cli_json(monkeypatch, redis_url, "ops", "show", sent["id"])
    assert shown["token"] == f"<redacted {len(token)} chars>"
    # take the token back: nothing is left pending
    back = client.send_rollback(sent["id"])
    assert back["state"] == "rolled_back"
    assert_balance(
        client, wallet, spendable=32 - sent["fee"] - back.get("reclaim_fee", 0), pending=0
    )


def test_cli_errors_print_code_and_exit_2(
    monkeypatch, capsys, client: CashuClient, redis_url: str
) -> None:
    missing = str(uuid.uuid4())
    code, out = run_cli(monkeypatch, redis_url, "ops", "show", missing)
    assert code == 2 and out == ""
    assert capsys.readouterr().err == f"error OPERATION_NOT_FOUND: no operation has id {missing}\n"

    code, out = run_cli(monkeypatch, redis_url, "mints", "add", "http://127.0.0.1:9", "--json")
    err = capsys.readouterr().err
    assert code == 2 and out == ""
    assert err.startswith("error MINT_UNREACHABLE: "), err

    code, _ = run_cli(
        monkeypatch, redis_url, "--timeout", "0.2", "--queue", "nobody-x", "mints", "list"
    )
    redis.Redis.from_url(redis_url).delete("nobody-x", "_kombu.binding.nobody-x")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error TASK_TIMEOUT: cashu.mints.list gave no result")

    code, _ = run_cli(monkeypatch, "redis://127.0.0.1:1/0", "events", "follow", "--count", "1")
    assert code == 2 and capsys.readouterr().err.startswith("error BROKER_ERROR: ")

    wallet = new_wallet()
    assert_balance(client, wallet, spendable=0)


def test_events_follow_waits_for_new_events(
    monkeypatch, client: CashuClient, mint_url: str, redis_url: str
) -> None:
    """Without --from, only events after the start are shown, as they come."""
    import threading

    wallet = new_wallet("follow")
    result: dict = {}
    start = stream_end(redis_url)

    def follow() -> None:  # until 5 s without a new event
        result["code"], result["out"] = run_cli(
            monkeypatch, redis_url, "events", "follow", "--wait", "5", "--json"
        )

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(1.0)  # the follower has pinned the end of the stream
    op = fund(client, wallet, mint_url, 8)
    follower.join(60)
    assert not follower.is_alive()
    assert result["code"] == 0
    events = [json.loads(line) for line in result["out"].strip().splitlines()]
    # other tests' operations may publish meanwhile: ours are all there, in order, and
    # nothing from before the follower started is shown
    ours = [e["type"] for e in events if e["operation_id"] == op["id"]]
    assert ours == ["mint-op:pending", "mint-op:executing", "mint-op:finalized"]
    assert all(_stream_order(e["stream_id"]) > _stream_order(start) for e in events)
    assert_balance(client, wallet, spendable=8)


def _stream_order(stream_id: str) -> tuple[int, int]:
    millis, _, seq = stream_id.partition("-")
    return int(millis), int(seq or 0)
