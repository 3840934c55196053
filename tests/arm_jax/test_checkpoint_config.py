"""A checkpoint whose stored shapes differ from its config is refused with one clear error."""

import json
import os

import numpy as np
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
    weights, and load_checkpoint returned them as if trained with it. Now the new params
    are written beside the old ones first: a failed write leaves the earlier checkpoint
    whole (its own config, params and metrics)."""
    import orbax.checkpoint as ocp

    from arm_jax.checkpoint import load_checkpoint, read_metrics, save_checkpoint
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
    assert load_checkpoint(d)[1].model.activation == "relu"         # the earlier one, whole
    assert read_metrics(d) == {"auc": 0.7}
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


def test_save_target_under_a_file_is_refused_naming_it(tmp_path):
    """check_save_target handled the directory being a file but not an ancestor: `train
    --out afile/sub` trained the whole run, then died at the save ('Not a directory')."""
    from arm_jax.checkpoint import CheckpointError, check_save_target

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(CheckpointError, match=f"checkpoint directory {afile / 'sub'}: "
                                              f"{afile} is a file, not a directory"):
        check_save_target(afile / "sub")
    with pytest.raises(CheckpointError, match="--out .*afile: exists and is not a directory"):
        check_save_target(afile, "--out")
    assert check_save_target(tmp_path / "new" / "run") == (tmp_path / "new" / "run").resolve()


@pytest.mark.parametrize("text, got", [("[]", "list"), ('"hello"', "str"), ("3", "int")])
def test_a_config_that_is_no_json_object_is_a_checkpoint_error(tmp_path, text, got):
    """`eval` on a config.json holding a list or a string died in a TypeError traceback
    ('list indices must be integers or slices, not str')."""
    from arm_jax.checkpoint import CheckpointError, read_config

    (tmp_path / "config.json").write_text(text)
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'config.json'}: not a checkpoint "
                                              rf"config \(expected a JSON object with 'kind' "
                                              rf"and 'tier', got {got}\)"):
        read_config(tmp_path)


def test_eval_of_a_config_that_is_a_list_is_one_line(tmp_path, capsys):
    from arm_jax.cli.main import main

    (tmp_path / "config.json").write_text("[]")
    assert main(["eval", "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"arm-jax: error: {tmp_path / 'config.json'}: not a checkpoint config")
    assert "\n" not in err


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_params_changed_since_the_save_are_refused_before_restoring(tiny_overrides, tmp_path,
                                                                    damage):
    """orbax restored a bit-flipped params/ file as it was: eval ran and export compiled
    weights that were never trained. The save records every file's sha256 in config.json."""
    from arm_jax.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from arm_jax.config import load_tier
    from arm_jax.model import Ranker

    tier = load_tier("small", list(tiny_overrides))
    params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)))[1]
    d = save_checkpoint(tmp_path / "ck", kind="ranker", tier=tier, params=params)
    load_checkpoint(d)
    victim = max((p for p in (d / "params").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(bytes(data[: len(data) // 2]))
    else:
        victim.unlink()
    word = {"flip": "corrupted", "truncate": "truncated", "delete": "missing"}[damage]
    with pytest.raises(CheckpointError, match=f"params: file .* is {word} .*since it was saved"):
        load_checkpoint(d)


def test_a_checkpoint_saved_without_a_digest_still_loads(tiny_overrides, tmp_path):
    from arm_jax.checkpoint import load_checkpoint, save_checkpoint
    from arm_jax.config import load_tier
    from arm_jax.file_digest import PARAMS_DIGEST
    from arm_jax.model import Ranker

    tier = load_tier("small", list(tiny_overrides))
    params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)))[1]
    d = save_checkpoint(tmp_path / "ck", kind="ranker", tier=tier, params=params)
    cfg = json.loads((d / "config.json").read_text())
    assert set(cfg[PARAMS_DIGEST]) and all(len(v) == 2 for v in cfg[PARAMS_DIGEST].values())
    del cfg[PARAMS_DIGEST]
    (d / "config.json").write_text(json.dumps(cfg))
    assert load_checkpoint(d)[0] == "ranker"


@pytest.mark.parametrize("bad, field", [
    ({"metrics": {("click", "auc"): 0.7}}, "metrics"),       # a key json cannot write
    ({"metrics": {"auc": object()}}, "metrics"),             # a value json cannot write
    ({"kind": "rnaker"}, "kind"),                            # a typo'd kind
    ({"params": {"w": np.array(["a", "b"])}}, "params"),     # params of no model
], ids=["tuple-key-metric", "object-metric", "unknown-kind", "string-params"])
def test_bad_save_input_leaves_the_previous_checkpoint_loadable(tiny_overrides, tmp_path, bad,
                                                                field):
    """Bad input to a save over an earlier checkpoint is refused (a typed error naming the
    field) before anything of the earlier checkpoint is deleted or overwritten: the save
    deleted config.json and overwrote params/ first, so the earlier checkpoint was lost."""
    from arm_jax.checkpoint import CheckpointError, load_checkpoint, read_metrics, save_checkpoint
    from arm_jax.config import load_tier
    from arm_jax.model import Ranker

    tier = load_tier("small", list(tiny_overrides))
    params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)))[1]
    d = save_checkpoint(tmp_path / "ck", kind="ranker", tier=tier, params=params,
                        metrics={"auc": 0.7})
    before = {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError if field else Exception) as err:
        save_checkpoint(d, **{"kind": "ranker", "tier": tier, "params": params, **bad})
    if field:
        assert str(err.value).startswith(f"{field}")
    after = {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()
             if not p.relative_to(d).parts[0].startswith("params.saving")}
    assert after == before
    assert load_checkpoint(d)[0] == "ranker" and read_metrics(d) == {"auc": 0.7}
    # and the same directory takes a good save afterwards
    save_checkpoint(d, kind="ranker", tier=tier, params=params, metrics={"auc": 0.8})
    assert read_metrics(d) == {"auc": 0.8} and not (d / "params.saving").exists()


