"""Choosing an implementation: the Pallas kernel where it runs natively, XLA elsewhere.

Every public op in this package takes `impl` and `interpret`:

* `impl="auto"`   -> `jax.lax.platform_dependent`: the Pallas (Triton) kernel when the
  function is lowered for CUDA, the op's XLA path for every other platform. Because the
  choice is made at lowering time, a function traced on this CPU machine and lowered
  with `lowering_platforms=("cuda",)` still gets the kernel.
* `impl="pallas"` -> always the kernel; on a machine without a GPU it runs in Pallas
  interpret mode unless `interpret=False` is given (e.g. to lower for CUDA).
* `impl="xla"`    -> always the XLA path.
Ops may add their own (top-K adds `"radix"`, the plain-jnp radix select).
"""

from __future__ import annotations

from typing import Callable, TypeVar

import jax

T = TypeVar("T")

GPU_PLATFORMS = ("cuda",)  # the Triton lowering targets NVIDIA GPUs


class KernelError(ValueError):
    """Bad arguments to a kernel op (names the argument and the allowed values)."""


def check_impl(impl: str, allowed: tuple[str, ...]) -> str:
    """Validate an `impl=` argument against the op's allowed names."""
    if impl not in allowed:
        raise KernelError(f"impl={impl!r}: expected one of {', '.join(allowed)}")
    return impl


def default_interpret(interpret: bool | None) -> bool:
    """`interpret=None` means: interpret exactly when the default backend is not a GPU."""
    if interpret is not None:
        return bool(interpret)
    return jax.default_backend() != "gpu"


def on_platform(args: tuple, *, gpu: Callable[..., T], default: Callable[..., T]) -> T:
    """`gpu(*args)` when lowered for CUDA, `default(*args)` elsewhere (decided at lowering)."""
    return jax.lax.platform_dependent(*args, cuda=gpu, default=default)


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (>= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()
