"""A decision's ``tip_scores`` rows as event-log lines, written straight from their parts.

Every rank logs one :class:`data_contracts.TipScore` row per candidate and policy (60 for 30
candidates and one shadow). Building 60 models and dumping each was a quarter of a rank's CPU,
most of it spent serializing each candidate's features once per policy. Here each part is
serialized once, with pydantic's own serializer (:func:`pydantic_core.to_json`, non-finite floats
as ``null`` as the model does), and the rows are joined from the parts in the contract's field
order: the bytes are those of ``TipScore(...).model_dump_json()`` (``tests/serving/
test_tip_score_lines.py`` checks it, edge cases included). The parts come from validated
models (the request, the candidates, the policies), so the rows need no second validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from uuid import UUID

from pydantic_core import to_json

from data_contracts import TipCandidate, TipScore

FIELDS = (
    "schema_version",
    "decision_id",
    "user_id",
    "decided_at",
    "candidate_id",
    "kind",
    "policy",
    "policy_version",
    "score",
    "probability",
    "features",
    "latency_ms",
    "prompt_version",
    "llm_model",
)
if tuple(TipScore.model_fields) != FIELDS:  # the contract moved: this module must move with it
    raise ImportError(f"TipScore's fields are {tuple(TipScore.model_fields)}, not {FIELDS}")


def _json(value: object) -> bytes:
    return to_json(value, inf_nan_mode="null")


@lru_cache(maxsize=65_536)
def _string(value: str | None) -> bytes:
    """A string's (or None's) JSON, remembered: candidate ids, kinds and versions recur."""
    return _json(value)


def _floats(values: Sequence[float]) -> list[bytes]:
    """Each float serialized, in one call (a float's JSON never holds a comma)."""
    return _json(list(values))[1:-1].split(b",") if values else []


def tip_score_lines(
    *,
    decision_id: UUID,
    user_id: str,
    decided_at: datetime,
    candidates: Sequence[TipCandidate],
    policies: Sequence[tuple[str, str, Sequence[float], Sequence[float], float]],
) -> bytes:
    """The lines (``\\n``-terminated JSON) of one row per policy and candidate, policy by policy.

    ``policies`` holds ``(name, version, scores, probabilities, latency_ms)``, one score and one
    probability per candidate, already what the contract accepts (finite scores, probabilities in
    [0, 1]).

    Examples
    --------
    >>> from datetime import UTC
    >>> c = TipCandidate(candidate_id="task:1", content="Call mum", kind="todoist_task", source="todoist",
    ...                  features={"priority": 4.0})
    >>> line = tip_score_lines(decision_id=UUID(int=1), user_id="u1", decided_at=datetime(2026, 5, 1, tzinfo=UTC),
    ...                        candidates=[c], policies=[("rule_based", "1", [0.5], [1.0], 0.25)])
    >>> TipScore.model_validate_json(line).features
    {'priority': 4.0}
    >>> line.count(b"\\n")
    1
    """
    head = (
        b'{"schema_version":1,"decision_id":'
        + _json(decision_id)
        + b',"user_id":'
        + _json(user_id)
        + b',"decided_at":'
        + _json(decided_at)
        + b',"candidate_id":'
    )
    ids = [_string(c.candidate_id) + b',"kind":' + _string(c.kind.value) for c in candidates]
    features = [b',"features":' + _json(c.features) + b',"latency_ms":' for c in candidates]
    tails = [
        b',"prompt_version":' + _string(c.prompt_version) + b',"llm_model":' + _string(c.llm_model) + b"}\n"
        for c in candidates
    ]
    out: list[bytes] = []
    for name, version, scores, probabilities, latency_ms in policies:
        policy = b',"policy":' + _string(name) + b',"policy_version":' + _string(version) + b',"score":'
        latency = _json(latency_ms)
        for i, (s, p) in enumerate(zip(_floats(scores), _floats(probabilities), strict=True)):
            out += (head, ids[i], policy, s, b',"probability":', p, features[i], latency, tails[i])
    return b"".join(out)