def test_numpy_scalars_in_metrics_are_written_as_numbers(tiny_overrides, tmp_path):
    """A count summed with numpy (np.int64) was a TypeError from json, after the save had
    deleted the earlier checkpoint."""
    from arm_jax.checkpoint import read_metrics, save_checkpoint
    from arm_jax.config import load_tier
    from arm_jax.model import Ranker

    tier = load_tier("small", list(tiny_overrides))
    params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)))[1]
    d = save_checkpoint(tmp_path / "ck", kind="ranker", tier=tier, params=params,
                        metrics={"examples": np.int64(3), "auc": np.float32(0.5),
                                 "ok": np.bool_(True), "nan": np.float32("nan")})
    assert read_metrics(d) == {"examples": 3, "auc": 0.5, "ok": True, "nan": None}


@pytest.mark.parametrize("wrong", ["another-tier", "module", "bfloat16", "not-an-array"])
def test_params_of_another_model_are_refused_before_the_earlier_checkpoint_is_touched(
        tiny_overrides, tmp_path, wrong):
    """save_checkpoint wrote params that do not fit the kind and tier it records (another
    tier's, or the nnx Module itself, which orbax stores under other paths) over an earlier
    checkpoint, which load_checkpoint then refused: the save destroyed a loadable checkpoint.
    The params are now checked against the model's shapes (eval_shape only) first."""
    import jax
    import jax.numpy as jnp

    from arm_jax.checkpoint import (CheckpointError, build_model, load_checkpoint,
                                    save_checkpoint)
    from arm_jax.config import load_tier

    tier = load_tier("small", list(tiny_overrides))
    model = build_model("ranker", tier)
    params = nnx.split(model)[1]
    d = save_checkpoint(tmp_path / "ck", kind="ranker", tier=tier, params=params)
    before = {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()}
    if wrong == "another-tier":
        other = load_tier("small", [*tiny_overrides, "model.d_model=32"])
        bad = nnx.split(build_model("ranker", other))[1]
        message = (r"^params: parameter '\S+' has shape \[[\d, ]*32[\d, ]*\] float32, the "
                   r"ranker of tier 'small' has \[[\d, ]*16[\d, ]*\] float32$")
    elif wrong == "module":
        bad = model
        message = r"^params: an nnx Module \(Ranker\), not its state"
    elif wrong == "bfloat16":
        bad = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
        message = r"^params: parameter '\S+' has shape \[[\d, ]*\] bfloat16, .* float32$"
    else:
        bad = {"w": [1.0, 2.0]}
        message = r"^params: parameter 'w/0' is a float, not an array$"
    with pytest.raises(CheckpointError, match=message):
        save_checkpoint(d, kind="ranker", tier=tier, params=bad)
    assert {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file()} == before
    assert load_checkpoint(d)[0] == "ranker"      # the earlier checkpoint is whole


def test_a_logreg_checkpoint_is_checked_against_the_logreg_model(tiny_overrides, tmp_path):
    """The check builds the model of the kind saved: a ranker's params are no logreg's."""
    from arm_jax.checkpoint import CheckpointError, build_model, save_checkpoint
    from arm_jax.config import load_tier

    tier = load_tier("small", list(tiny_overrides))
    save_checkpoint(tmp_path / "lr", kind="logreg", tier=tier,
                    params=nnx.split(build_model("logreg", tier))[1])
    with pytest.raises(CheckpointError, match=r"^params: parameters differ from what the "
                                              r"logreg of tier 'small' has: missing"):
        save_checkpoint(tmp_path / "lr2", kind="logreg", tier=tier,
                        params=nnx.split(build_model("ranker", tier))[1])
    assert not (tmp_path / "lr2").exists()


@pytest.mark.parametrize("text", [b"{bad", b"\xff\xfe{}", b"[1, 2]"],
                         ids=["not-json", "not-utf8", "a-list"])
