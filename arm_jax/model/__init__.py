"""The Flax NNX ranker: one model, two execution modes (`shared`, `per_pair`)."""

from arm_jax.model.ranker import Ranker, RequestState, per_pair_batch

__all__ = ["Ranker", "RequestState", "per_pair_batch"]
