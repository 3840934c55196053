"""A checkpoint whose stored shapes differ from its config is refused with one clear error."""

import json

import pytest
from flax import nnx


def test_shape_mismatch_names_the_parameter(tiny_overrides, tmp_path):
    from arm_jax.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from arm_jax.config import load_tier
    from arm_jax.model import Ranker

    tier = load_tier("small", list(tiny_overrides))
    params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)))[1]
    d = save_checkpoint(tmp_path / "ck", kind="ranker", tier=tier, params=params)
    assert load_checkpoint(d)[0] == "ranker"
    cfg = json.loads((d / "config.json").read_text())
    cfg["tier"]["model"]["head_hidden"] = 24          # the stored head has 16 units
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"head_in/bias.*\[16\].*expects \[24\]"):
        load_checkpoint(d)


def test_undefined_metrics_are_written_as_null(tiny_overrides, tmp_path):
    """An AUC over one class is nan; json.dumps wrote it as a bare NaN, which strict
    parsers (JavaScript's JSON.parse, serde_json) refuse."""
    from arm_jax.checkpoint import read_metrics, save_checkpoint
    from arm_jax.config import load_tier
    from arm_jax.model import Ranker

    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    tier = load_tier("small", list(tiny_overrides))
    params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)))[1]
    d = save_checkpoint(tmp_path / "ck", kind="ranker", tier=tier, params=params,
                        metrics={"short_history": {"click": {"auc": float("nan"),
                                                             "logloss": 0.5}}})
    written = json.loads((d / "metrics.json").read_text(), parse_constant=refuse)
    assert written == read_metrics(d) == {"short_history": {"click": {"auc": None,
                                                                      "logloss": 0.5}}}


def test_a_failed_save_never_pairs_a_new_config_with_old_params(tiny_overrides, tmp_path,
                                                                monkeypatch):
    """save_checkpoint wrote config.json before the params: a save that failed (full disk,
    Ctrl-C) over an earlier checkpoint of the same shapes left the new config beside the old
    weights, and load_checkpoint returned them as if trained with it."""
    import orbax.checkpoint as ocp

    from arm_jax.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from arm_jax.config import load_tier
    from arm_jax.model import Ranker

    old = load_tier("small", [*tiny_overrides, "model.activation=relu"])
    params = nnx.split(Ranker(old.model, old.features, rngs=nnx.Rngs(0)))[1]
    d = save_checkpoint(tmp_path / "ck", kind="ranker", tier=old, params=params,
                        metrics={"auc": 0.7})
    new = load_tier("small", [*tiny_overrides, "model.activation=gelu"])

    def disk_full(*a, **k):
        raise OSError("No space left on device")

    with monkeypatch.context() as m:
        m.setattr(ocp.StandardCheckpointer, "save", disk_full)
        with pytest.raises(OSError):
            save_checkpoint(d, kind="ranker", tier=new, params=params, metrics={"auc": 0.1})
    with pytest.raises(CheckpointError, match="config.json missing"):
        load_checkpoint(d)
    assert not (d / "metrics.json").exists()
    save_checkpoint(d, kind="ranker", tier=new, params=params)     # a retry completes it
    assert load_checkpoint(d)[1].model.activation == "gelu"


def test_save_refuses_a_directory_that_is_not_a_checkpoint(tiny_overrides, tmp_path):
    """The docstring promised it; the code deleted a foreign config.json / metrics.json and
    wrote params/ beside another program's files."""
    from arm_jax.checkpoint import CheckpointError, save_checkpoint
    from arm_jax.config import load_tier
    from arm_jax.model import Ranker

    tier = load_tier("small", list(tiny_overrides))
    params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)))[1]
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.parquet").write_bytes(b"x")
    (data / "metrics.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"data: refusing .*no config.json, no params/; "
                                              r"holds events.parquet"):
        save_checkpoint(data, kind="ranker", tier=tier, params=params)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="config.json is not an arm-jax checkpoint's"):
        save_checkpoint(hf, kind="ranker", tier=tier, params=params)
    assert sorted(p.name for p in data.iterdir()) == ["events.parquet", "metrics.json"]
    assert (hf / "config.json").read_text() == '{"model_type": "bert"}'
    assert sorted(p.name for p in hf.iterdir()) == ["config.json"]
    # what arm-jax itself leaves is written over: a checkpoint, a training run's state
    run = tmp_path / "run"
    (run / "train_state").mkdir(parents=True)
    save_checkpoint(run, kind="ranker", tier=tier, params=params)
    save_checkpoint(run, kind="ranker", tier=tier, params=params)
    assert (run / "config.json").exists() and (run / "train_state").is_dir()
