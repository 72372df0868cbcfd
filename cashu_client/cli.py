"""`cashu-worker`: the operators' command line, on CashuClient.

    cashu-worker mints add https://mint.example [--untrusted]
    cashu-worker mints list
    cashu-worker mints trust URL | mints untrust URL | mints remove URL
    cashu-worker balance WALLET [--mint URL] [--unit sat]
    cashu-worker ops list WALLET [--kind K] [--state S ...] [--limit N] [--offset N]
    cashu-worker ops show ID
    cashu-worker ops cancel ID | ops rollback ID | ops reclaim ID
    cashu-worker history WALLET [--limit N] [--offset N]
    cashu-worker recovery run
    cashu-worker events follow [--from STREAM_ID] [--count N] [--wait SECONDS]   # until ^C

Every command takes --json (JSON instead of a plain table; `events follow` prints one
JSON object per line). Results and the event stream are in REDIS_URL, default
redis://127.0.0.1:6379/0, or --redis-url; so is the broker, unless BROKER_URL or
--broker-url names another (RabbitMQ: amqp://...). Tokens are masked in what `ops` prints unless
--show-secrets is given. An error prints "error CODE: message" on stderr and exits 2 (an
unreachable broker: BROKER_ERROR within a few seconds); a bad argument or choice is refused
by argparse (exit 2) before anything is sent. Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO, cast

from cashu_client.client import (
    DEFAULT_LIGHTNING_QUEUE,
    DEFAULT_QUEUE,
    DEFAULT_TIMEOUT,
    CashuClient,
    redact,
)
from cashu_client.errors import (
    BrokerError,
    CashuWorkerError,
    InvalidRequestError,
    InvalidStateError,
    OperationNotFoundError,
)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
EVENT_STREAM = "cashu:events"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
OPERATION_KINDS = ("mint", "melt", "send", "receive")
# every state of any saga (the worker's sagas.engine.SPECS; tests/test_cli.py checks them)
OPERATION_STATES = (
    "init",
    "prepared",
    "executing",
    "pending",
    "finalized",
    "rolling_back",
    "rolled_back",
    "failed",
)
FOLLOW_BLOCK = 5.0  # seconds one XREAD blocks when following without --wait
SOCKET_SLACK = 10.0  # a read may take this much longer than its XREAD blocks
CONNECT_TIMEOUT = 2.0

# --- output ------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned columns; numbers right-aligned. '(none)' for no rows."""
    if not rows:
        return "  ".join(headers) + "\n(none)"
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [
        any(_is_number(row[i]) for row in rows)
        and all(_is_number(row[i]) or row[i] is None for row in rows)
        for i in range(len(headers))
    ]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in cells)])


def format_pairs(pairs: Sequence[tuple[str, Any]]) -> str:
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(width)}  {_cell(v)}" for k, v in pairs)


def _short_time(value: str | None) -> str | None:
    return value[:19].replace("T", " ") if value else value


def _error_code(error: Any) -> Any:
    return error.get("code") if isinstance(error, dict) else error


# --- plain renderings of each result -----------------------------------------------------------


def render_mint(mint: dict[str, Any]) -> str:
    info = mint.get("info") or {}
    head = format_pairs(
        [
            ("url", mint.get("url")),
            ("trusted", mint.get("trusted")),
            ("name", info.get("name")),
            ("version", info.get("version")),
        ]
    )
    keysets = format_table(
        ["KEYSET", "UNIT", "ACTIVE", "FEE_PPK"],
        [
            [k.get("id"), k.get("unit"), k.get("active"), k.get("input_fee_ppk")]
            for k in mint.get("keysets") or []
        ],
    )
    return f"{head}\n\n{keysets}"


def render_mints(result: dict[str, Any]) -> str:
    rows = []
    for mint in result.get("mints", []):
        active = [k for k in mint.get("keysets") or [] if k.get("active")]
        rows.append(
            [
                mint.get("url"),
                mint.get("trusted"),
                (mint.get("info") or {}).get("name"),
                ",".join(sorted({str(k.get("unit")) for k in active})) or None,
                len(mint.get("keysets") or []),
            ]
        )
    return format_table(["URL", "TRUSTED", "NAME", "UNITS", "KEYSETS"], rows)


def render_balance(result: dict[str, Any]) -> str:
    columns = ("spendable", "reserved", "pending", "total")
    unit = result.get("unit")
    rows = [
        [url, unit, *(entry.get(c, 0) for c in columns)]
        for url, entry in sorted((result.get("by_mint") or {}).items())
    ]
    rows.append(["total", unit, *(result.get(c, 0) for c in columns)])
    return format_table(["MINT", "UNIT", "SPENDABLE", "RESERVED", "PENDING", "TOTAL"], rows)


