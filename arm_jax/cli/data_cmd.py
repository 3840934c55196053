"""`arm-jax data synthetic|check`: examples files for `arm-jax train --examples`.

Logic lives in arm_jax/data (examples_file.py, synthetic_files.py); this file parses
arguments and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="examples files: write the synthetic data as files, "
                                    "check your own")
    dsub = d.add_subparsers(dest="data_action", metavar="ACTION", required=True)

    sy = dsub.add_parser("synthetic", help="write a tier's synthetic data as train/test "
                                           "examples, an events file and a catalogue")
    sy.add_argument("--out", required=True, help="directory to write into (created; one "
                                                 "that exists must be empty)")
    sy.add_argument("--tier", default="small", help="whose train.* settings size the data")
    sy.add_argument("--format", default="npz", choices=("npz", "parquet"), dest="fmt",
                    help="file format of the examples and events files (parquet needs "
                         "pyarrow: pip install 'arm-jax[parquet]')")
    sy.add_argument("overrides", nargs="*", metavar="key=value",
                    help="config overrides, e.g. train.train_requests=2000")
    sy.set_defaults(func=_synthetic)

    ch = dsub.add_parser("check", help="check an examples file against a tier's features "
                                       "config (what `train --examples` checks first)")
    ch.add_argument("file", help="examples file (.npz or .parquet)")
    ch.add_argument("--tier", default="small", help="tier whose features config to check "
                                                    "against")
    ch.add_argument("overrides", nargs="*", metavar="key=value",
                    help="config overrides, e.g. features.tasks=[like]")
    ch.set_defaults(func=_check)


def _synthetic(args: argparse.Namespace) -> int:
    from arm_jax.config import load_tier
    from arm_jax.data.outputs import check_output_dir
    from arm_jax.data.synthetic_files import write_synthetic_files
    from arm_jax.train.loop import make_synthetic_data

    _check_empty(check_output_dir(args.out, "--out"))    # before the data is generated
    tier = load_tier(args.tier, args.overrides)
    data = make_synthetic_data(tier)
    paths = write_synthetic_files(data.world, data.train, data.test, args.out, args.fmt)
    print(f"{len(data.train)} training and {len(data.test)} held-out requests, "
          f"{data.world.log_ts.size} events, {data.world.catalog().num_items} items:")
    for name, path in paths.items():
        print(f"  {name:<8} {path}")
    store = f"lmdb://{paths['events'].parent.resolve() / 'logs'}"
    print("next:\n"
          f"  arm-jax store load {store} {paths['events']}\n"
          f"  arm-jax train --tier {tier.name} --examples {paths['train']} "
          f"--eval-examples {paths['test']} --history-store {store} "
          f"--catalog {paths['catalog']}")
    return 0


def _check_empty(out: Path) -> None:
    """ValueError naming `out` and what it holds unless it is missing or empty: a second
    run would replace the first's files, and its `next:` store load would add a second
    world's events to the first's logs in OUT/logs, mixed without a word."""
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries:
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more"
                                          if len(entries) > 4 else "")
        raise ValueError(f"--out {out}: not empty, holds {shown} (a previous run?); pick "
                         "a new directory or remove it")


def _check(args: argparse.Namespace) -> int:
    import numpy as np

    from arm_jax.config import load_tier
    from arm_jax.data.examples_file import load_examples

    tier = load_tier(args.tier, args.overrides)
    ex = load_examples(args.file, tier.features)
    real = int(ex.cand_mask.sum())
    rates = ", ".join(f"{t} {float(ex.labels[..., k][ex.cand_mask].mean()):.4f}"
                      for k, t in enumerate(ex.tasks)) if real else "n/a"
    print(f"{args.file}: ok for tier {tier.name}: {len(ex)} requests of up to "
          f"{ex.cand_mask.shape[1]} candidates ({real} real), {np.unique(ex.user_id).size} "
          f"users, ts {int(ex.ts.min())}..{int(ex.ts.max())}; label rates: {rates}")
    return 0
