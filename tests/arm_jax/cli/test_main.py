"""The command line's parsing: overrides anywhere after the command, nothing else stray."""

from __future__ import annotations

import pytest

from arm_jax.cli.main import parse_args


def test_overrides_may_follow_options():
    args = parse_args(["train", "model.d_model=64", "--steps", "5", "train.seed=1",
                       "--tier", "medium", "train.batch_size=8"])
    assert args.overrides == ["model.d_model=64", "train.seed=1", "train.batch_size=8"]
    assert (args.steps, args.tier) == (5, "medium")
    args = parse_args(["data", "check", "d1/train.npz", "--tier", "small", "train.seed=1"])
    assert args.overrides == ["train.seed=1"]


def test_overrides_may_come_before_a_positional():
    """argparse gives the first word to the positional; it goes back to the overrides."""
    args = parse_args(["data", "check", "features.tasks=[like]", "a.npz", "train.seed=1"])
    assert args.file == "a.npz" and args.overrides == ["features.tasks=[like]", "train.seed=1"]
    args = parse_args(["serve", "--fake", "small", "model.d_model=64"])    # optional one
    assert args.artifacts is None and args.overrides == ["model.d_model=64"]
    args = parse_args(["serve", "art=1", "--fake", "small"])
    assert args.artifacts is None and args.overrides == ["art=1"]


@pytest.mark.parametrize("argv, stray", [
    (["train", "model.d_model=64", "--steps", "5", "oops"], "oops"),
    (["train", "--steps", "5", "--stepz=6"], "--stepz=6"),
    (["inspect", "artifacts", "model.d_model=64"], "model.d_model=64"),   # takes none
])
def test_anything_else_left_over_is_still_an_error(argv, stray, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    assert f"unrecognized arguments: {stray}" in capsys.readouterr().err
