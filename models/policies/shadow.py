"""Shadow policies: what each would have chosen for a decision, without serving it.

Examples
--------
>>> from data_contracts import TipCandidate
>>> from models.policies.baseline import RuleBased, UniformRandom
>>> cands = [TipCandidate(candidate_id=str(i), content="x", kind="todoist_task", source="todoist",
...                       features={"priority": float(i)}) for i in (1, 2, 3)]
>>> picks = shadow_picks([RuleBased(version="1"), UniformRandom(seed=0)], {}, cands)
>>> [(p.policy, p.chosen_id, round(p.propensity, 3)) for p in picks]
[('rule_based', '3', 1.0), ('uniform_random', '3', 0.333)]
"""

from __future__ import annotations

from collections.abc import Sequence

from data_contracts.decisions import ShadowPick
from models.policies.base import Candidate, Context, Policy


def shadow_picks(shadows: Sequence[Policy], x: Context, candidates: Sequence[Candidate]) -> list[ShadowPick]:
    """One :class:`ShadowPick` per shadow policy: its choice and that choice's probability.

    Each shadow draws from its own random generator, so shadows never change the served
    policy's choices. Shadows do not learn here; the learner decides what they learn from.
    """
    picks = []
    for policy in shadows:
        choice = policy.choose(x, candidates)
        picks.append(
            ShadowPick(
                policy=policy.name,
                policy_version=policy.version,
                chosen_id=choice.chosen_id,
                propensity=choice.propensity,
            )
        )
    return picks
