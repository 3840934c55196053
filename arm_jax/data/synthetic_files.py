"""The bundled synthetic data as the files a user brings: what `arm-jax data synthetic` writes.

    train.npz, test.npz   examples files (`arm_jax.data.examples_file`): requests, labels
    events.npz            every user's log, for `arm-jax store load` (user_id, item, action, ts)
    catalog.npz           the items' side ids, for `--catalog`

With `fmt="parquet"` the examples and events files are .parquet instead (same contents).

Training on these through a store reproduces `arm-jax train` on the in-memory world
bit for bit (tests/arm_jax/train/test_file_data.py), so they double as a worked example of
the format and as a check of a user's own pipeline.
"""

from __future__ import annotations

from pathlib import Path


from arm_jax.data.examples_file import save_examples
from arm_jax.data.outputs import check_output_dir
from arm_jax.data.synthetic import Examples, SyntheticWorld
from arm_jax.store.events_file import write_events_file


FORMATS = ("npz", "parquet")


def write_synthetic_files(world: SyntheticWorld, train: Examples, test: Examples,
                          out_dir: str | Path, fmt: str = "npz") -> dict[str, Path]:
    """Write the four files into `out_dir` (created); {name: path}. Interrupted or failed
    part way (Ctrl-C), it removes the files it wrote: the set is only whole together, and
    `data synthetic` refuses a directory that holds files, so a rerun was refused."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r}: must be one of {list(FORMATS)}")
    out = check_output_dir(out_dir, "out_dir")
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    try:
        written["events"] = write_events_file(out / f"events.{fmt}", {
            "user_id": world.log_user, "item": world.log_item, "action": world.log_action,
            "ts": world.log_ts})
        written["train"] = save_examples(train, out / f"train.{fmt}")
        written["test"] = save_examples(test, out / f"test.{fmt}")
        written["catalog"] = world.catalog().save(out / "catalog.npz")
    except BaseException:
        for path in written.values():
            path.unlink(missing_ok=True)
        raise
    return {name: written[name] for name in ("train", "test", "events", "catalog")}


__all__ = ["FORMATS", "write_synthetic_files"]
