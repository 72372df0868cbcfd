"""Which mints a melt may ask to pay in the background (NUT-05 prefer_async): only one that
commits PENDING before it answers. Nutshell 0.20.2 answered first, and a check right after
its answer read the quote UNPAID and the inputs unspent: a wallet that believed it would
release inputs the mint was about to spend."""

from __future__ import annotations

import pytest
from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert

from models import Mint
from sagas.engine import SagaContext
from sagas.registry import pays_in_background


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("Nutshell/0.20.2", False),
        ("Nutshell/0.20.3", True),
        ("Nutshell/0.21.0", True),
        ("Nutshell/1.0.0rc1", False),  # a version it cannot read: the safe side
        ("cdk-mintd/0.17.0", False),
        ("", False),
        (None, False),
    ],
)
def test_only_a_mint_that_commits_before_it_answers_pays_in_the_background(
    saga_context: SagaContext, version: str | None, expected: bool
) -> None:
    url = "http://async-capability.example"
    info = {} if version is None else {"version": version}
    with saga_context.uow() as session:
        session.execute(
            insert(Mint)
            .values(url=url, trusted=False, info=info)
            .on_conflict_do_update(index_elements=["url"], set_={"info": info})
        )
        answer = pays_in_background(session, url)
        session.execute(delete(Mint).where(Mint.url == url))  # no trace for other tests
    assert answer is expected
