"""SIGTERM: the `arm-jax serve` process stops accepting, finishes in-flight requests, exits 0."""

from __future__ import annotations

import concurrent.futures as cf
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


def test_sigterm_drains_in_flight_requests(tiny_overrides, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "arm_jax.cli.main", "serve", "--fake", "small",
           "--fake-delay-ms", "300", "--port", str(port), "--deadline-ms", "20000",
           *tiny_overrides, *TINY_BUCKETS]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
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
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
