"""The tip_scores lines written from their parts are, byte for byte, the contract's own
serialization of the same rows (and so read back as the same rows)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from data_contracts import TipCandidate, TipScore
from serving.tip_score_lines import tip_score_lines

texts = st.text(min_size=1, max_size=12)
floats = st.floats(allow_nan=True, allow_infinity=True)
candidate = st.builds(
    TipCandidate,
    candidate_id=texts,
    content=texts,
    kind=st.sampled_from(["todoist_task", "llm_tip"]),
    source=texts,
    task_id=st.none() | texts,
    llm_model=st.none() | texts,
    prompt_version=st.none() | texts,
    features=st.dictionaries(texts, floats, max_size=6),
)
finite = st.floats(allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0.0, max_value=1.0)
Policies = list[tuple[str, str, list[float], list[float], float]]


def expected(decision_id: UUID, user_id: str, at: datetime, cands: list[TipCandidate], policies: Policies) -> bytes:
    return b"".join(
        TipScore(
            decision_id=decision_id,
            user_id=user_id,
            decided_at=at,
            candidate_id=c.candidate_id,
            kind=c.kind,
            policy=name,
            policy_version=version,
            score=scores[i],
            probability=probs[i],
            features=c.features,
            latency_ms=latency,
            prompt_version=c.prompt_version,
            llm_model=c.llm_model,
        )
        .model_dump_json()
        .encode()
        + b"\n"
        for name, version, scores, probs, latency in policies
        for i, c in enumerate(cands)
    )


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    decision_id=st.uuids(),
    user_id=texts,
    at=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))])),
    cands=st.lists(candidate, min_size=1, max_size=5, unique_by=lambda c: c.candidate_id),
    names=st.lists(st.tuples(texts, texts, st.floats(min_value=0.0, max_value=1e6)), min_size=1, max_size=3),
    data=st.data(),
)
def test_lines_equal_the_contracts_serialization(
    decision_id: UUID,
    user_id: str,
    at: datetime,
    cands: list[TipCandidate],
    names: list[tuple[str, str, float]],
    data: st.DataObject,
) -> None:
    n = len(cands)
    policies: Policies = [
        (
            name,
            version,
            data.draw(st.lists(finite, min_size=n, max_size=n)),
            data.draw(st.lists(unit, min_size=n, max_size=n)),
            latency,
        )
        for name, version, latency in names
    ]
    got = tip_score_lines(decision_id=decision_id, user_id=user_id, decided_at=at, candidates=cands, policies=policies)
    assert got == expected(decision_id, user_id, at, cands, policies)


def test_numpy_scores_and_odd_floats_serialize_as_the_contract_does() -> None:
    c = TipCandidate(
        candidate_id='task:"1",\n',
        content="x",
        kind="todoist_task",
        source="todoist",
        features={"nan": math.nan, "inf": -math.inf, "tiny": 5e-324, "big": 1e300, "%s": 1.0},
    )
    at = datetime(2026, 5, 1, 9, 30, 0, 123456, tzinfo=UTC)
    scores: list[float] = [np.float64(0.1) + np.float64(0.2)]
    policies: Policies = [
        ("softmax", "tip-policy/1", scores, [float(np.float64(1.0))], 0.0),
        ("rule_based", "1", [1e16], [1e-7], 3.5),
    ]
    got = tip_score_lines(decision_id=UUID(int=7), user_id="u", decided_at=at, candidates=[c], policies=policies)
    assert got == expected(UUID(int=7), "u", at, [c], policies)
    assert got.count(b"\n") == 2  # the candidate id's newline is escaped
