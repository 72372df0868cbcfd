"""One explicit list of sagas (sagas/catalog.py): what it lists is what is registered."""

from __future__ import annotations

import pytest

from sagas.catalog import KINDS, SAGAS
from sagas.engine import SPECS, spec_of
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


def test_a_kind_nobody_registered_is_a_wiring_error_not_an_operation_without_fields() -> None:
    with pytest.raises(LookupError, match="'refund' is not registered"):
        spec_of("refund")
