"""The contracts: frozen, versioned, strict, and the Arrow / JSON Schema forms derived from them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from pydantic import ValidationError

from data_contracts import CONTRACTS, Decision, TipCandidate
from data_contracts.arrow import arrow_schema, from_table, to_table
from data_contracts.export import rendered, stale, write

T0 = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)


def candidate(cid: str, **features: float) -> TipCandidate:
    return TipCandidate(candidate_id=cid, content=f"do {cid}", kind="todoist_task", source="todoist", features=features)


def decision(**changes: object) -> Decision:
    base: dict[str, object] = {
        "decision_id": UUID(int=1),
        "user_id": "u1",
        "decided_at": T0,
        "candidates": [candidate("a", priority=4.0), candidate("b")],
        "ranked_ids": ["b", "a"],
        "chosen_id": "b",
        "propensity": 0.9,
        "policy": "baseline",
        "policy_version": "1",
        "features": {"hour": 9.0},
    }
    return Decision.model_validate({**base, **changes})


@pytest.mark.parametrize("model", CONTRACTS, ids=lambda m: m.__name__)
def test_every_contract_is_frozen_strict_versioned_and_keyed(model: type) -> None:
    assert model.model_config["frozen"] is True
    assert model.model_config["extra"] == "forbid"
    assert model.model_fields["schema_version"].default == 1
    assert model.key_fields and set(model.key_fields) <= set(model.model_fields)
    assert model.partition_field in model.model_fields
    assert arrow_schema(model).names == list(model.model_fields)


def test_a_decision_round_trips_through_arrow() -> None:
    d = decision()
    assert from_table(Decision, to_table(Decision, [d])) == [d]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"propensity": 0.0}, "greater than 0"),
        ({"chosen_id": "zzz"}, "not among the candidates"),
        ({"ranked_ids": ["a"]}, "permutation"),
        ({"candidates": []}, "at least 1"),
        ({"decided_at": datetime(2026, 4, 1)}, "timezone"),
    ],
)
def test_a_decision_that_cannot_be_evaluated_off_policy_is_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        decision(**changes)


def test_json_schema_files_are_current() -> None:
    assert stale() == [], "run `make contracts`"


def test_a_stale_schema_file_is_detected(tmp_path: Path) -> None:
    write(tmp_path)
    assert stale(tmp_path) == []
    name = next(iter(rendered()))
    (tmp_path / name).write_text("{}\n")
    (tmp_path / "Gone.json").write_text("{}\n")
    assert stale(tmp_path) == sorted([name, "Gone.json"])