def render_operations(result: dict[str, Any]) -> str:
    return format_table(
        ["ID", "KIND", "STATE", "AMOUNT", "UNIT", "MINT", "CREATED", "ERROR"],
        [
            [
                op.get("id"),
                op.get("kind"),
                op.get("state"),
                op.get("amount"),
                op.get("unit"),
                op.get("mint_url"),
                _short_time(op.get("created_at")),
                _error_code(op.get("error")),
            ]
            for op in result.get("operations", [])
        ],
    )


def render_operation(op: dict[str, Any]) -> str:
    pairs = []
    for key, value in op.items():
        if key == "error" and isinstance(value, dict):
            value = f"{value.get('code')} ({value.get('severity')}): {value.get('message')}"
        pairs.append((key, value))
    return format_pairs(pairs)


def render_history(result: dict[str, Any]) -> str:
    return format_table(
        ["CREATED", "DIR", "KIND", "STATE", "AMOUNT", "FEE", "UNIT", "MINT", "ERROR", "OPERATION"],
        [
            [
                _short_time(e.get("created_at")),
                e.get("direction"),
                e.get("kind"),
                e.get("state"),
                e.get("amount"),
                e.get("fee"),
                e.get("unit"),
                e.get("mint_url"),
                e.get("error"),
                e.get("operation_id"),
            ]
            for e in result.get("entries", [])
        ],
    )


def render_counts(result: dict[str, Any]) -> str:
    return format_pairs(list(result.items()))


# --- commands ----------------------------------------------------------------------------------


