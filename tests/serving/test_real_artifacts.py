"""End to end with REAL tiny AOT artifacts: ranking matches the library, hot swap, memory,
and the serving process imports no model or training code."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

import httpx
import numpy as np
import pytest

pytest.importorskip("arm_jax.compile.export")
pytest.importorskip("arm_jax.compile.artifacts")

BUCKETS = ("serving.batch_buckets=[1,2]", "serving.candidate_buckets=[4,8]")
TOKEN = "real-artifacts-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _checkpoint(tier, out, seed):
    from flax import nnx

    from arm_jax.checkpoint import save_checkpoint
    from arm_jax.model import Ranker

    params = nnx.split(Ranker(tier.model, tier.features, rngs=nnx.Rngs(seed)))[1]
    return save_checkpoint(out, kind="ranker", tier=tier, params=params)


@pytest.fixture(scope="module")
def artifacts(tiny_overrides, tmp_path_factory):
    from arm_jax.compile.export import export_tiers
    from arm_jax.config import load_tier

    root = tmp_path_factory.mktemp("real-artifacts")
    tiers = {n: load_tier(n, [*tiny_overrides, *BUCKETS, f"model.history_len={L}"])
             for n, L in (("small", 4), ("large", 12))}
    ckpts = {n: _checkpoint(t, root / "ckpt" / n, seed=1) for n, t in tiers.items()}
    out = root / "artifacts"
    export_tiers(ckpts, out, platforms=("cpu",))
    swap_same = _checkpoint(tiers["large"], root / "ckpt" / "large-v2", seed=7)
    from dataclasses import replace
    wide = replace(tiers["large"], model=replace(tiers["large"].model, d_model=32))
    swap_wide = _checkpoint(wide, root / "ckpt" / "large-wide", seed=7)
    return {"dir": out, "tiers": tiers, "ckpts": ckpts, "swap_same": swap_same,
            "swap_wide": swap_wide}


@pytest.fixture(scope="module")
def catalog(artifacts):
    """Side ids of items below 500,000 (random_request draws ids up to 10**6)."""
    from arm_jax.data.catalog import ItemCatalog

    items = np.arange(500_000)
    return ItemCatalog(np.stack([items % 1000, items % 17], -1),
                       artifacts["tiers"]["large"].features.history_side_fields)


@pytest.fixture(scope="module")
def server(artifacts, catalog):
    from serving.app import create_app
    from serving.executor import load_artifact_executors
    from serving.server import ServerThread
    from serving.settings import ServerSettings

    settings = ServerSettings(token=TOKEN, policy="fixed:large", deadline_ms=30000)
    app = create_app(load_artifact_executors(artifacts["dir"]), settings, catalog=catalog)
    srv = ServerThread(app, settings).start()
    yield srv.url
    srv.stop()


def _library_probs(ckpt, body):
    """The same request scored by the model library directly (no server, no artifacts)."""
    from arm_jax.batch import make_batch
    from arm_jax.checkpoint import load_checkpoint
    from arm_jax.train.step import make_predict

    _, tier, graphdef, params = load_checkpoint(ckpt)
    L = tier.model.history_len
    h = len(body["hist_item"])
    pad = lambda xs, dt: np.asarray([(list(xs) + [0] * L)[:L]], dt)  # noqa: E731
    s = len(tier.features.history_side_fields)
    side = np.zeros((1, L, s), np.int64)
    side[0, :min(h, L)] = np.reshape(body["hist_side"], (h, s))[:L]
    batch = make_batch(req_sparse=[body["req_sparse"]], req_dense=[body["req_dense"]],
                       hist_item=pad(body["hist_item"], np.int64),
                       hist_action=pad(body["hist_action"], np.int64),
                       hist_gap=pad(body["hist_gap"], np.float64), hist_len=[min(h, L)],
                       hist_side=side,
                       cand_sparse=[body["cand_sparse"]], cand_dense=[body["cand_dense"]],
                       expected={"history_side_fields": s})
    return np.asarray(make_predict(graphdef)(params, batch))[0]


def _body(tier, seed=0, candidates=6, history=9):
    from serving.client import random_request

    return random_request(tier.features.__dict__, candidates=candidates, history=history,
                          rng=np.random.default_rng(seed))


def _wait(url):
    import time

    for _ in range(600):
        if httpx.get(url + "/readyz", headers=AUTH, timeout=5).status_code == 200:
            return
        time.sleep(0.05)
    raise TimeoutError("not ready")


def test_ranking_matches_library(server, artifacts):
    _wait(server)
    for seed, (n, h) in enumerate(((6, 9), (3, 20), (8, 0))):
        body = _body(artifacts["tiers"]["large"], seed, candidates=n, history=h)
        r = httpx.post(server + "/v1/rank", json=body, headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["tier"] == "large"
        want = _library_probs(artifacts["ckpts"]["large"], body)
        np.testing.assert_allclose(out["scores"], want, rtol=1e-4, atol=1e-5)
        assert sorted(out["ranking"]) == sorted(set(out["ranking"]))
        assert set(out["ranking"]) <= set(range(n))
        assert out["ranking"][0] == int(np.argmax(want[:, 0]))


def test_side_ids_from_the_catalogue_are_scored(server, artifacts, catalog):
    _wait(server)
    body = _body(artifacts["tiers"]["large"], 5, candidates=5, history=10)
    bare = {k: v for k, v in body.items() if k != "hist_side"}
    r = httpx.post(server + "/v1/rank", json=bare, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    joined = {**body, "hist_side": catalog.lookup(np.asarray(body["hist_item"])).tolist()}
    want = _library_probs(artifacts["ckpts"]["large"], joined)
    np.testing.assert_allclose(r.json()["scores"], want, rtol=1e-4, atol=1e-5)
    # the side ids reach the model: the request's own (random) rows score differently
    assert not np.allclose(want, _library_probs(artifacts["ckpts"]["large"], body), atol=1e-6)


def _live_buffers() -> tuple[int, int]:
    """(count, bytes) of the live jax arrays; the list is dropped before returning, or the
    next call would count the arrays it keeps alive."""
    import jax

    arrays = jax.live_arrays()
    return len(arrays), sum(a.nbytes for a in arrays)


def test_hot_swap_real_weights_and_memory(server, artifacts):
    """Swapping back and forth serves each version's scores and holds no old weights: after
    every swap the process keeps no more live jax buffers (count and bytes) than before it,
    so a leak of even one old weight array fails, not only one that moves the RSS."""
    import psutil

    _wait(server)
    body = _body(artifacts["tiers"]["large"], 11)
    rss, live = [], []
    for i in range(8):
        path = artifacts["swap_same"] if i % 2 == 0 else artifacts["ckpts"]["large"]
        r = httpx.post(server + "/admin/reload", json={"tier": "large", "path": str(path)},
                       headers=AUTH, timeout=120)
        assert r.status_code == 200, r.text
        if i in (0, 1):
            out = httpx.post(server + "/v1/rank", json=body, headers=AUTH, timeout=60).json()
            np.testing.assert_allclose(out["scores"], _library_probs(path, body), rtol=1e-4,
                                       atol=1e-5)
        gc.collect()
        rss.append(psutil.Process().memory_info().rss)
        live.append(_live_buffers())
    # From the third swap on (the first two also scored through the library) nothing grows.
    assert all(n <= live[2][0] and nbytes <= live[2][1] for n, nbytes in live[3:]), live
    assert rss[-1] <= rss[2] * 1.10, [r / 1e6 for r in rss]
    r = httpx.post(server + "/admin/reload",
                   json={"tier": "large", "path": str(artifacts["swap_wide"])},
                   headers=AUTH, timeout=120)
    assert r.status_code == 409, r.text
    out = httpx.post(server + "/v1/rank", json=body, headers=AUTH, timeout=60).json()
    np.testing.assert_allclose(out["scores"], _library_probs(artifacts["ckpts"]["large"], body),
                               rtol=1e-4, atol=1e-5)


def test_serving_with_artifacts_imports_no_model_code(artifacts):
    script = textwrap.dedent(f"""
        import sys, time, httpx
        from serving.app import create_app
        from serving.executor import load_artifact_executors
        from serving.server import ServerThread
        with ServerThread(create_app(load_artifact_executors({str(artifacts['dir'])!r}))) as s:
            for _ in range(600):
                if httpx.get(s.url + "/readyz").status_code == 200:
                    break
                time.sleep(0.05)
            assert httpx.get(s.url + "/readyz").status_code == 200
        bad = sorted(m for m in sys.modules if m.startswith(("arm_jax.model", "arm_jax.train")))
        assert not bad, bad
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_bench_serve_end_to_end(artifacts, tmp_path, monkeypatch, capsys):
    """`bench serve` on the tiny artifacts, with Arrow bodies: its own server, figures
    consistent with the samples it kept, no 5xx but 503 under 2x load, JSON and PNG written. An operator's
    $ARM_JAX_TOKEN must not lock the bench out of the server it starts."""
    import json

    from serving.serve_bench import run_serve_bench

    monkeypatch.setenv("ARM_JAX_TOKEN", "an-operator-token-the-bench-does-not-know")
    out = tmp_path / "serve.json"
    res = run_serve_bench(artifacts["dir"], tier="small", candidates=4, duration=1.0,
                          repeats=3, batch_window_ms=0.5, wire="arrow", out_json=out)
    saved = json.loads(out.read_text())
    assert saved["config"]["wire"] == "arrow"      # every request and answer in Arrow
    assert (tmp_path / "serve.png").stat().st_size > 0
    assert saved["config"]["batch_window_ms"] == 0.5      # the server took the flag
    lat = saved["latency_ms_samples"]
    assert len(lat) >= 10
    assert saved["p50_ms"] == pytest.approx(float(np.percentile(lat, 50)), abs=1e-2)
    assert len(saved["compute_ms_samples"]) == 3
    assert saved["compute_ms"] == pytest.approx(float(np.median(saved["compute_ms_samples"])),
                                                abs=1e-2)
    assert saved["overhead_ratio"] == pytest.approx(saved["p50_ms"] / saved["compute_ms"])
    assert saved["overhead_ratio_same_requests"] == pytest.approx(
        saved["p50_ms"] / saved["server_p50_compute_ms"])
    o = saved["overload_2x"]
    assert o["admitted"] > 0 and o["errors_5xx"] == 0
    assert o["admitted_p50_ms"] <= o["admitted_p99_ms"] <= o["admitted_max_ms"]
    assert saved["throughput_rps"] > 0 and res["png"].endswith("serve.png")
    assert "2x overload" in capsys.readouterr().out


