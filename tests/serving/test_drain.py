"""SIGTERM: the `arm-jax serve` process stops accepting, finishes in-flight requests, exits 0."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np

from arm_jax.ports import free_port
from serving.client import random_request

TINY_BUCKETS = ("serving.batch_buckets=[1]", "serving.candidate_buckets=[8]")


@contextlib.contextmanager
def _fake_server(tiny_overrides, tmp_path, *args: str):
    """A `--fake small` server started as `arm-jax serve` runs, ready: (proc, url); killed
    on the way out if the test left it running."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "arm_jax.cli.main", "serve", "--fake", "small",
           "--port", str(port), "--deadline-ms", "20000", *args,
           *tiny_overrides, *TINY_BUCKETS]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    t_end = time.monotonic() + 60
    while time.monotonic() < t_end:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            log.close()
            raise AssertionError((tmp_path / "server.log").read_text())
        time.sleep(0.1)
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def test_sigterm_drains_in_flight_requests(tiny_overrides, tmp_path):
    with _fake_server(tiny_overrides, tmp_path, "--fake-delay-ms", "300") as (proc, url):
        feats = httpx.get(url + "/v1/info", timeout=5).json()["features"]
        bodies = [random_request(feats, candidates=4, history=3, rng=np.random.default_rng(i))
                  for i in range(3)]
        with cf.ThreadPoolExecutor(3) as pool:
            futs = [pool.submit(httpx.post, url + "/v1/rank", json=b, timeout=30) for b in bodies]
            time.sleep(0.3)            # all three are in flight (each takes 300 ms, one at a time)
            proc.send_signal(signal.SIGTERM)
            results = [f.result() for f in futs]
        assert [r.status_code for r in results] == [200, 200, 200], [r.text for r in results]
        rc = proc.wait(timeout=30)
        assert rc == 0, (tmp_path / "server.log").read_text()
        try:
            r = httpx.get(url + "/healthz", timeout=2)
            assert False, f"server still answering after drain: {r.status_code}"
        except httpx.HTTPError:
            pass
        assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_a_request_still_waiting_when_the_drain_timeout_ends_gets_a_json_503(tiny_overrides,
                                                                             tmp_path):
    """uvicorn cancels what is still running past --drain-timeout: that request is refused
    like any other at shutdown (JSON 503, reason shutting_down, Retry-After), not answered
    with uvicorn's bare text 500 and a traceback in the log."""
    with _fake_server(tiny_overrides, tmp_path, "--fake-delay-ms", "2500",
                      "--drain-timeout", "1") as (proc, url):
        feats = httpx.get(url + "/v1/info", timeout=5).json()["features"]
        body = random_request(feats, candidates=4, history=3, rng=np.random.default_rng(0))
        with cf.ThreadPoolExecutor(1) as pool:
            fut = pool.submit(httpx.post, url + "/v1/rank", json=body, timeout=30)
            time.sleep(0.3)            # in flight: it takes 2.5 s, the drain allows 1 s
            proc.send_signal(signal.SIGTERM)
            r = fut.result()
        assert r.status_code == 503, r.text
        assert r.json()["error"]["reason"] == "shutting_down"
        assert r.headers["retry-after"] == "1"
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in (tmp_path / "server.log").read_text()
