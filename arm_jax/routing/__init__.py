"""Adaptive routing: pick a tier per request from request features, before any tier runs."""

from arm_jax.routing.features import feature_names, request_features
from arm_jax.routing.policies import (
    FixedPolicy, LearnedPolicy, LoadAwarePolicy, RoutingError, RulesPolicy, TierCost,
    budget_fraction_to_large, load_policy,
)

__all__ = [
    "FixedPolicy", "LearnedPolicy", "LoadAwarePolicy", "RoutingError", "RulesPolicy",
    "TierCost", "budget_fraction_to_large", "feature_names", "load_policy", "request_features",
]
