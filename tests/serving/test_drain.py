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


def _hung_weights(tmp_path):
    """A weights directory whose fake_weights.json is a FIFO no one writes: a reload of
    it blocks in the read as one of real-sized weights on a stalled disk or NFS would."""
    d = tmp_path / "hung-weights"
    d.mkdir()
    os.mkfifo(d / "fake_weights.json")
    return d


def test_sigterm_during_a_hung_reload_still_exits_within_the_drain_timeout(tiny_overrides,
                                                                           tmp_path):
    weights = _hung_weights(tmp_path)
    with _fake_server(tiny_overrides, tmp_path, "--drain-timeout", "1",
                      "--admin-token", "admintoken") as (proc, url):
        with cf.ThreadPoolExecutor(1) as pool:
            pool.submit(httpx.post, url + "/admin/reload", json={"tier": "small",
                        "path": str(weights)}, headers={"Authorization": "Bearer admintoken"},
                        timeout=15)
            time.sleep(0.5)            # the reload is blocked in its read
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=6)     # drain 1 s + uvicorn + lifespan + exit
            except subprocess.TimeoutExpired:
                rc = None
            finally:
                if proc.poll() is None:
                    proc.kill()        # frees the client waiting on the reload, too
        assert rc == 0, (tmp_path / "server.log").read_text()[-2000:]


def test_a_reload_still_running_when_the_drain_timeout_ends_gets_a_json_503(tiny_overrides,
                                                                            tmp_path):
    weights = _hung_weights(tmp_path)
    with _fake_server(tiny_overrides, tmp_path, "--drain-timeout", "1",
                      "--admin-token", "admintoken") as (proc, url):
        with cf.ThreadPoolExecutor(1) as pool:
            fut = pool.submit(httpx.post, url + "/admin/reload", json={"tier": "small",
                              "path": str(weights)},
                              headers={"Authorization": "Bearer admintoken"}, timeout=15)
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            try:
                r = fut.result(timeout=10)
            finally:
                if proc.poll() is None:
                    proc.kill()
        assert r.status_code == 503, r.text
        assert r.json()["error"]["reason"] == "shutting_down"
        assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_a_second_ctrl_c_exits_130_with_one_line_and_no_traceback(tiny_overrides, tmp_path):
    with _fake_server(tiny_overrides, tmp_path, "--fake-delay-ms", "2000",
                      "--drain-timeout", "5") as (proc, url):
        feats = httpx.get(url + "/v1/info", timeout=5).json()["features"]
        body = random_request(feats, candidates=4, history=3, rng=np.random.default_rng(0))
        with cf.ThreadPoolExecutor(1) as pool:
            fut = pool.submit(httpx.post, url + "/v1/rank", json=body, timeout=30)
            time.sleep(0.3)            # in flight: it takes 2 s
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)       # impatient: force quit
            r = fut.result()
        assert r.status_code in (200, 503), r.text
        assert proc.wait(timeout=15) == 130
        log = (tmp_path / "server.log").read_text()
        assert "Traceback" not in log, log
        assert log.rstrip().endswith("arm-jax: interrupted"), log
        # uvicorn skips the app's shutdown on a force quit; ours still runs it, at once
        assert "force quit: the drain is cut short" in log, log
