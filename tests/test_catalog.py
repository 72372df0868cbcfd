"""One explicit list of sagas (sagas/catalog.py): what it lists is what is registered."""

from __future__ import annotations

import pytest

from models import Operation
from sagas.catalog import KINDS, SAGAS
from sagas.engine import SPECS, operation_view, spec_of
from sagas.melt import MeltData
from sagas.mint import MintData
from sagas.receive import ReceiveData
from sagas.recovery import RULES
from sagas.send import SendData


def test_the_catalog_registers_the_spec_of_every_saga_it_lists() -> None:
    assert set(SPECS) == set(KINDS) == {"mint", "melt", "send", "receive"}
    assert all(spec_of(saga.KIND).kind == saga.KIND for saga in SAGAS)


def test_every_saga_in_the_catalog_has_recovery_rules() -> None:
    assert {rule.kind for rule in RULES} == set(KINDS)


def test_every_public_field_is_a_key_of_its_sagas_data_record() -> None:
    # mypy checks the keys the sagas read and write; these strings it cannot.
    records = {"mint": MintData, "melt": MeltData, "send": SendData, "receive": ReceiveData}
    for kind, record in records.items():
        assert set(spec_of(kind).public_data) <= set(record.__annotations__), kind


def test_every_public_column_is_a_column_of_an_operation() -> None:
    for kind in KINDS:
        assert set(spec_of(kind).public_columns) <= set(Operation.__table__.columns.keys()), kind


def view_of(kind: str, **columns: str) -> dict:
    return operation_view(
        Operation(kind=kind, wallet="w", state="finalized", mint_url="m", data={}, **columns)
    )


@pytest.mark.parametrize("kind", ["mint", "melt"])
def test_a_mint_or_melt_shows_its_method_and_quote_id(kind: str) -> None:
    view = view_of(kind, method="bolt11", quote_id="q-1")

    assert (view["method"], view["quote_id"]) == ("bolt11", "q-1")
    assert "token_hash" not in view


def test_a_receive_shows_its_token_hash_and_no_method_or_quote_id() -> None:
    view = view_of("receive", token_hash="ab" * 32)

    assert view["token_hash"] == "ab" * 32
    assert not {"method", "quote_id"} & set(view)


def test_a_send_shows_no_method_quote_id_or_token_hash() -> None:
    assert not {"method", "quote_id", "token_hash"} & set(view_of("send"))


def test_a_kind_nobody_registered_is_a_wiring_error_not_an_operation_without_fields() -> None:
    with pytest.raises(LookupError, match="'refund' is not registered"):
        spec_of("refund")
