"""The bundled synthetic data as the files a user brings: what `arm-jax data synthetic` writes.

    train.npz, test.npz   examples files (`arm_jax.data.examples_file`): requests, labels
    events.npz            every user's log, for `arm-jax store load` (user_id, item, action, ts)
    catalog.npz           the items' side ids, for `--catalog`

Training on these through a store reproduces `arm-jax train` on the in-memory world
bit for bit (tests/arm_jax/train/test_file_data.py), so they double as a worked example of
the format and as a check of a user's own pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arm_jax.data.examples_file import save_examples
from arm_jax.data.synthetic import Examples, SyntheticWorld


def write_synthetic_files(world: SyntheticWorld, train: Examples, test: Examples,
                          out_dir: str | Path) -> dict[str, Path]:
    """Write the four files into `out_dir` (created); {name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    events = out / "events.npz"
    np.savez(events, user_id=world.log_user, item=world.log_item, action=world.log_action,
             ts=world.log_ts)
    return {"train": save_examples(train, out / "train.npz"),
            "test": save_examples(test, out / "test.npz"),
            "events": events,
            "catalog": world.catalog().save(out / "catalog.npz")}


__all__ = ["write_synthetic_files"]