def test_damaged_metrics_are_a_checkpoint_error_naming_the_file(tmp_path, text):
    """read_metrics on a damaged metrics.json raised a bare JSONDecodeError (or a
    UnicodeDecodeError) naming neither the file nor the checkpoint."""
    from arm_jax.checkpoint import CheckpointError, read_metrics

    (tmp_path / "metrics.json").write_bytes(text)
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / 'metrics.json'}: "
                                              r"(unreadable metrics|not metrics)"):
        read_metrics(tmp_path)
    assert read_metrics(tmp_path / "absent") is None


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc")
def test_a_checkpoint_directory_that_cannot_be_created_is_a_checkpoint_error(tiny_overrides):
    """mkdir's bare FileNotFoundError ('/proc/...': no directory can be made there) was
    the error, naming no checkpoint."""
    from arm_jax.checkpoint import CheckpointError, build_model, save_checkpoint
    from arm_jax.config import load_tier

    tier = load_tier("small", list(tiny_overrides))
    params = nnx.split(build_model("logreg", tier))[1]
    with pytest.raises(CheckpointError, match="^checkpoint directory /proc/arm_jax_test/ck: "
                                              "cannot create it"):
        save_checkpoint("/proc/arm_jax_test/ck", kind="logreg", tier=tier, params=params)


def _nan_params(params):
    """`params` with two NaNs and an inf in the head_in kernel."""
    import jax.numpy as jnp

    w = params["head_in"]["kernel"]
    w[...] = jnp.asarray(w[...]).at[0, :2].set(jnp.nan).at[1, 0].set(jnp.inf)
    return params


def test_params_holding_nan_or_inf_are_refused_unless_allowed(tiny_overrides, tmp_path):
    """A diverged model (NaN weights) was saved without a word and loaded to score NaN.
    Refused now, naming the parameter and the count, before the earlier checkpoint is
    touched; allow_nonfinite=True saves it anyway."""
    from arm_jax.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from arm_jax.config import load_tier
    from arm_jax.model import Ranker

    tier = load_tier("small", list(tiny_overrides))
    params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)))[1]
    d = save_checkpoint(tmp_path / "ck", kind="ranker", tier=tier, params=params)
    before = (d / "config.json").read_bytes()
    bad = _nan_params(params)
    size = bad["head_in"]["kernel"][...].size
    with pytest.raises(CheckpointError, match=rf"^params: parameter 'head_in/kernel' holds 3 "
                                              rf"non-finite values \(NaN or inf\) of {size}: "
                                              r".*must be finite.*allow_nonfinite=True"):
        save_checkpoint(d, kind="ranker", tier=tier, params=bad)
    assert (d / "config.json").read_bytes() == before
    save_checkpoint(d, kind="ranker", tier=tier, params=bad, allow_nonfinite=True)
    got = np.asarray(load_checkpoint(d)[3]["head_in"]["kernel"][...])
    assert int((~np.isfinite(got)).sum()) == 3


def test_check_finite_params_counts_a_leaf_no_host_holds_on_its_devices():
    """A leaf spread over several processes (not fully addressable) cannot be read on one
    host: it is counted with a device reduction instead."""
    from arm_jax.checkpoint import CheckpointError, check_finite_params

    class Spread(np.ndarray):
        is_fully_addressable = False

    w = np.array([1.0, np.nan, np.inf, 2.0], np.float32).view(Spread)
    with pytest.raises(CheckpointError, match=r"x: parameter 'w' holds 2 non-finite values "
                                              r"\(NaN or inf\) of 4"):
        check_finite_params({"ok": np.ones(2, np.float32), "w": w}, "x")
    check_finite_params({"w": np.ones(4, np.float32).view(Spread)}, "x")


def test_shardings_that_do_not_match_the_params_are_a_checkpoint_error(tiny_overrides,
                                                                       tmp_path):
    """A shardings tree of another structure raised jax's multi-line 'pytree structure
    error' ValueError from load_checkpoint."""
    import jax

    from arm_jax.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from arm_jax.config import load_tier
    from arm_jax.model import Ranker

    tier = load_tier("small", list(tiny_overrides))
    params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(0)))[1]
    d = save_checkpoint(tmp_path / "ck", kind="ranker", tier=tier, params=params)
    s = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with pytest.raises(CheckpointError, match=r"shardings: the tree does not match the "
                                              r"checkpoint's params \(missing \['cand_dense/"
                                              r"bias'.*unexpected \['head'\]"):
        load_checkpoint(d, shardings={"head": s})
    as_dict = jax.tree.map(lambda _: s, nnx.to_pure_dict(params))   # same paths, other nodes
    with pytest.raises(CheckpointError, match=r"the same paths, but a dict, not a State"):
        load_checkpoint(d, shardings=as_dict)
    assert load_checkpoint(d, shardings=jax.tree.map(lambda _: s, params))[0] == "ranker"
