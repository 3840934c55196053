"""Test-wide setup: 8 virtual CPU devices (set before jax is imported), tiny tier configs."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

# Tiny versions of the real tiers: same code paths, sizes that compile in seconds.
TINY = (
    "model.d_model=16", "model.history_len=12", "model.encoder_heads=2", "model.target_heads=2",
    "model.mlp_hidden=32", "model.head_hidden=16", "model.fm_tokens=4", "model.lcb_tokens=4",
    "model.fm_rank=4", "model.summary_tokens=2",
    "features.req_sparse_fields=3", "features.req_dense_features=4",
    "features.cand_sparse_fields=3", "features.cand_dense_features=2",
    "features.sparse_hash_size=97", "features.item_hash_size=101",
)


@pytest.fixture(scope="session")
def tiny_overrides() -> tuple[str, ...]:
    return TINY


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server on a free 127.0.0.1 port for the whole session (skipped, with
    the command that installs it, when the binary is absent). Tests keep to their own key
    prefixes, or clear what they write."""
    from arm_jax.store.redis_server import RedisServer, find_redis_server

    if find_redis_server() is None:
        pytest.skip("redis-server binary not found: install it with "
                    "`bash scripts/setup.sh --test` to run the Redis tests")
    with RedisServer() as srv:
        yield srv.url


@pytest.fixture(autouse=True)
def _serving_logger_restored():
    """`arm-jax serve` run in-process (its start-up mocked) configures the `serving` logger
    for the process; put it back so later tests' caplog still sees its records."""
    import logging

    logger = logging.getLogger("serving")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Free jax's caches and freeze what is left before an xdist worker reports it is done.

    After the last test, pytest runs five full garbage collections (to surface late
    unraisable exceptions); on a worker's heap, with jax's GC callback on each, they could
    take longer than the 5 s execnet waits before it sends the worker a SIGINT, which was
    printed as a `KeyboardInterrupt` in `_xla_gc_callback` at the end of a passing run.
    Here the work happens before xdist's `workerfinished` (its hook wraps this one), and
    the frozen heap makes pytest's collections scan only what is created after it."""
    import gc
    import sys

    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()
    gc.freeze()
