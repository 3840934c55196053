"""`arm-jax demo` end to end on tiny tiers: train, export, serve over HTTP, replay requests."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_trains_exports_serves_and_scores(tiny_overrides, tmp_path):
    # In a fresh process, as a user runs it (the server thread and progress bars then own
    # real stdout/stderr rather than pytest's capture buffers).
    cmd = [sys.executable, "-m", "arm_jax.cli.main", "demo", "--out", str(tmp_path),
           "--tiers", "small,large", "--steps", "3", "--requests", "12", *tiny_overrides,
           "train.num_users=300", "train.train_requests=200", "train.eval_requests=40"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    out = r.stdout
    assert (tmp_path / "artifacts" / "small" / "manifest.json").exists()
    assert (tmp_path / "artifacts" / "large" / "manifest.json").exists()
    from arm_jax.data.catalog import ItemCatalog      # the server ran with the world's catalogue
    assert ItemCatalog.load(tmp_path / "catalog.npz").num_items > 0
    assert f"--catalog {tmp_path / 'catalog.npz'}" in out
    summary = out[out.index("tier "):]
    rows = {line.split()[0]: line.split() for line in summary.splitlines()[1:]
            if line.split() and line.split()[0] in ("small", "large", "all")}
    assert int(rows["all"][1]) == 12                   # every request answered
    assert sum(int(r[1]) for name, r in rows.items() if name != "all") == 12
    assert 0.0 <= float(rows["all"][5]) <= 1.0         # an AUC of served scores
    # requests that send only user_id and ts get their history from the demo's LMDB store,
    # and score as the same history sent inline
    line = next(x for x in out.splitlines() if x.startswith("history from the store"))
    assert "12 requests, history_source=store in 12," in line, line
    assert float(line.rsplit(" ", 1)[1]) < 1e-5, line
    assert f"--history-store lmdb://{tmp_path / 'logs'}" in out


def test_demo_rejects_bad_arguments(capsys):
    from arm_jax.cli.main import main

    assert main(["demo", "--steps", "0"]) != 0
    assert "--steps must be >= 1" in capsys.readouterr().err
