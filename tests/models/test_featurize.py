"""The featurizer's transforms, applied by column group, equal each feature's own
:class:`models.featurize.Transform` bit for bit, and a featurizer pickled without the groups
scores alike."""

from __future__ import annotations

import pickle

import numpy as np

from models.featurize import CLIP, Featurizer


def one_by_one(f: Featurizer, values: np.ndarray, plan: tuple) -> np.ndarray:
    out = values.copy()
    with np.errstate(over="ignore", invalid="ignore"):
        for i, t in plan[1]:
            out[..., i] = t.array(out[..., i])
    return np.clip(out, -CLIP, CLIP)


def test_grouped_transforms_equal_the_per_feature_ones_bit_for_bit() -> None:
    f = Featurizer.for_contracts()
    rng = np.random.default_rng(7)
    for plan, width in ((f._ctx, len(f.context_fields)), (f._cand, len(f.candidate_fields))):
        values = rng.normal(0, 300, size=(40, width)) * rng.choice([1e-9, 1.0, 1e300], size=(40, width))
        values[0, :] = [np.inf, -np.inf, -0.0, 1e308] * (width // 4) + [0.5] * (width % 4)
        expected = one_by_one(f, values, plan)
        assert np.array_equal(f._transform(values.copy(), plan), expected)
        assert np.array_equal(f._transform(values[1].copy(), plan), expected[1])  # one vector alike


def test_a_featurizer_pickled_before_the_groups_existed_scores_alike() -> None:
    f = Featurizer.for_contracts()
    ctx = {"hour_of_day": 9.0, "reactions_7d": 12.0}
    cands = [{"priority": 4.0, "age_days": 3.0}, {"priority": 1.0, "hours_until_due": -5.0}]
    fresh = f.candidate_matrix(cands), f.context_vector(ctx)
    state = f.__getstate__()
    assert not any(k.startswith("_grouped_") for k in state)  # the groups are never pickled
    old = Featurizer.__new__(Featurizer)
    old.__dict__.update(state)  # what unpickling an older featurizer leaves
    assert np.array_equal(old.candidate_matrix(cands), fresh[0]) and np.array_equal(old.context_vector(ctx), fresh[1])
    assert np.array_equal(pickle.loads(pickle.dumps(f)).candidate_matrix(cands), fresh[0])
