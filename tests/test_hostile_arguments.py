"""Hostile arguments: what a stranger can send the public tasks, and what comes back.

Every public task (each `cashu.*` task of the worker's Celery app, less the beat's and the
event relay's: the list comes from the app's registry, so a new task is covered the day it
is added) is called through the real worker with bad values for each of its arguments:
wrong types (None, int, float, bool, list, dict), empty, huge, negative, control
characters, unicode, SQL-looking text, and unknown, missing or surplus arguments. Each call
must come back as one of our typed errors, naming the argument (InvalidRequestError or
InvalidAmountError; InvalidTokenError and InvalidInvoiceError for a token and an invoice, as
when they do not parse; OperationNotFoundError for an operation id that is no UUID), never
as a raw ProgrammingError, TypeError..., and must leave the funded wallet of the test as it
was: the same balance, no new operation. The worker must answer the next call.

Hypothesis draws more bad values of each kind (a bounded number, no deadline: each call
crosses the real worker).
"""

from __future__ import annotations

import importlib
import inspect
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from celery import Celery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from task_helpers import TIMEOUT, call, fund, new_wallet_name

import nuts.errors
import sagas.errors
from cashu_client.errors import ERRORS
from nuts.invoices import MAX_INVOICE_LENGTH
from nuts.tokens import MAX_TOKEN_LENGTH
from sagas.engine import MAX_AMOUNT
from tasks.metrics import saga_states

# --- the tasks under test ---------------------------------------------------------------------

NOT_PUBLIC = ("cashu.beat.", "cashu.events.")  # the beat's ticks and the event relay


def public_tasks() -> dict[str, inspect.Signature]:
    """The worker app's public tasks by name, with the signature a caller must follow."""
    from tasks.app import TASK_MODULES, app

    for module in TASK_MODULES:
        importlib.import_module(module)
    return {
        name: inspect.signature(task.run)
        for name, task in sorted(app.tasks.items())
        if name.startswith("cashu.") and not name.startswith(NOT_PUBLIC)
    }


PUBLIC = public_tasks()

OURS = set(ERRORS) | {
    name
    for module in (nuts.errors, sagas.errors)
    for name, cls in vars(module).items()
    if isinstance(cls, type) and issubclass(cls, nuts.errors.CashuError)
}
REFUSALS = frozenset({"InvalidRequestError", "InvalidAmountError"})

KINDS = saga_states()  # {kind: (its states, terminal states)}
STATES = set().union(*(every for every, _ in KINDS.values()))

# --- the kinds of argument and their bad values -------------------------------------------------

