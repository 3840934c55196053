"""`bench routing` end to end on tiny, untrained checkpoints: structure, budgets, PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flax import nnx

from arm_jax.checkpoint import save_checkpoint
from arm_jax.config import load_tier

TRAIN = ("train.eval_requests=80", "train.train_requests=16", "train.num_users=60",
         "train.candidates=4")


@pytest.fixture(scope="module")
def checkpoints(tiny_overrides, tmp_path_factory):
    from arm_jax.model import Ranker

    root = tmp_path_factory.mktemp("routing-ckpts")
    for name, L in (("small", 4), ("medium", 8), ("large", 12)):
        tier = load_tier(name, [*tiny_overrides, *TRAIN, f"model.history_len={L}"])
        params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(len(name))))[1]
        save_checkpoint(root / name, kind="ranker", tier=tier, params=params)
    return root


def test_routing_bench_policies_and_budgets(checkpoints, tmp_path):
    from arm_jax.bench.routing import run_routing_bench

    out = tmp_path / "routing.json"
    res = run_routing_bench(checkpoints, budgets=(0.3, 0.6), out_json=out)
    saved = json.loads(out.read_text())
    names = [p["name"] for p in saved["policies"]]
    for want in ("always-small", "always-medium", "always-large", "rules", "learned@0.3",
                 "learned@0.6"):
        assert want in names
    for p in saved["policies"]:
        assert {"name", "flops_per_request", "auc", "ne"} <= set(p)
    by = {p["name"]: p for p in res["policies"]}
    f = {n: by[f"always-{n}"]["flops_per_request"] for n in ("small", "medium", "large")}
    assert 0 < f["small"] < f["medium"] < f["large"]
    for b in (0.3, 0.6):
        # The threshold is calibrated on the fit half; on 40 held-out requests the share
        # sent large is only near the budget (the policy-level test checks it exactly).
        # A budget below always-small is infeasible: everything goes small.
        cap = max(b * f["large"], f["small"])
        assert by[f"learned@{b:g}"]["flops_per_request"] <= cap + 0.2 * f["large"]
        assert by[f"oracle@{b:g}"]["flops_per_request"] <= cap * (1 + 1e-6)
    assert (tmp_path / "routing.png").stat().st_size > 1000
    assert "met" in saved["target"]
    # the fitted router is written for `serve --policy learned:PATH` and loads back
    from arm_jax.routing.policies import LearnedPolicy

    pol = LearnedPolicy.load(saved["learned"]["policy_file"])
    assert pol.budget == 0.5 and pol.ridge == saved["learned"]["ridge"]


def _two_tier_root(checkpoints, root):
    """`root` holding only the small and large checkpoints (symlinks to the fixture's)."""
    root.mkdir()
    for name in ("small", "large"):
        (root / name).symlink_to(checkpoints / name, target_is_directory=True)
    return root


def test_routing_bench_without_medium_uses_small_and_large(checkpoints, tmp_path, monkeypatch):
    """A missing medium/ is skipped (it used to fail: `.../medium: not a checkpoint`).
    Scoring and FLOPs are faked so that nothing compiles; the policies run for real."""
    import numpy as np

    import arm_jax.bench.routing as routing
    import arm_jax.checkpoint as checkpoint
    import arm_jax.train.loop as loop

    root = _two_tier_root(checkpoints, tmp_path / "run")
    loaded = []
    real_load = checkpoint.load_checkpoint

    def recording_load(d, *a, **k):
        loaded.append(Path(d).name)
        return real_load(d, *a, **k)

    rng = np.random.default_rng(0)
    monkeypatch.setattr(checkpoint, "load_checkpoint", recording_load)
    monkeypatch.setattr(loop, "predict_examples", lambda g, p, data, test, L: rng.uniform(
        0.05, 0.95, test.labels.shape).astype(np.float32))
    monkeypatch.setattr(routing, "tier_flops", lambda name, *a: {"small": 1e6, "large": 1e7}[name])
    res = routing.run_routing_bench(root, budgets=(0.5,))
    assert loaded == ["small", "large"]
    assert list(res["tiers"]) == ["small", "large"]
    names = [p["name"] for p in res["policies"]]
    assert {"always-small", "always-large", "rules", "learned@0.5"} <= set(names)
    assert "always-medium" not in names


def test_routing_bench_needs_small_and_large(checkpoints, tmp_path, capsys):
    """Without large/ the bench stops on the check it always meant to make, one line."""
    from arm_jax.cli.main import main

    root = _two_tier_root(checkpoints, tmp_path / "run")
    (root / "large").unlink()
    rc = main(["bench", "routing", "--checkpoints", str(root), "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == (f"arm-jax: error: checkpoints {root}: need at least small and "
                               "large, got ['small']"), err


def test_routing_bench_refuses_a_medium_that_is_not_a_checkpoint(checkpoints, tmp_path):
    """Only an absent tier is skipped: a medium/ that exists but is broken is an error."""
    from arm_jax.bench.routing import run_routing_bench
    from arm_jax.checkpoint import CheckpointError

    root = _two_tier_root(checkpoints, tmp_path / "run")
    (root / "medium").mkdir()
    with pytest.raises(CheckpointError, match=r"medium: not a checkpoint \(config.json missing\)"):
        run_routing_bench(root, budgets=(0.5,))