def test_bench_serve_history_over_the_tier_limit_names_it(artifacts):
    from serving.serve_bench import run_serve_bench

    with pytest.raises(ValueError, match=r"history=1000000: exceeds .*max_history="):
        run_serve_bench(artifacts["dir"], tier="small", candidates=4, history=10**6,
                        duration=1.0, repeats=1)


def test_operator_fills_store_and_catalogue_from_files(artifacts, tmp_path):
    """The operator's path: `arm-jax store load` (events CSV) and `arm-jax store catalog`
    (items CSV), then a server with --history-store and --catalog scores a request that sends
    only user_id and ts as the library scores the same history sent inline."""
    from arm_jax.cli.main import main
    from serving.app import create_app
    from serving.executor import load_artifact_executors
    from serving.server import ServerThread
    from serving.settings import ServerSettings

    t0 = 1_700_000_000
    fields = artifacts["tiers"]["large"].features.history_side_fields
    log = [(42, 11, 0, t0 - 600), (42, 12, 1, t0 - 500), (7, 99, 2, t0 - 450),
           (42, 13, 2, t0 - 400), (42, 14, 3, t0 - 30), (42, 15, 1, t0 + 5)]   # last: future
    events = tmp_path / "events.csv"
    events.write_text("ts,user_id,item,action\n"
                      + "".join(f"{t},{u},{i},{a}\n" for u, i, a, t in log))
    side = {i: [(i * 7 + j) % 50 for j in range(len(fields))] for i in (11, 12, 13, 14, 99)}
    items = tmp_path / "items.csv"
    items.write_text(",".join(["item", *(f"f{j}" for j in fields)]) + "\n"
                     + "".join(",".join(map(str, [i, *s])) + "\n" for i, s in side.items()))
    store_url = f"lmdb://{tmp_path / 'logs'}"
    assert main(["store", "load", store_url, str(events)]) == 0
    assert main(["store", "catalog", str(items), "--fields", ",".join(map(str, fields)),
                 "--out", str(tmp_path / "catalog.npz")]) == 0

    settings = ServerSettings(token=TOKEN, policy="fixed:large", deadline_ms=30000,
                              history_store=store_url, catalog=str(tmp_path / "catalog.npz"))
    body = _body(artifacts["tiers"]["large"], 11, candidates=5, history=0)
    bare = {k: v for k, v in body.items() if not k.startswith("hist_")}
    with ServerThread(create_app(load_artifact_executors(artifacts["dir"]), settings)) as srv:
        _wait(srv.url)
        r = httpx.post(srv.url + "/v1/rank", json={**bare, "user_id": 42, "ts": t0},
                       headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["history_source"] == "store" and not out["degraded"] and out["tier"] == "large"
    past = [e for e in log if e[0] == 42 and e[3] < t0][::-1]          # newest first
    inline = {**bare, "hist_item": [e[1] for e in past], "hist_action": [e[2] for e in past],
              "hist_gap": [float(t0 - e[3]) for e in past],
              "hist_side": [side[e[1]] for e in past]}
    want = _library_probs(artifacts["ckpts"]["large"], inline)
    np.testing.assert_allclose(out["scores"], want, rtol=1e-4, atol=1e-5)
