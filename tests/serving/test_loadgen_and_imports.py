"""Load generator against a real server; the serving process never imports model/train code."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from serving.executor import FakeExecutor
from serving.loadgen import LoadgenError, format_report, run_load
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


def test_load_in_arrow_bodies(serve, tiny_tiers):
    pytest.importorskip("pyarrow")
    url = serve({n: FakeExecutor(t) for n, t in tiny_tiers.items()})
    rep = run_load(url, rate=40, duration=0.5, candidates=6, history=5, wire="arrow")
    assert rep["sent"] == 20 and rep["ok"] == 20 and rep["errors_4xx"] == 0
    assert rep["server_p50_total_ms"] > 0 and abs(sum(rep["tier_mix"].values()) - 1.0) < 1e-9


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


def test_an_unreachable_or_wrong_url_is_one_typed_error():
    import socket

    with socket.socket() as s:            # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LoadgenError, match=f"127.0.0.1:{port}'.*cannot reach"):
        run_load(f"http://127.0.0.1:{port}", rate=5, duration=1.0, timeout=2.0)
    with pytest.raises(LoadgenError, match="expected an http:// or https:// URL"):
        run_load("localhost-8000", rate=5, duration=1.0)


def test_a_server_wanting_a_token_is_named(serve, tiny_tiers):
    url = serve({n: FakeExecutor(t) for n, t in tiny_tiers.items()},
                ServerSettings(token="s3cret-token"), headers={"Authorization":
                                                               "Bearer s3cret-token"})
    with pytest.raises(LoadgenError, match="answered 401: pass the server's --token"):
        run_load(url, rate=5, duration=1.0)


@pytest.mark.parametrize("field, kw", [("candidates", {"candidates": 0}),
                                       ("history", {"history": -1}),
                                       ("max_in_flight", {"max_in_flight": 0})])
def test_bad_sizes_are_refused_before_any_request(field, kw):
    with pytest.raises(ValueError, match=f"{field}="):
        run_load("http://127.0.0.1:9", rate=5, duration=1.0, **kw)


def test_a_200_that_is_no_rank_answer_is_counted_not_lost(tiny_tiers):
    """It raised inside the request's task: sent 5, ok 0 and no status or error at all."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    features = next(iter(tiny_tiers.values())).features.__dict__
    bodies = iter([b"<html>a proxy's page</html>", b'{"tier": "small"}'] * 3)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, body: bytes, ctype: str) -> None:
            self.send_response(200)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(json.dumps({"features": features}, default=list).encode(),
                       "application/json")

        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            self._send(next(bodies), "application/json")

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        rep = run_load(f"http://127.0.0.1:{srv.server_port}", rate=20, duration=0.25,
                       candidates=3, history=2)
    finally:
        srv.shutdown()
        srv.server_close()
    assert rep["sent"] == 5 and rep["ok"] == 0 and rep["p50_ms"] is None
    assert rep["transport_errors"] == {"bad_answer": 5}


def test_every_sent_request_is_accounted_for_even_when_its_task_raises(serve, tiny_tiers,
                                                                       monkeypatch):
    """A request whose task raised anything but an httpx error was counted as sent and
    nowhere else (not ok, no status, no transport error): the report looked clean."""
    import httpx

    url = serve({n: FakeExecutor(t) for n, t in tiny_tiers.items()},
                ServerSettings(deadline_ms=2000))
    real = httpx.AsyncClient.post
    calls = []

    async def post(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("planted: not an httpx error")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "post", post)
    rep = run_load(url, rate=20, duration=0.5, candidates=6, history=5)
    answered = sum(rep["status"].values()) + sum(rep["transport_errors"].values())
    assert rep["sent"] == 10 and answered == rep["sent"], rep
