"""Tip policies: River-shaped scorers of (context, candidate) pairs that explore with exact
probabilities, a rule-based baseline, and shadow picks."""

from models.policies.base import (
    Candidate,
    Choice,
    Context,
    DuplicateCandidate,
    InvalidDistribution,
    InvalidPropensity,
    InvalidReward,
    NoCandidates,
    NonFiniteScore,
    Policy,
    PolicyFormatError,
    PolicyInputError,
    PolicyNumericError,
    TooManyCandidates,
    dumps,
    loads,
)
from models.policies.baseline import RuleBased, UniformRandom
from models.policies.explore import BootstrapThompson, EpsilonGreedy, ScoringPolicy, Softmax, default_model
from models.policies.linear import AdaptiveLinear, BlockRidge, LinearScorer
from models.policies.shadow import shadow_picks

__all__ = [
    "AdaptiveLinear",
    "BlockRidge",
    "BootstrapThompson",
    "Candidate",
    "Choice",
    "Context",
    "DuplicateCandidate",
    "EpsilonGreedy",
    "InvalidDistribution",
    "InvalidPropensity",
    "InvalidReward",
    "LinearScorer",
    "NoCandidates",
    "NonFiniteScore",
    "Policy",
    "PolicyFormatError",
    "PolicyInputError",
    "PolicyNumericError",
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
