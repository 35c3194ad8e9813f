"""Tip policies: River-shaped scorers of (context, candidate) pairs that explore with exact
probabilities, a rule-based baseline, and shadow picks."""

from models.policies.base import (
    Candidate,
    Choice,
    Context,
    DuplicateCandidate,
    InvalidReward,
    NoCandidates,
    Policy,
    PolicyFormatError,
    PolicyInputError,
    TooManyCandidates,
    dumps,
    loads,
)
from models.policies.baseline import RuleBased, UniformRandom
from models.policies.explore import BootstrapThompson, EpsilonGreedy, ScoringPolicy, Softmax, default_model
from models.policies.shadow import shadow_picks

__all__ = [
    "BootstrapThompson",
    "Candidate",
    "Choice",
    "Context",
    "DuplicateCandidate",
    "EpsilonGreedy",
    "InvalidReward",
    "NoCandidates",
    "Policy",
    "PolicyFormatError",
    "PolicyInputError",
    "RuleBased",
    "ScoringPolicy",
    "Softmax",
    "TooManyCandidates",
    "UniformRandom",
    "default_model",
    "dumps",
    "loads",
    "shadow_picks",
]