HUGE = "x" * 10_001
SQL = "'; DROP TABLE proofs; --"
UNICODE = "ünïcødé ✓ 𝔠𝔞𝔰𝔥𝔲 💸"
NOT_TEXT = (None, 123, -1, 1.5, True, False, [], ["x"], {}, {"a": 1})
NOT_WHOLE = (None, "5", 5.5, float("nan"), float("inf"), True, False, [], [5], {}, {"n": 5})
NOT_BOOL = (None, "no", "yes", "true", "false", "", 0, 1, 1.0, [], [True], {}, {"a": True})
CONTROL = ("a\x00b", "line\nbreak", "tab\there", "\x1b[31mred", "\x7f")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=4,
)
non_text = json_values.filter(lambda v: not isinstance(v, str))
non_whole = json_values.filter(lambda v: isinstance(v, bool) or not isinstance(v, int))
huge_text = st.text(min_size=1, max_size=8).map(lambda s: s * (10_001 // len(s) + 1))


def around(middle: st.SearchStrategy, sides: st.SearchStrategy) -> st.SearchStrategy:
    """Text with a character drawn from `middle` somewhere in it."""
    return st.builds(lambda a, c, b: a + c + b, sides, middle, sides)


def with_one_of(characters: str) -> st.SearchStrategy:
    """Lower-case letters with one of `characters` somewhere among them."""
    return around(st.sampled_from(characters), st.text("abcdefghijklmnop", max_size=8))


with_a_control = around(st.characters(categories=["Cc"]), st.text(max_size=8))


@dataclass(frozen=True)
class Kind:
    """One kind of argument: bad values refused by name (examples, then more drawn by
    hypothesis), and strings that are no operation id (answered OperationNotFoundError)."""

    bad: tuple[Any, ...]
    more: st.SearchStrategy
    not_found: tuple[str, ...] = ()
    not_found_more: st.SearchStrategy | None = None
    refusals: frozenset[str] = REFUSALS


def not_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return True
    return False


TEXT_REFUSED = ("", HUGE, *CONTROL)
CODE_REFUSED = (*TEXT_REFUSED, SQL, UNICODE, "s a t", "sat/../x")
BAD_CODE_CHARS = " '\";\\/.:@ü✓\x00\n"  # none of them in a unit or a method
BAD_NAME_CHARS = " '\";\\/@()ü✓\x00\n"  # none of them in a Celery task name

ARGUMENT_KINDS: dict[str, Kind] = {
    "wallet": Kind(
        (*NOT_TEXT, *TEXT_REFUSED, "w" * 257, "\ud800"),
        non_text | huge_text | with_a_control | st.just(""),
    ),
    "mint_url": Kind(
        (
            *NOT_TEXT,
            *TEXT_REFUSED,
            SQL,
            UNICODE,
            "mint.example",
            "ftp://mint.example",
            "javascript:alert(1)",
            "http://",
            "https://:3338",
            "http://mint example",
            "http://mint\x00.example",
            "http://mint.example:99999",
            "http://" + HUGE,
        ),
        non_text
        | huge_text
        | st.text(max_size=30).filter(
            lambda s: not s.strip().lower().startswith(("http://", "https://"))
        )
        | st.builds(
            lambda p, s: p + s,
            st.sampled_from(["http://", "https://"]),
            # inside the host, not at an end: a URL's surrounding blanks are trimmed, not bad
            around(
                st.sampled_from(' <>"{}|\\^`\x00'),
                st.text("abcdefghijklmnop", min_size=1, max_size=8),
            ),
        ),
    ),
    "amount": Kind(
        (*NOT_WHOLE, 0, -1, -(10**20), MAX_AMOUNT + 1, 10**100),
        non_whole
        | st.integers(max_value=0)
        | st.integers(min_value=MAX_AMOUNT + 1)
        | st.integers(min_value=1, max_value=10**6).map(str),
    ),
    "max_fee": Kind(
        (*NOT_WHOLE, -1, -(10**20), MAX_AMOUNT + 1, 10**100),
        non_whole | st.integers(max_value=-1) | st.integers(min_value=MAX_AMOUNT + 1),
    ),
    "unit": Kind((*NOT_TEXT, *CODE_REFUSED), non_text | huge_text | with_one_of(BAD_CODE_CHARS)),
    "method": Kind(
        (*NOT_TEXT, *CODE_REFUSED, "BOLT11"),
        non_text | huge_text | with_one_of(BAD_CODE_CHARS),
    ),
    "notify_task": Kind(
        (
            *NOT_TEXT,
            *CODE_REFUSED,
            "svc.task()",
            "cashu.mints.set_trusted",  # one of ours: never ours to be sent by a stranger
            "cashu.beat.refresh_keysets",
        ),
        non_text | huge_text | with_one_of(BAD_NAME_CHARS),
    ),
    "quote_id": Kind(
        (*NOT_TEXT, *TEXT_REFUSED),
        non_text | huge_text | with_a_control | st.just(""),
    ),
    "memo": Kind(
        (*NOT_TEXT, HUGE, "a\x00b", "\x1b[31mred", "\x07bell"),
        non_text
        | huge_text
        | around(
            st.characters(categories=["Cc"], exclude_characters="\t\n\r"), st.text(max_size=8)
        ),
    ),
    "p2pk_pubkey": Kind(
        (
            *NOT_TEXT,
            "",
            HUGE,
            SQL,
            UNICODE,
            "02" + "zz" * 32,
            "04" + "11" * 64,
            "02" + "00" * 32,
        ),
        non_text
        | huge_text
        | st.text(max_size=70).filter(lambda s: not re.fullmatch(r"0[23][0-9a-fA-F]{64}", s)),
    ),
    "flag": Kind(NOT_BOOL, json_values.filter(lambda v: not isinstance(v, bool))),
    "token_version": Kind(
        (None, "4", "3", 4.0, 3.0, True, False, 0, 2, 5, -4, [], [4], {}),
        non_whole | st.integers().filter(lambda n: n not in (3, 4)),
    ),
    "count": Kind(
        (*NOT_WHOLE, -1, -(10**20), 2**63, 10**30),
        non_whole | st.integers(max_value=-1) | st.integers(min_value=2**63),
    ),
    "kind": Kind(
        (*NOT_TEXT, "", "foo", "MINT", SQL, UNICODE, HUGE),
        non_text | st.text(max_size=10).filter(lambda s: s not in KINDS),
    ),
    "states": Kind(
        (
            1,
            1.5,
            True,
            {},
            {"a": 1},
            "",
            "foo",
            SQL,
            [1, 2],
            [None],
            ["pending", "foo"],
            [[]],
            ["pending"] * 1000,
        ),
        st.lists(st.text(max_size=10).filter(lambda s: s not in STATES), min_size=1, max_size=3)
        | st.lists(non_text, min_size=1, max_size=3)
        | non_text.filter(lambda v: not isinstance(v, list))
        | st.text(max_size=10).filter(lambda s: s not in STATES),
    ),
    "invoice": Kind(  # refused as an invoice that does not parse is
        (*NOT_TEXT, "", "l" * (MAX_INVOICE_LENGTH + 1)),
        non_text
        | st.just("")
        | st.text(min_size=1, max_size=8).map(lambda s: s * (MAX_INVOICE_LENGTH // len(s) + 1)),
        refusals=frozenset({"InvalidInvoiceError"}),
    ),
    "token": Kind(  # refused as a token that does not decode is
        (*NOT_TEXT, "", "c" * (MAX_TOKEN_LENGTH + 1)),
        non_text | st.just(""),
        refusals=frozenset({"InvalidTokenError"}),
    ),
    "operation_id": Kind(
        NOT_TEXT,
        non_text,
        not_found=("", HUGE, SQL, UNICODE, "not-a-uuid", "a\x00b", str(uuid.uuid4())[:-1]),
        not_found_more=st.text(max_size=40).filter(not_uuid),
    ),
}

# argument name -> its kind, for every argument of every public task
KIND_OF = {
    **{name: name for name in ARGUMENT_KINDS if name not in ("flag", "count")},
    "url": "mint_url",
    "trusted": "flag",
    "trust_mint": "flag",
    "include_receiver_fee": "flag",
    "wait": "flag",
    "limit": "count",
    "attempt": "count",
    "offset": "count",
}

UNKNOWN_ARGUMENTS = ("amout", "walet", "operation", SQL, "x" * 300)


# --- the scene: a funded wallet, a token and an invoice to hand -------------------------------


@dataclass
class Scene:
    """A funded wallet at a trusted mint, a real token and a real invoice (both of another
    wallet), and what the wallet looked like before the hostile calls."""

    client: Celery
    wallet: str
    mint_url: str
    token: str
    invoice: str
    balance: dict = field(default_factory=dict)
    operations: list[str] = field(default_factory=list)

    def valid(self, name: str) -> dict[str, Any]:
        """The task's required arguments, each with a value that is fine on its own."""
        values = {
            "wallet": self.wallet,
            "mint_url": self.mint_url,
            "url": self.mint_url,
            "amount": 1,
            "invoice": self.invoice,
            "token": self.token,
            "operation_id": str(uuid.uuid4()),  # no such operation
            "quote_id": "no-such-quote",
            "trusted": True,
        }
        required = [
            p.name for p in PUBLIC[name].parameters.values() if p.default is inspect.Parameter.empty
        ]
        missing = [arg for arg in required if arg not in values]
        assert not missing, f"no valid value of {missing} for {name}: add one to Scene.valid"
        return {arg: values[arg] for arg in required}

    def outcome(self, name: str, args: list | None = None, **kwargs: Any) -> tuple[str | None, Any]:
        """(None, result) or (the error's class name, its message)."""
        try:
            return None, self.client.send_task(name, args=args, kwargs=kwargs).get(timeout=TIMEOUT)
        except Exception as exc:
            # a class the result backend could not rebuild comes back as Exception("<class ...>")
            wrapped = re.match(r"<class '(?:\w+\.)*(\w+)'>", str(exc))
            return wrapped[1] if wrapped else type(exc).__name__, str(exc)

    def look(self) -> tuple[dict, list[str]]:
        """The wallet's balance and its operations' ids (both asked at once)."""
        balance = self.client.send_task("cashu.wallet.balance", kwargs={"wallet": self.wallet})
        ops = self.client.send_task("cashu.ops.list", kwargs={"wallet": self.wallet, "limit": 500})
        listed = ops.get(timeout=TIMEOUT)["operations"]
        return balance.get(timeout=TIMEOUT), [op["id"] for op in listed]

    def untouched(self) -> str | None:
        """What changed in the wallet since the last look (None: nothing), as a problem;
        the worker answering these two calls shows it is still alive."""
        before = (self.balance, self.operations)
        try:
            after = self.look()
        except Exception as exc:  # the worker died, or no longer answers
            return f"the worker did not answer: {type(exc).__name__}: {exc}"
        self.balance, self.operations = after
        if after != before:
            return f"the wallet changed: {before} -> {after}"
        return None

    def check(
        self,
        name: str,
        kwargs: dict[str, Any],
        expect: Callable[[str | None, Any], str | None],
        args: list | None = None,
    ) -> list[str]:
        """Call the task; the problems found (none: it answered as `expect` wants and the
        wallet is as it was)."""
        error, answer = self.outcome(name, args, **kwargs)
        problems = [expect(error, answer), self.untouched()]
        shown = {_short(k): _short(v) for k, v in kwargs.items()}
        return [f"{name}({_short(args or '')} {shown}): {p}" for p in problems if p]

    def check_with(
        self, name: str, argument: str, value: Any, expect: Callable[[str | None, Any], str | None]
    ) -> list[str]:
        """`check` with the task's valid arguments, `argument` set to `value`."""
        return self.check(name, {**self.valid(name), argument: value}, expect)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...<{len(text)} chars>"


def refused_naming(
    argument: str, refusals: frozenset[str] = REFUSALS
) -> Callable[[str | None, Any], str | None]:
    """The call must be refused with one of `refusals`, in a message naming the argument."""

    def expect(error: str | None, answer: Any) -> str | None:
        if error is None:
            return f"accepted, answered {_short(answer)}"
        if error not in refusals:
            return f"raised {error}: {_short(answer)}"
        if argument not in answer:
            return f"{error} does not name {argument!r}: {_short(answer)}"
        return None

    return expect


def not_found(name: str) -> Callable[[str | None, Any], str | None]:
    """An operation id that is no UUID: OperationNotFoundError (cashu.ops.get: None)."""

    def expect(error: str | None, answer: Any) -> str | None:
        if name == "cashu.ops.get" and error is None and answer is None:
            return None
        if error != "OperationNotFoundError":
            return f"answered {error or 'a result'}: {_short(answer)}"
        return None

    return expect


def typed_or_answered(error: str | None, answer: Any) -> str | None:
    """Any answer, or an error of ours."""
    if error is not None and error not in OURS:
        return f"raised {error}, not one of our errors: {_short(answer)}"
    return None


def arguments() -> list[tuple[str, str, bool]]:
    """(task, argument, whether None is its default) for every argument of every task."""
    return [
        (name, p.name, p.default is None)
        for name, sig in PUBLIC.items()
        for p in sig.parameters.values()
    ]


def kind_of(argument: str) -> Kind:
    return ARGUMENT_KINDS[KIND_OF[argument]]


def bad_examples(argument: str, optional: bool) -> tuple[Any, ...]:
    return tuple(v for v in kind_of(argument).bad if not (optional and v is None))


@pytest.fixture
def scene(celery_client: Celery, mint_url: str, wallet: str) -> Scene:
    fund(celery_client, wallet, mint_url, 64)
    donor = new_wallet_name("donor")
    fund(celery_client, donor, mint_url, 8)
    token = call(celery_client, "cashu.send.token", wallet=donor, mint_url=mint_url, amount=2)
    invoice = call(celery_client, "cashu.mint.prepare", wallet=donor, mint_url=mint_url, amount=5)
    scene = Scene(celery_client, wallet, mint_url, token["token"], invoice["request"])
    scene.balance, scene.operations = scene.look()
    assert scene.balance["spendable"] == 64 and len(scene.operations) == 1
    return scene


def assert_no_problems(problems: list[str]) -> None:
    """All problems found, most frequent kinds first, then the first 60 of them."""
    kinds = Counter(re.sub(r"^.*?\): ((?:raised \w+)|[^:,]+).*$", r"\1", p) for p in problems)
    summary = ", ".join(f"{kind} x{n}" for kind, n in kinds.most_common())
    assert not problems, f"{len(problems)} problems ({summary}):\n" + "\n".join(problems[:60])


def assert_untouched(scene: Scene) -> None:
    assert_no_problems([p for p in [scene.untouched()] if p])


HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- the campaign ---------------------------------------------------------------------------------


def test_the_campaign_knows_every_argument_of_every_public_task() -> None:
    """A new task or argument needs its kind of hostile input here, or this fails."""
    assert len(PUBLIC) >= 30, sorted(PUBLIC)
    assert "cashu.recovery.run" in PUBLIC and "cashu.beat.poll_melts" not in PUBLIC
    unknown = [(task, arg) for task, arg, _ in arguments() if arg not in KIND_OF]
    assert not unknown, f"arguments without a kind of hostile input: {unknown}"
    scene = Scene(None, "wallet", "http://mint", "cashuB...", "lnbc...")  # type: ignore[arg-type]
    for name, sig in PUBLIC.items():
        scene.valid(name)  # fails when a required argument has no valid value to go with
        kinds = {p.kind for p in sig.parameters.values()}
        assert kinds <= {inspect.Parameter.POSITIONAL_OR_KEYWORD}, name


def test_every_public_task_refuses_a_bad_value_of_any_argument_by_name(scene: Scene) -> None:
    problems: list[str] = []
    for name, argument, optional in arguments():
        for value in bad_examples(argument, optional):
            expect = refused_naming(argument, kind_of(argument).refusals)
            problems += scene.check_with(name, argument, value, expect)
    assert_no_problems(problems)


@HYPOTHESIS
@given(data=st.data())
def test_any_drawn_bad_value_of_any_argument_is_refused_by_name(scene: Scene, data) -> None:
    name, argument, optional = data.draw(st.sampled_from(arguments()), label="argument")
    kind = kind_of(argument)
    value = data.draw(kind.more.filter(lambda v: not (optional and v is None)), label="value")
    expect = refused_naming(argument, kind.refusals)
    assert_no_problems(scene.check_with(name, argument, value, expect))


def test_an_operation_id_that_is_no_uuid_is_not_found_and_never_reaches_the_database(
    scene: Scene,
) -> None:
    problems: list[str] = []
    for name, argument, _ in arguments():
        if KIND_OF[argument] == "operation_id":
            for value in kind_of(argument).not_found:
                problems += scene.check_with(name, argument, value, not_found(name))
    assert_no_problems(problems)


@HYPOTHESIS
@given(data=st.data())
def test_any_drawn_text_that_is_no_uuid_is_no_operation(scene: Scene, data) -> None:
    takers = [name for name, argument, _ in arguments() if argument == "operation_id"]
    name = data.draw(st.sampled_from(takers), label="task")
    value = data.draw(kind_of("operation_id").not_found_more, label="operation_id")
    assert_no_problems(scene.check_with(name, "operation_id", value, not_found(name)))


def test_every_public_task_refuses_an_unknown_keyword_argument_with_a_typed_error(
    scene: Scene,
) -> None:
    problems: list[str] = []
    for name in PUBLIC:
        for unknown in UNKNOWN_ARGUMENTS:
            kwargs = {**scene.valid(name), unknown: 5}
            problems += scene.check(name, kwargs, refused_naming(unknown[:30]))
    assert_no_problems(problems)


def test_every_public_task_refuses_a_missing_required_argument_by_name(scene: Scene) -> None:
    problems: list[str] = []
    for name in PUBLIC:
        valid = scene.valid(name)
        for missing in valid:
            kwargs = {k: v for k, v in valid.items() if k != missing}
            problems += scene.check(name, kwargs, refused_naming(missing))
    assert_no_problems(problems)


def test_every_public_task_refuses_more_positional_arguments_than_it_takes(scene: Scene) -> None:
    problems: list[str] = []
    for name, sig in PUBLIC.items():
        args = [scene.valid(name).get(p, None) for p in sig.parameters] + ["surplus"]
        problems += scene.check(name, {}, refused_naming("positional"), args=args)
    assert_no_problems(problems)


def test_an_argument_given_both_by_position_and_by_name_is_refused_by_name(scene: Scene) -> None:
    problems: list[str] = []
    for name, sig in PUBLIC.items():
        valid = scene.valid(name)
        if valid:
            first = next(iter(sig.parameters))
            problems += scene.check(name, valid, refused_naming(first), args=[valid[first]])
    assert_no_problems(problems)


def test_sql_looking_and_unicode_text_in_any_argument_gets_an_answer_or_a_typed_error(
    scene: Scene,
) -> None:
    """Wherever a string goes (wallet ids and memos aside: there they are data, below)."""
    problems: list[str] = []
    for name, argument, _ in arguments():
        if argument in ("wallet", "memo"):
            continue
        for value in (SQL, UNICODE, "' OR '1'='1", "%s%s%n", "\\x00"):
            problems += scene.check_with(name, argument, value, typed_or_answered)
    assert_no_problems(problems)


def test_sql_looking_and_unicode_wallet_ids_are_wallets_like_any_other(
    celery_client: Celery, mint_url: str, scene: Scene
) -> None:
    for text in (SQL, UNICODE, "Robert'); DROP TABLE operations;--"):
        name = f"{text} {uuid.uuid4().hex[:8]}"
        fund(celery_client, name, mint_url, 2)
        assert call(celery_client, "cashu.wallet.balance", wallet=name)["spendable"] == 2
        ops = call(celery_client, "cashu.ops.list", wallet=name)["operations"]
        assert [op["wallet"] for op in ops] == [name]
        assert call(celery_client, "cashu.wallet.info", wallet=name)["wallet"] == name
        assert_untouched(scene)


def test_a_memo_in_any_script_reaches_the_receiver_as_written(
    celery_client: Celery, mint_url: str, wallet: str
) -> None:
    fund(celery_client, wallet, mint_url, 32)
    receiver = new_wallet_name("rcv")
    for memo in (SQL, UNICODE, "line one\nline two\tend", ""):
        sent = call(
            celery_client, "cashu.send.token", wallet=wallet, mint_url=mint_url, amount=3, memo=memo
        )
        got = call(celery_client, "cashu.receive.prepare", wallet=receiver, token=sent["token"])
        assert got["memo"] == memo


def test_valid_edge_values_are_still_accepted(scene: Scene) -> None:
    client, wallet, op_id = scene.client, scene.wallet, scene.operations[0]
    by_mint = call(client, "cashu.wallet.balance", wallet=wallet, mint_url=scene.mint_url + "/")
    assert by_mint["spendable"] == 64
    assert call(client, "cashu.ops.get", operation_id=op_id.upper())["id"] == op_id
    listed = call(client, "cashu.ops.list", wallet=wallet, states="finalized", kind="mint")
    assert [op["id"] for op in listed["operations"]] == [op_id]
    assert call(client, "cashu.ops.list", wallet=wallet, states=[], limit=0)["operations"] == []
    assert call(client, "cashu.history.list", wallet=wallet, limit=10**6, offset=10**6) == {
        "entries": []
    }
    assert (
        client.send_task("cashu.wallet.balance", args=[wallet]).get(timeout=TIMEOUT)["spendable"]
        == 64
    )
    assert_untouched(scene)


def test_a_wallet_id_may_have_256_characters_and_no_more(scene: Scene) -> None:
    longest = new_wallet_name("long").ljust(256, "g")
    assert call(scene.client, "cashu.wallet.balance", wallet=longest)["total"] == 0
    problems = scene.check(
        "cashu.wallet.balance", {"wallet": longest + "g"}, refused_naming("wallet")
    )
    assert_no_problems(problems)


def test_the_worker_still_answers_after_the_campaign(celery_client: Celery) -> None:
    assert celery_client.control.ping(timeout=5.0, limit=1)
    assert call(celery_client, "cashu.mints.list")["mints"]
