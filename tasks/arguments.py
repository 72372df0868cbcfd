"""The arguments of the public tasks, checked in one place before anything is read or written.

A task's arguments come, in the end, from strangers. Before a task reads or writes
anything it passes each argument through the check of its kind below, which returns the
value to carry on with (the value itself; a mint URL and an operation id in their canonical
forms) or raises a typed error whose message names the argument: InvalidAmountError for
amounts and fees, InvalidTokenError for a token and InvalidInvoiceError for an invoice (as
when they do not parse), InvalidRequestError for everything else. So a bad argument never
reaches Postgres, Redis, a mint or a saga as something they would fail on with a raw error.
Before that, `check_call` (run by CashuTask.__call__ in tasks/app.py for every task)
refuses unknown, missing, surplus and doubled arguments, by name.

| argument             | accepted                                             | limit             |
|----------------------|------------------------------------------------------|-------------------|
| wallet               | a non-empty str, no control characters               | WALLET_MAX 256    |
| mint_url, url        | http(s)://, a host name or [IPv6], a port 1..65535;  | MINT_URL_MAX 2048 |
|                      | printable ASCII, no spaces                           |                   |
| amount               | a whole number (an int, never a bool)                | 1..MAX_AMOUNT     |
| max_fee              | None, or a whole number                              | 0..MAX_AMOUNT     |
| unit                 | a letter, then letters, digits, _ and -              | UNIT_MAX 32       |
| method               | lower-case letters, digits, _ (bolt11)               | METHOD_MAX 32     |
| memo                 | None, or a str (may be empty), no control characters | MEMO_MAX 1024     |
|                      | but tab, newline and carriage return                 |                   |
| notify_task          | None, or a Celery task name: ASCII letters, digits,  | NOTIFY_TASK_MAX   |
|                      | _ . : - (a letter or _ first); not one of ours       | 256               |
| token                | a non-empty str (the token decoder checks the rest); | TOKEN_MAX 10**6   |
|                      | refused as InvalidTokenError                         |                   |
| invoice              | a non-empty str (the bolt11 reader checks the rest); | INVOICE_MAX 7089  |
|                      | refused as InvalidInvoiceError                       |                   |
| quote_id             | a non-empty str, no control characters               | QUOTE_ID_MAX 256  |
| operation_id         | a str; one that is no UUID is no operation; or the   | a UUID            |
|                      | Operation a chain's previous step returned           |                   |
|                      | (OperationNotFoundError; cashu.ops.get: None)        |                   |
| p2pk_pubkey          | None, or 02/03 and 64 hex digits (the send saga      | 66 characters     |
|                      | checks that it is a point of the curve)              |                   |
| trusted, trust_mint, | a real bool: not "no", not 0 or 1                    |                   |
| include_receiver_fee |                                                      |                   |
| token_version        | 3 or 4, an int                                       | TOKEN_VERSIONS    |
| kind (ops.list)      | None, or a kind of saga: mint, melt, send, receive   |                   |
| states (ops.list)    | None, a state or a list of states, each one a state  | STATES_MAX 32     |
|                      | of some saga (sagas.engine.SPECS)                    | entries           |
| limit, offset        | a whole number (a limit above 500 reads 500 rows)    | 0..PAGE_MAX 10**9 |

"Control characters" are the C0 and C1 controls (U+0000..U+001F, U+007F..U+009F);
unpaired surrogates (text that is no UTF-8) count as control characters too.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Callable
from functools import cache
from typing import Any, Literal, overload

from nuts.client import normalize_mint_url
from nuts.errors import CashuError, InvalidTokenError
from nuts.invoices import MAX_INVOICE_LENGTH
from nuts.tokens import MAX_TOKEN_LENGTH
from sagas.engine import MAX_AMOUNT, validate_amount
from sagas.errors import (
    InvalidAmountError,
    InvalidInvoiceError,
    InvalidRequestError,
    OperationNotFoundError,
)
from tasks.log_format import task_signature

WALLET_MAX = 256
MINT_URL_MAX = 2048
UNIT_MAX = 32
METHOD_MAX = 32
MEMO_MAX = 1024
NOTIFY_TASK_MAX = 256
TOKEN_MAX = MAX_TOKEN_LENGTH
INVOICE_MAX = MAX_INVOICE_LENGTH
QUOTE_ID_MAX = 256
STATES_MAX = 32
PAGE_MAX = 1_000_000_000
TOKEN_VERSIONS = (3, 4)
OUR_TASKS = "cashu."  # notify_task may not name one of the worker's own tasks

_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_MEMO_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_MINT_URL = re.compile(
    rf"(?i:https?)://(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(?::(\d{{1,5}}))?(?:[/?#][!-~]*)?"
)
_UNIT = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_METHOD = re.compile(r"[a-z0-9_]+")
_TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
_PUBKEY = re.compile(r"0[23][0-9A-Fa-f]{64}")


# --- the call as a whole -------------------------------------------------------------------------


def check_call(name: str, func: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> None:
    """Refuse a call of task `name` that does not fit `func`'s signature, naming the
    argument: unknown, missing, given twice, or more positional ones than it takes."""
    signature = task_signature(func)
    if signature is None:
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise InvalidRequestError(
            _misfit(name, signature, args, kwargs) or f"{name}: {exc}"
        ) from None


def _misfit(name: str, signature: inspect.Signature, args: tuple, kwargs: dict) -> str | None:
    params = signature.parameters
    takes = ", ".join(params) or "no arguments"
    unknown = [key for key in kwargs if key not in params]
    if unknown:
        return f"{name} has no argument {_short(unknown[0])}; it takes {takes}"
    if len(args) > len(params):
        return f"{name} takes at most {len(params)} positional arguments ({takes}), got {len(args)}"
    by_position = list(params)[: len(args)]
    twice = [key for key in by_position if key in kwargs]
    if twice:
        return f"{name} got the argument {twice[0]!r} twice, by position and by name"
    missing = [
        p.name
        for p in params.values()
        if p.default is p.empty and p.name not in kwargs and p.name not in by_position
    ]
    return f"{name} needs the argument {missing[0]!r}" if missing else None


# --- text ----------------------------------------------------------------------------------------


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:32]}... ({len(text)} chars)"


def _type(value: object) -> str:
    return "None" if value is None else type(value).__name__


def _text(
    value: object,
    name: str,
    limit: int,
    *,
    empty: bool = False,
    controls: re.Pattern = _CONTROLS,
    error: type[CashuError] = InvalidRequestError,
) -> str:
    if not isinstance(value, str):
        raise error(f"{name} must be a string, got {_type(value)}")
    if not value and not empty:
        raise error(f"{name} must not be empty")
    if len(value) > limit:
        raise error(f"{name} must be at most {limit} characters, got {len(value)}")
    if controls.search(value):
        raise error(f"{name} must not contain control characters")
    return value


def _code(value: object, name: str, pattern: re.Pattern, limit: int, what: str) -> str:
    text = _text(value, name, limit)
    if not pattern.fullmatch(text):
        raise InvalidRequestError(f"{name} must be {what}, got {_short(text)}")
    return text


def wallet(value: object, name: str = "wallet") -> str:
    return _text(value, name, WALLET_MAX)


@overload
def mint_url(value: object, name: str = ..., *, optional: Literal[False] = ...) -> str: ...
@overload
def mint_url(value: object, name: str = ..., *, optional: bool) -> str | None: ...
def mint_url(value: object, name: str = "mint_url", *, optional: bool = False) -> str | None:
    """The URL in its canonical form (trimmed, no trailing slash), once it is an http(s)
    URL with a host."""
    if optional and value is None:
        return None
    text = _text(value, name, MINT_URL_MAX)
    match = _MINT_URL.fullmatch(text.strip())
    if match is None or not 0 < int(match.group(1) or 80) <= 65535:
        raise InvalidRequestError(f"{name} must be an http(s) URL of a mint, got {_short(text)}")
    return normalize_mint_url(text)


def unit(value: object) -> str:
    return _code(value, "unit", _UNIT, UNIT_MAX, "a unit such as sat (letters, digits, _ -)")


def method(value: object) -> str:
    return _code(value, "method", _METHOD, METHOD_MAX, "a payment method such as bolt11")


def memo(value: object) -> str | None:
    if value is None:
        return None
    return _text(value, "memo", MEMO_MAX, empty=True, controls=_MEMO_CONTROLS)


def notify_task(value: object) -> str | None:
    """None, or the name of a task of the caller's, sent each event of the operation."""
    if value is None:
        return None
    text = _code(value, "notify_task", _TASK_NAME, NOTIFY_TASK_MAX, "a Celery task name")
    if text.startswith(OUR_TASKS):
        raise InvalidRequestError(f"notify_task must be a task of yours, not one of ours: {text}")
    return text