class Context:
    """What a command needs: its arguments, a client made on first use, and stdout."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self._client: CashuClient | None = None

    @property
    def client(self) -> CashuClient:
        if self._client is None:
            self._client = CashuClient(
                self.args.broker_url or self.args.redis_url,
                self.args.redis_url,
                queue=self.args.queue,
                lightning_queue=self.args.lightning_queue,
                timeout=self.args.timeout,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def emit(self, result: Any, render: Callable[[Any], str]) -> int:
        if self.args.json:
            self.out.write(json.dumps(result, indent=2) + "\n")
        else:
            self.out.write(render(result) + "\n")
        return 0

    def secrets(self, result: Any) -> Any:
        return result if getattr(self.args, "show_secrets", False) else redact(result)


def cmd_mints_add(ctx: Context) -> int:
    return ctx.emit(ctx.client.mints_add(ctx.args.url, trusted=not ctx.args.untrusted), render_mint)


def cmd_mints_list(ctx: Context) -> int:
    return ctx.emit(ctx.client.mints_list(), render_mints)


def cmd_mints_trust(ctx: Context) -> int:
    return ctx.emit(ctx.client.mints_set_trusted(ctx.args.url, True), render_mint)


def cmd_mints_untrust(ctx: Context) -> int:
    return ctx.emit(ctx.client.mints_set_trusted(ctx.args.url, False), render_mint)


def cmd_mints_remove(ctx: Context) -> int:
    return ctx.emit(ctx.client.mints_remove(ctx.args.url), render_mint)


def cmd_balance(ctx: Context) -> int:
    a = ctx.args
    return ctx.emit(ctx.client.balance(a.wallet, mint_url=a.mint, unit=a.unit), render_balance)


def cmd_ops_list(ctx: Context) -> int:
    a = ctx.args
    result = ctx.client.ops_list(
        a.wallet, kind=a.kind, states=a.state, limit=a.limit, offset=a.offset
    )
    return ctx.emit(ctx.secrets(result), render_operations)


def cmd_ops_show(ctx: Context) -> int:
    op = ctx.client.ops_get(ctx.args.id)
    if op is None:
        raise OperationNotFoundError(f"no operation has id {ctx.args.id}")
    return ctx.emit(ctx.secrets(op), render_operation)


def _action_of(action: str, op: dict[str, Any]) -> str:
    """The task `ops ACTION` sends for this operation (its kind, its state). A state the
    task itself refuses is left to the worker to answer (INVALID_STATE)."""
    kind, state = op.get("kind"), op.get("state")
    if kind == "send":
        if action == "cancel" and state in ("pending", "rolling_back"):
            raise InvalidStateError(
                f"only a prepared send can be cancelled, this one is {state}; "
                "`ops reclaim` takes its token back"
            )
        if action == "reclaim" and state == "prepared":
            raise InvalidStateError(
                "only a pending send can be reclaimed, this one is prepared; "
                "`ops cancel` releases its inputs"
            )
        return "send_rollback"  # cancels a prepared send, reclaims a pending one
    if kind == "melt":
        if action == "reclaim" or (action == "rollback" and state in ("pending", "rolling_back")):
            return "melt_reclaim"
        return "melt_cancel"
    raise InvalidRequestError(
        f"ops {action} applies to send and melt operations; {op.get('id')} is a {kind} operation"
    )


def _cmd_ops_action(action: str) -> Callable[[Context], int]:
    def run(ctx: Context) -> int:
        op = ctx.client.ops_get(ctx.args.id)
        if op is None:
            raise OperationNotFoundError(f"no operation has id {ctx.args.id}")
        result = getattr(ctx.client, _action_of(action, op))(op["id"])
        return ctx.emit(ctx.secrets(result), render_operation)

    run.__name__ = f"cmd_ops_{action}"
    return run


cmd_ops_cancel = _cmd_ops_action("cancel")
cmd_ops_rollback = _cmd_ops_action("rollback")
cmd_ops_reclaim = _cmd_ops_action("reclaim")


def cmd_history(ctx: Context) -> int:
    a = ctx.args
    result = ctx.client.history_list(a.wallet, limit=a.limit, offset=a.offset)
    return ctx.emit(result, render_history)


def cmd_recovery_run(ctx: Context) -> int:
    return ctx.emit(ctx.client.recovery_run(), render_counts)


def cmd_events_follow(ctx: Context) -> int:
    """XREAD the event stream (blocking) and print each event as it comes."""
    try:
        import redis
    except ImportError:  # pragma: no cover - celery[redis] brings it
        raise CashuWorkerError(
            "MISSING_DEPENDENCY", "events follow needs the redis package (pip install redis)"
        ) from None
    a = ctx.args
    stream = a.stream
    block = a.wait if a.wait is not None else FOLLOW_BLOCK
    # the socket waits longer than XREAD blocks: quiet time is no error (redis' default
    # socket timeout, 5 s, ended the follower after 5 s without events)
    conn = redis.Redis.from_url(
        a.redis_url,
        decode_responses=True,
        socket_timeout=block + SOCKET_SLACK,
        socket_connect_timeout=CONNECT_TIMEOUT,
    )
    seen = 0
    try:
        last = a.start
        if last == "$":  # "only new": pin the current end, so nothing between reads is missed
            newest = conn.xrevrange(stream, count=1)
            last = newest[0][0] if newest else "0-0"
        block_ms = max(1, int(block * 1000))
        while a.count is None or seen < a.count:
            want = None if a.count is None else a.count - seen
            reply = conn.xread({stream: last}, count=want, block=block_ms)
            if not reply:
                if a.wait is not None:
                    break  # nothing new within --wait seconds
                continue
            # [[stream, [(id, fields), ...]]] (RESP2, decoded): one stream was asked for
            entries: list[tuple[str, dict[str, str]]] = cast(list[Any], reply)[0][1]
            for stream_id, fields in entries:
                last = stream_id
                ctx.out.write(_event_line(stream_id, fields, as_json=a.json) + "\n")
                ctx.out.flush()
                seen += 1
    except redis.RedisError as exc:
        raise BrokerError(f"reading {stream}: {exc}") from exc
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        conn.close()
    return 0


def _event_line(stream_id: str, fields: dict[str, str], *, as_json: bool) -> str:
    try:
        payload = json.loads(fields.get("payload") or "null")
    except ValueError:
        payload = fields.get("payload")
    event_id = fields.get("id")
    event = {
        "stream_id": stream_id,
        "id": int(event_id) if event_id and event_id.isdigit() else event_id,
        "type": fields.get("type"),
        "operation_id": fields.get("operation_id"),
        "payload": redact(payload),
    }
    if as_json:
        return json.dumps(event, separators=(",", ":"))
    state = payload.get("state") if isinstance(payload, dict) else None
    return (
        f"{stream_id:<16}  {_cell(event['id']):>8}  {_cell(event['type']):<22}  "
        f"{_cell(event['operation_id'])}  {_cell(state)}"
    )


# --- arguments ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cashu-worker",
        description="Operate cashu-worker through its Celery tasks (and its event stream).",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        help="result backend, event stream and default broker (env REDIS_URL; default %(default)s)",
    )
    parser.add_argument(
        "--broker-url",
        default=os.environ.get("BROKER_URL") or None,
        help="the workers' broker when it is not REDIS_URL (env BROKER_URL), e.g. amqp://...",
    )
    parser.add_argument("--queue", default=DEFAULT_QUEUE, help="task queue (%(default)s)")
    parser.add_argument(
        "--lightning-queue",
        default=DEFAULT_LIGHTNING_QUEUE,
        help="queue of a melt's execute and pay (%(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for a task's result (%(default)s)",
    )
    parser.add_argument("--json", action="store_true", default=False, help="JSON output")
    # --json also after the command; SUPPRESS keeps a global --json when it is not repeated
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def sub(group: Any, name: str, handler: Callable[[Context], int], help: str) -> Any:
        p = group.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    mints = commands.add_parser("mints", help="add, list, trust, untrust and remove mints")
    mints_cmds = mints.add_subparsers(dest="mints_command", metavar="ACTION", required=True)
    p = sub(mints_cmds, "add", cmd_mints_add, "register (or refresh) a mint; trusted by default")
    p.add_argument("url")
    p.add_argument("--untrusted", action="store_true", help="register it untrusted")
    sub(mints_cmds, "list", cmd_mints_list, "the registered mints")
    p = sub(mints_cmds, "trust", cmd_mints_trust, "trust a mint")
    p.add_argument("url")
    p = sub(mints_cmds, "untrust", cmd_mints_untrust, "stop trusting a mint (never contacted)")
    p.add_argument("url")
    p = sub(mints_cmds, "remove", cmd_mints_remove, "forget a mint that holds nothing of ours")
    p.add_argument("url")

    p = sub(commands, "balance", cmd_balance, "a wallet's balance, per mint")
    p.add_argument("wallet")
    p.add_argument("--mint", metavar="URL", help="only this mint")
    p.add_argument("--unit", default="sat", help="unit (%(default)s)")

    ops = commands.add_parser("ops", help="list, show, cancel, roll back and reclaim operations")
    ops_cmds = ops.add_subparsers(dest="ops_command", metavar="ACTION", required=True)
    p = sub(ops_cmds, "list", cmd_ops_list, "a wallet's operations, newest first")
    p.add_argument("wallet")
    p.add_argument("--kind", choices=OPERATION_KINDS)
    p.add_argument(
        "--state",
        nargs="+",
        action="extend",
        choices=OPERATION_STATES,
        metavar="S",
        help=f"only these states ({', '.join(OPERATION_STATES)})",
    )
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--show-secrets", action="store_true", help="print tokens unmasked")
    p = sub(ops_cmds, "show", cmd_ops_show, "one operation")
    p.add_argument("id")
    p.add_argument("--show-secrets", action="store_true", help="print its token unmasked")
    for action, handler, text in (
        ("cancel", cmd_ops_cancel, "cancel a prepared send or melt: its inputs are released"),
        (
            "rollback",
            cmd_ops_rollback,
            "roll back a send or melt: cancel a prepared one, reclaim a pending one",
        ),
        (
            "reclaim",
            cmd_ops_reclaim,
            "take back a pending send's token (a swap, at its fee), or a pending melt's "
            "inputs once the mint reports its quote UNPAID",
        ),
    ):
        p = sub(ops_cmds, action, handler, text)
        p.add_argument("id")
        p.add_argument("--show-secrets", action="store_true", help="print a token unmasked")

    p = sub(commands, "history", cmd_history, "a wallet's history, newest first")
    p.add_argument("wallet")
    p.add_argument("--limit", type=int, default=25)
    p.add_argument("--offset", type=int, default=0)

    recovery = commands.add_parser("recovery", help="run recovery")
    recovery_cmds = recovery.add_subparsers(
        dest="recovery_command", metavar="ACTION", required=True
    )
    sub(recovery_cmds, "run", cmd_recovery_run, "settle every open operation that can be")

    events = commands.add_parser("events", help="follow the event stream")
    events_cmds = events.add_subparsers(dest="events_command", metavar="ACTION", required=True)
    p = sub(events_cmds, "follow", cmd_events_follow, f"print the events of {EVENT_STREAM}")
    p.add_argument(
        "--from",
        dest="start",
        default="$",
        metavar="STREAM_ID",
        help="after this stream id (0: from the start; default $: only new events)",
    )
    p.add_argument("--count", type=int, help="stop after N events")
    p.add_argument("--wait", type=float, help="stop after this many seconds without an event")
    p.add_argument("--stream", default=EVENT_STREAM, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    ctx = Context(args, out or sys.stdout)
    try:
        return args.handler(ctx)
    except CashuWorkerError as exc:
        print(f"error {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
