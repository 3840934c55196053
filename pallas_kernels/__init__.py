"""Pallas kernels for arm-jax's hot spots, each beside its plain-jnp reference and dispatcher.

Stand-alone: imports neither `arm_jax` nor `serving`.

* `target_attention`: fused request-to-candidate target attention (K/V read once per
  block of candidates, never broadcast N times).
* `topk`: O(N) top-K selection (radix select) with NaN/tie/k > N semantics.
"""

from pallas_kernels.dispatch import KernelError
from pallas_kernels.target_attention import TargetAttentionBlocks, target_attention
from pallas_kernels.topk import TopKBlocks, topk

__all__ = ["KernelError", "TargetAttentionBlocks", "TopKBlocks", "target_attention", "topk"]
