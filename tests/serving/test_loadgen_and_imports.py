"""Load generator against a real server; the serving process never imports model/train code."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from serving.executor import FakeExecutor
from serving.loadgen import format_report, run_load
from serving.settings import ServerSettings


def test_open_loop_load_report(serve, tiny_tiers):
    fakes = {n: FakeExecutor(t, delay_ms=2.0) for n, t in tiny_tiers.items()}
    url = serve(fakes, ServerSettings(deadline_ms=2000))
    rep = run_load(url, rate=60, duration=1.0, candidates=6, history=5, use_msgpack=True)
    assert rep["sent"] == 60 and rep["ok"] == 60
    assert rep["errors_5xx"] == 0 and rep["rejected_503"] == 0 and not rep["transport_errors"]
    assert 0 < rep["p50_ms"] <= rep["p95_ms"] <= rep["p99_ms"]
    assert rep["throughput_rps"] > 20
    assert abs(sum(rep["tier_mix"].values()) - 1.0) < 1e-9
    assert "p99" in format_report(rep)


def test_serving_never_imports_model_or_training_code(tiny_overrides):
    script = textwrap.dedent(f"""
        import sys, httpx, numpy as np
        from arm_jax.config import load_tier
        from serving.app import create_app
        from serving.client import random_request
        from serving.executor import FakeExecutor
        from serving.server import ServerThread
        tier = load_tier("small", {list(tiny_overrides)!r} + ["serving.candidate_buckets=[8]"])
        with ServerThread(create_app({{"small": FakeExecutor(tier)}})) as srv:
            import time
            for _ in range(200):
                if httpx.get(srv.url + "/readyz").status_code == 200:
                    break
                time.sleep(0.02)
            body = random_request(tier.features.__dict__, candidates=3, history=2,
                                  rng=np.random.default_rng(0))
            assert httpx.post(srv.url + "/v1/rank", json=body).status_code == 200
        bad = sorted(m for m in sys.modules
                     if m.startswith(("arm_jax.model", "arm_jax.train", "optax")))
        print("BAD", bad)
        assert not bad, bad
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
