"""The `cashu-worker` command line as an operator meets it: a follower that runs like
`tail -f`, a dead broker that is a typed error within seconds, choices checked before
anything is sent, and the actions on an operation (cancel, roll back, reclaim).

The first tests need only Redis (or nothing); those after them a real worker and mint.
"""

from __future__ import annotations

import io
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cashu_client import CashuClient, cli
from cashu_client.cli import main

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 60


def cli_process(*argv: str) -> subprocess.Popen:
    """`python -m cashu_client.cli ARGV` as an operator's shell starts it (SIGINT at its
    default even when this test runs in the background, where SIGINT is ignored)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cashu_client.cli", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(redis_url: str, *argv: str) -> tuple[int, str]:
    """main(argv) in this process; (exit code, stdout)."""
    out = io.StringIO()
    code = main(["--redis-url", redis_url, "--timeout", str(TIMEOUT), *argv], out=out)
    return code, out.getvalue()


def cli_json(redis_url: str, *argv: str) -> dict:
    code, out = run_cli(redis_url, *argv, "--json")
    assert code == 0, out
    return json.loads(out)


# --- events follow -------------------------------------------------------------------------------


def test_events_follow_keeps_following_through_quiet_time_until_interrupted(
    redis_url: str,
) -> None:
    """Quiet for longer than the redis client's socket timeout (5 s), then an event: it is
    printed, and Ctrl-C ends the follower cleanly."""
    stream = f"cashu:test-events:{uuid.uuid4().hex[:8]}"
    conn = redis.Redis.from_url(redis_url, decode_responses=True)
    proc = cli_process("--redis-url", redis_url, "events", "follow", "--stream", stream, "--json")
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        time.sleep(8.0)
        assert proc.poll() is None, proc.stderr.read()
        op_id = str(uuid.uuid4())
        payload = json.dumps({"state": "pending"})
        fields = {"id": "7", "type": "send:pending", "operation_id": op_id, "payload": payload}
        conn.xadd(stream, fields)
        event = json.loads(lines.get(timeout=10))
        assert (event["type"], event["operation_id"]) == ("send:pending", op_id)
        assert event["payload"] == {"state": "pending"}

        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        conn.delete(stream)
    assert code in (0, 130), err
    assert "Traceback" not in err, err


# --- an unreachable broker -----------------------------------------------------------------------


def test_an_unreachable_broker_is_broker_error_and_exit_2_within_seconds() -> None:
    started = time.monotonic()
    proc = cli_process("--redis-url", f"redis://127.0.0.1:{closed_port()}/0", "mints", "list")
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - started

    assert proc.returncode == 2, err
    assert err.startswith("error BROKER_ERROR: "), err
    assert "Traceback" not in err, err
    assert out == ""
    assert elapsed < 5.0, elapsed


# --- choices checked before anything is sent -----------------------------------------------------


def test_ops_list_refuses_an_unknown_state_naming_the_real_ones(capsys) -> None:
    dead_broker = f"redis://127.0.0.1:{closed_port()}/0"  # nothing may be sent
    with pytest.raises(SystemExit) as exited:
        main(["--redis-url", dead_broker, "ops", "list", "alice", "--state", "bogus"])

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in err, err
    for state in ("prepared", "executing", "pending", "finalized", "rolling_back", "rolled_back"):
        assert state in err


def test_the_state_choices_are_the_states_of_the_sagas() -> None:
    from tasks.metrics import saga_states

    every = set().union(*(states for states, _ in saga_states().values()))
    assert set(cli.OPERATION_STATES) == every


# --- against a worker ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(celery_worker, redis_url: str) -> Iterator[CashuClient]:
    with CashuClient(redis_url, timeout=TIMEOUT) as c:
        yield c


@pytest.fixture(scope="module")
def mint_url(client: CashuClient, test_mint) -> str:
    return client.mints_add(test_mint.url)["url"]


def new_wallet() -> str:
    return f"cli-{uuid.uuid4().hex[:12]}"


def funded_wallet(client: CashuClient, mint_url: str, amount: int) -> str:
    wallet = new_wallet()
    op = client.mint_prepare(wallet, mint_url, amount)
    assert client.mint_execute(op["id"])["state"] == "finalized"
    return wallet


def balance_of(client: CashuClient, wallet: str) -> tuple[int, int, int]:
    bal = client.balance(wallet)
    return bal["spendable"], bal["reserved"], bal["pending"]


def prepared_melt(client: CashuClient, wallet: str, mint_url: str) -> dict:
    from mint_harness import make_invoice

    op = client.melt_prepare(wallet, mint_url, make_invoice(20))
    assert op["state"] == "prepared", op
    return op


@pytest.mark.parametrize("action", ["add", "trust"])
def test_mints_refuses_a_bad_url_with_the_workers_invalid_request(
    client: CashuClient, redis_url: str, capsys, action: str
) -> None:
    code, out = run_cli(redis_url, "mints", action, "not-a-url")

    assert code == 2 and out == ""
    assert capsys.readouterr().err == (
        "error INVALID_REQUEST: url must be an http(s) URL of a mint, got 'not-a-url'\n"
    )


def test_ops_cancel_releases_a_prepared_send(
    client: CashuClient, mint_url: str, redis_url: str
) -> None:
    wallet = funded_wallet(client, mint_url, 32)
    op = client.send_prepare(wallet, mint_url, 8)
    assert balance_of(client, wallet)[1] > 0

    done = cli_json(redis_url, "ops", "cancel", op["id"])

    assert (done["id"], done["state"]) == (op["id"], "rolled_back")
    assert balance_of(client, wallet) == (32, 0, 0)


def test_ops_cancel_releases_a_prepared_melt(
    client: CashuClient, mint_url: str, redis_url: str
) -> None:
    wallet = funded_wallet(client, mint_url, 64)
    op = prepared_melt(client, wallet, mint_url)

    done = cli_json(redis_url, "ops", "cancel", op["id"])

    assert (done["id"], done["state"]) == (op["id"], "rolled_back")
    assert balance_of(client, wallet) == (64, 0, 0)


def test_ops_cancel_refuses_a_pending_send_and_leaves_its_token_out(
    client: CashuClient, mint_url: str, redis_url: str, capsys
) -> None:
    wallet = funded_wallet(client, mint_url, 32)
    sent = client.send_token(wallet, mint_url, 8)
    assert sent["state"] == "pending"

    code, out = run_cli(redis_url, "ops", "cancel", sent["id"])

    assert code == 2 and out == ""
    assert capsys.readouterr().err.startswith("error INVALID_STATE: "), out
    assert client.ops_get(sent["id"])["state"] == "pending"


def test_ops_reclaim_takes_back_a_pending_send(
    client: CashuClient, mint_url: str, redis_url: str
) -> None:
    wallet = funded_wallet(client, mint_url, 32)
    sent = client.send_token(wallet, mint_url, 8)

    done = cli_json(redis_url, "ops", "reclaim", sent["id"])

    assert (done["id"], done["state"]) == (sent["id"], "rolled_back")
    spent_on_fees = sent["fee"] + done.get("reclaim_fee", 0)
    assert balance_of(client, wallet) == (32 - spent_on_fees, 0, 0)


def test_ops_reclaim_of_a_prepared_melt_is_the_workers_invalid_state(
    client: CashuClient, mint_url: str, redis_url: str, capsys
) -> None:
    wallet = funded_wallet(client, mint_url, 64)
    op = prepared_melt(client, wallet, mint_url)

    code, _ = run_cli(redis_url, "ops", "reclaim", op["id"])

    assert code == 2
    assert capsys.readouterr().err == (
        "error INVALID_STATE: only a pending melt can be reclaimed, this one is prepared\n"
    )
    assert client.ops_get(op["id"])["state"] == "prepared"
    client.melt_cancel(op["id"])


def test_ops_rollback_cancels_a_prepared_melt(
    client: CashuClient, mint_url: str, redis_url: str
) -> None:
    wallet = funded_wallet(client, mint_url, 64)
    op = prepared_melt(client, wallet, mint_url)

    done = cli_json(redis_url, "ops", "rollback", op["id"])

    assert (done["id"], done["state"]) == (op["id"], "rolled_back")
    assert balance_of(client, wallet) == (64, 0, 0)


def test_ops_rollback_takes_back_a_pending_send(
    client: CashuClient, mint_url: str, redis_url: str
) -> None:
    wallet = funded_wallet(client, mint_url, 32)
    sent = client.send_token(wallet, mint_url, 8)

    done = cli_json(redis_url, "ops", "rollback", sent["id"])

    assert (done["id"], done["state"]) == (sent["id"], "rolled_back")


def test_ops_rollback_of_a_claimed_send_is_the_workers_invalid_state(
    client: CashuClient, mint_url: str, redis_url: str, capsys
) -> None:
    wallet = funded_wallet(client, mint_url, 32)
    sent = client.send_token(wallet, mint_url, 8)
    client.receive_redeem(new_wallet(), sent["token"], trust_mint=True)
    assert client.send_refresh(sent["id"])["state"] == "finalized"

    code, _ = run_cli(redis_url, "ops", "rollback", sent["id"])

    assert code == 2
    assert capsys.readouterr().err == (
        "error INVALID_STATE: the send is finalized: its token was claimed\n"
    )


@pytest.mark.parametrize("action", ["cancel", "rollback", "reclaim"])
def test_an_action_on_a_mint_operation_is_invalid_request(
    client: CashuClient, mint_url: str, redis_url: str, capsys, action: str
) -> None:
    wallet = funded_wallet(client, mint_url, 8)
    (minted,) = client.ops_list(wallet)["operations"]

    code, out = run_cli(redis_url, "ops", action, minted["id"])

    assert code == 2 and out == ""
    err = capsys.readouterr().err
    assert err.startswith("error INVALID_REQUEST: "), err
    assert "a mint operation" in err and "send and melt" in err


def test_an_action_on_an_unknown_operation_is_operation_not_found(
    client: CashuClient, redis_url: str, capsys
) -> None:
    missing = str(uuid.uuid4())

    code, _ = run_cli(redis_url, "ops", "cancel", missing)

    assert code == 2
    assert capsys.readouterr().err == f"error OPERATION_NOT_FOUND: no operation has id {missing}\n"


def test_mints_remove_forgets_a_mint_that_holds_nothing_of_ours(
    client: CashuClient, redis_url: str, fresh_mint
) -> None:
    url = client.mints_add(fresh_mint().url)["url"]

    code, out = run_cli(redis_url, "mints", "remove", url)

    assert code == 0 and url in out
    assert url not in {m["url"] for m in client.mints_list()["mints"]}


def test_mints_remove_refuses_a_mint_that_holds_our_money_and_keeps_it(
    client: CashuClient, mint_url: str, redis_url: str, capsys
) -> None:
    wallet = funded_wallet(client, mint_url, 50)

    code, out = run_cli(redis_url, "mints", "remove", mint_url)

    assert code == 2 and out == ""
    assert capsys.readouterr().err.startswith("error MINT_IN_USE: ")
    assert mint_url in {m["url"] for m in client.mints_list()["mints"]}
    assert balance_of(client, wallet) == (50, 0, 0)
