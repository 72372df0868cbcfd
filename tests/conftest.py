"""Shared fixtures: a real Nutshell test mint (see tests/mint_harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from mint_harness import RunningMint, start_mint


@pytest.fixture(scope="session")
def test_mint() -> Iterator[RunningMint]:
    """One FakeWallet mint (input_fee_ppk=100) for the whole session."""
    mint = start_mint(input_fee_ppk=100)
    try:
        yield mint
    finally:
        mint.stop()


@pytest.fixture
def fresh_mint() -> Iterator[Callable[..., RunningMint]]:
    """Factory for a test's own mint(s): fresh_mint(env_overrides={...}, input_fee_ppk=...).
    Takes start_mint's keyword arguments; every mint started is stopped at test end."""
    started: list[RunningMint] = []

    def factory(**kwargs: object) -> RunningMint:
        mint = start_mint(**kwargs)  # type: ignore[arg-type]
        started.append(mint)
        return mint

    try:
        yield factory
    finally:
        for mint in started:
            mint.stop()
