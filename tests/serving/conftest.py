"""Fixtures for real-HTTP server tests: tiny tier configs, fake executors, a uvicorn thread."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from arm_jax.batch import make_batch
from arm_jax.config import load_tier
from serving.app import create_app
from serving.client import random_request
from serving.executor import FakeExecutor, fake_probs
from serving.server import ServerThread
from serving.settings import ServerSettings

BUCKETS = ("serving.batch_buckets=[1,4]", "serving.candidate_buckets=[8,32]")


@pytest.fixture(scope="session")
def tiny_tiers(tiny_overrides):
    """small / medium / large tier configs at tiny sizes, history L 4 / 8 / 12."""
    out = {}
    for name, L in (("small", 4), ("medium", 8), ("large", 12)):
        out[name] = load_tier(name, [*tiny_overrides, *BUCKETS, f"model.history_len={L}",
                                     "features.max_history=64"])
    return out


@pytest.fixture
def fakes(tiny_tiers):
    """Fresh fake executors per test; costs grow with the tier."""
    return {n: FakeExecutor(t, flops_per_pair=1e6 * (i + 1))
            for i, (n, t) in enumerate(tiny_tiers.items())}


def wait_ready(url: str, headers: dict | None = None, timeout: float = 30.0) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        try:
            if httpx.get(url + "/readyz", headers=headers, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise TimeoutError("server not ready")


@pytest.fixture
def serve():
    """serve(executors, settings, **create_app_kw) -> base URL of a real uvicorn server on
    127.0.0.1:<free>."""
    started: list[ServerThread] = []

    def start(executors, settings: ServerSettings | None = None, headers=None, **app_kw) -> str:
        settings = settings or ServerSettings()
        srv = ServerThread(create_app(executors, settings, **app_kw), settings).start()
        started.append(srv)
        wait_ready(srv.url, headers)
        return srv.url

    yield start
    for srv in started:
        srv.stop(timeout=15)


@pytest.fixture
def payload(tiny_tiers):
    """payload(candidates=5, history=6, seed=0, **extra) -> a valid /v1/rank body."""
    feats = tiny_tiers["small"].features.__dict__

    def make(candidates: int = 5, history: int = 6, seed: int = 0, **extra):
        return random_request(feats, candidates=candidates, history=history,
                              rng=np.random.default_rng(seed), **extra)

    return make


def expected_fake_scores(tier_cfg, p, scale=1.0):
    """What FakeExecutor must answer for payload p: probs [N, tasks]."""
    L = len(p["hist_item"])
    s = len(tier_cfg.features.history_side_fields)
    side = p.get("hist_side")
    batch = make_batch(req_sparse=[p["req_sparse"]], req_dense=[p["req_dense"]],
                       hist_item=np.reshape(p["hist_item"], (1, L)),
                       hist_action=np.reshape(p["hist_action"], (1, L)),
                       hist_gap=np.reshape(p["hist_gap"], (1, L)), hist_len=[L],
                       hist_side=None if side is None else np.reshape(side, (1, L, s)),
                       cand_sparse=[p["cand_sparse"]], cand_dense=[p["cand_dense"]],
                       expected={"history_side_fields": s})
    return fake_probs(batch, scale, len(tier_cfg.features.tasks), tier_cfg.model.history_len)[0]


@pytest.fixture
def expected():
    return expected_fake_scores


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` in a /metrics page whose labels include `labels`."""
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture
def metric():
    return metric_value


class GatedExecutor(FakeExecutor):
    """A fake whose calls block until `gate` is set; `entered` is set by the first call."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.gate, self.entered = threading.Event(), threading.Event()

    def score(self, batch):
        self.entered.set()
        self.gate.wait(10)
        return super().score(batch)


@pytest.fixture
def gated():
    """gated(tier_config, **FakeExecutor kw) -> a GatedExecutor, released after the test."""
    made: list[GatedExecutor] = []

    def make(cfg, **kw):
        made.append(GatedExecutor(cfg, **kw))
        return made[-1]

    yield make
    for ex in made:
        ex.gate.set()