def token(value: object) -> str:
    """Refused as InvalidTokenError, as a token that does not decode is."""
    return _text(value, "token", TOKEN_MAX, controls=_NOTHING, error=InvalidTokenError)


def invoice(value: object) -> str:
    """Refused as InvalidInvoiceError, as an invoice that does not parse is."""
    return _text(value, "invoice", INVOICE_MAX, controls=_NOTHING, error=InvalidInvoiceError)


_NOTHING = re.compile("(?!)")  # tokens and invoices: their own parsers refuse what they must


@overload
def quote_id(value: object, *, optional: Literal[False] = ...) -> str: ...
@overload
def quote_id(value: object, *, optional: bool) -> str | None: ...
def quote_id(value: object, *, optional: bool = False) -> str | None:
    if optional and value is None:
        return None
    return _text(value, "quote_id", QUOTE_ID_MAX)


@overload
def operation_id(value: object, name: str = ..., *, optional: Literal[False] = ...) -> str: ...
@overload
def operation_id(value: object, name: str = ..., *, optional: bool) -> str | None: ...
def operation_id(
    value: object, name: str = "operation_id", *, optional: bool = False
) -> str | None:
    """The id in its canonical form (the lock's key), or None when optional and not given.
    A string that is no UUID is no operation: OperationNotFoundError, as for an unknown id.
    An Operation, as the step before it in a Celery chain returns it, stands for its id."""
    if optional and value is None:
        return None
    if isinstance(value, dict) and isinstance(value.get("id"), str) and "kind" in value:
        value = value["id"]
    if not isinstance(value, str):
        raise InvalidRequestError(f"{name} must be a string (a UUID), got {_type(value)}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise OperationNotFoundError(f"no operation {_short(value)}") from None


def p2pk_pubkey(value: object) -> str | None:
    if value is None:
        return None
    return _code(value, "p2pk_pubkey", _PUBKEY, 66, "a 33-byte compressed public key in hex")


# --- numbers and flags ---------------------------------------------------------------------------


def _whole(
    value: object, name: str, error: type[CashuError], within: tuple[int, int] | None = None
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{name} must be a whole number, got {_short(value)}")
    if within is not None and not within[0] <= value <= within[1]:
        raise error(f"{name} must be from {within[0]} to {within[1]}, got {_short(value)}")
    return value


def amount(value: object) -> int:
    return validate_amount(_whole(value, "amount", InvalidAmountError))


def max_fee(value: object) -> int | None:
    if value is None:
        return None
    return _whole(value, "max_fee", InvalidAmountError, (0, MAX_AMOUNT))


def count(value: object, name: str) -> int:
    """limit, offset."""
    return _whole(value, name, InvalidRequestError, (0, PAGE_MAX))


def flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be true or false, got {_short(value)}")
    return value


def token_version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in TOKEN_VERSIONS:
        raise InvalidRequestError(f"token_version must be 3 or 4, got {_short(value)}")
    return value


# --- cashu.ops.list's filters --------------------------------------------------------------------


@cache
def _known() -> tuple[frozenset[str], frozenset[str]]:
    """(the kinds of saga, every state of any of them)."""
    from tasks.metrics import saga_states

    states = saga_states()
    return frozenset(states), frozenset().union(*(every for every, _ in states.values()))


def kind(value: object) -> str | None:
    kinds = _known()[0]
    if value is None or (isinstance(value, str) and value in kinds):
        return value
    raise InvalidRequestError(
        f"kind must be one of {', '.join(sorted(kinds))}, got {_short(value)}"
    )


def states(value: object) -> list[str] | None:
    """None (any state), one state, or a list of them."""
    if value is None:
        return None
    listed = [value] if isinstance(value, str) else value
    if not isinstance(listed, list | tuple) or len(listed) > STATES_MAX:
        raise InvalidRequestError(f"states must be a list of at most {STATES_MAX} states")
    known = _known()[1]
    for state in listed:
        if not isinstance(state, str) or state not in known:
            raise InvalidRequestError(
                f"states must name known states ({', '.join(sorted(known))}), got {_short(state)}"
            )
    return list(listed)
