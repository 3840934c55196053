"""Hot weight swap over HTTP: atomic under concurrent load, refusals keep the old weights."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

from serving.executor import FakeExecutor, write_fake_weights
from serving.settings import ServerSettings

TOKEN = "swap-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def swap_server(serve, tiny_tiers):
    fake = FakeExecutor(tiny_tiers["small"], delay_ms=3.0)
    url = serve({"small": fake}, ServerSettings(token=TOKEN, batch_window_ms=1.0,
                                                deadline_ms=5000), headers=AUTH)
    return url, fake


def _scale_of(expected, tier_cfg, body, out, scales):
    """Which single weight version produced this whole response (None if a mix)."""
    for s in scales:
        if np.allclose(out["scores"], expected(tier_cfg, body, s), rtol=1e-5, atol=1e-6):
            return s
    return None


def test_swap_under_concurrent_load_zero_failures(swap_server, payload, tiny_tiers, tmp_path,
                                                  expected):
    url, fake = swap_server
    scales = [1.0] + [1.0 + 0.25 * i for i in range(1, 21)]
    dirs = [write_fake_weights(tmp_path / f"w{i}", shape=fake.weight_shape, scale=s)
            for i, s in enumerate(scales[1:], 1)]
    stop = threading.Event()
    failures, seen = [], []
    bodies = [payload(seed=i, candidates=6) for i in range(8)]

    def load(k):
        with httpx.Client(base_url=url, headers=AUTH, timeout=10) as c:
            for i in range(400):                     # bounded in count ...
                if stop.is_set():
                    break
                body = bodies[(i + k) % len(bodies)]
                r = c.post("/v1/rank", json=body)
                if r.status_code != 200:
                    failures.append((r.status_code, r.text))
                    continue
                s = _scale_of(expected, tiny_tiers["small"], body, r.json(), scales)
                if s is None:
                    failures.append(("mixed or unknown weights", r.json()["scores"][:2]))
                seen.append(s)

    threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    t_end = time.monotonic() + 30                      # ... and in time
    swaps = 0
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as admin:
        for i, d in enumerate(dirs):
            r = admin.post("/admin/reload", json={"tier": "small", "path": str(d)})
            assert r.status_code == 200, r.text
            assert r.json()["version"] == i + 1
            swaps += 1
            time.sleep(0.02)
            if time.monotonic() > t_end:              # a loaded machine: fewer than 20
                break
    time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(30)
    assert not failures, failures[:5]
    assert len(seen) > 50 and len(set(seen)) > 3     # requests really ran across swaps
    assert fake.version == swaps >= 5              # every swap made took effect
    out = httpx.post(url + "/v1/rank", json=bodies[0], headers=AUTH, timeout=10).json()
    last = scales[swaps]
    assert _scale_of(expected, tiny_tiers["small"], bodies[0], out, [last]) == last
    text = httpx.get(url + "/metrics", headers=AUTH, timeout=10).text
    assert f'armjax_weight_swaps_total{{outcome="ok",tier="small"}} {swaps}.0' in text


def test_incompatible_weights_refused_old_keep_serving(swap_server, payload, tiny_tiers,
                                                       tmp_path, expected):
    url, fake = swap_server
    good = write_fake_weights(tmp_path / "good", shape=fake.weight_shape, scale=2.0)
    bad = write_fake_weights(tmp_path / "bad", shape=(fake.weight_shape[0] + 1, 7), scale=9.0)
    h = AUTH
    assert httpx.post(url + "/admin/reload", json={"tier": "small", "path": str(good)},
                      headers=h).status_code == 200
    r = httpx.post(url + "/admin/reload", json={"tier": "small", "path": str(bad)}, headers=h)
    assert r.status_code == 409 and r.json()["error"]["field"] == "path"
    assert "shape" in r.json()["error"]["message"]
    body = payload()
    out = httpx.post(url + "/v1/rank", json=body, headers=h, timeout=10).json()
    assert _scale_of(expected, tiny_tiers["small"], body, out, [2.0, 9.0]) == 2.0
    r = httpx.post(url + "/admin/reload", json={"tier": "small", "path": str(tmp_path / "nope")},
                   headers=h)
    assert r.status_code == 404 and r.json()["error"]["field"] == "path"
    for unusable in ("x" * 300, "a\u0000b"):    # over NAME_MAX; a NUL byte: 404, not 500
        r = httpx.post(url + "/admin/reload", json={"tier": "small", "path": unusable},
                       headers=h)
        assert r.status_code == 404 and r.json()["error"]["field"] == "path", r.text
    r = httpx.post(url + "/admin/reload", json={"tier": "huge", "path": str(good)}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["field"] == "tier"
    r = httpx.post(url + "/admin/reload", json={"tier": "small"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["field"] == "path"
    assert fake.version == 1


def test_admin_disabled_without_token(serve, fakes, tmp_path):
    url = serve(fakes)
    r = httpx.post(url + "/admin/reload", json={"tier": "small", "path": str(tmp_path)})
    assert r.status_code == 403 and r.json()["error"]["field"] == "authorization"


def test_admin_token_separate_from_request_token(serve, fakes, payload, tmp_path):
    settings = ServerSettings(token="request-token", admin_token="admin-token-xyz")
    url = serve(fakes, settings, headers={"Authorization": "Bearer request-token"})
    d = write_fake_weights(tmp_path / "w", shape=fakes["small"].weight_shape, scale=3.0)
    r = httpx.post(url + "/admin/reload", json={"tier": "small", "path": str(d)},
                   headers={"Authorization": "Bearer request-token"})
    assert r.status_code == 401
    r = httpx.post(url + "/admin/reload", json={"tier": "small", "path": str(d)},
                   headers={"Authorization": "Bearer admin-token-xyz"})
    assert r.status_code == 200


def test_non_finite_scores_are_a_clear_500_and_counted(swap_server, payload, tmp_path):
    """Weights that score NaN (the fake's scale; real artifacts refuse such weights at the
    swap) made JSONResponse raise: a bare 'Internal Server Error' with nothing counted."""
    url, fake = swap_server
    nan = write_fake_weights(tmp_path / "nan", shape=fake.weight_shape, scale=float("nan"))
    assert httpx.post(url + "/admin/reload", json={"tier": "small", "path": str(nan)},
                      headers=AUTH).status_code == 200
    r = httpx.post(url + "/v1/rank", json=payload(), headers=AUTH, timeout=10)
    assert r.status_code == 500, r.text
    err = r.json()["error"]
    assert err["field"] == "model" and err["reason"] == "non_finite_scores"
    assert "'small' scored NaN or inf" in err["message"]
    text = httpx.get(url + "/metrics", headers=AUTH).text
    assert 'armjax_rejects_total{reason="non_finite_scores"} 1.0' in text


def test_an_admin_token_alone_guards_only_the_admin_endpoint(serve, fakes, payload, tmp_path):
    """Liveness probes and ranking clients need no secret when only --admin-token is set."""
    url = serve(fakes, ServerSettings(admin_token="admin-token-xyz"))
    assert httpx.get(url + "/healthz").status_code == 200
    assert httpx.get(url + "/readyz").status_code == 200
    assert httpx.post(url + "/v1/rank", json=payload(), timeout=10).status_code == 200
    d = write_fake_weights(tmp_path / "w", shape=fakes["small"].weight_shape, scale=3.0)
    body = {"tier": "small", "path": str(d)}
    r = httpx.post(url + "/admin/reload", json=body)
    assert r.status_code == 401 and r.json()["error"]["field"] == "authorization"
    r = httpx.post(url + "/admin/reload", json=body,
                   headers={"Authorization": "Bearer admin-token-xyz"})
    assert r.status_code == 200 and fakes["small"].version == 1


def test_admin_mistakes_are_not_ranking_rejects_and_a_bad_file_is_a_409(swap_server, metric,
                                                                         tmp_path):
    url, fake = swap_server
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "fake_weights.json").write_text("{not json")
    r = httpx.post(url + "/admin/reload", json={"tier": "small", "path": str(broken)},
                   headers=AUTH)
    assert r.status_code == 409 and r.json()["error"]["field"] == "path", r.text
    for body in ({"tier": "huge", "path": str(broken)}, {"tier": "small"}, {"x": 1}):
        assert httpx.post(url + "/admin/reload", json=body, headers=AUTH).status_code == 422
    text = httpx.get(url + "/metrics", headers=AUTH).text
    assert metric(text, "armjax_rejects_total") == 0
    assert metric(text, "armjax_weight_swaps_total", outcome="refused", tier="small") == 1
    assert fake.version == 0


def test_failed_reloads_under_traffic_leave_the_tier_as_it_was(swap_server, payload, tiny_tiers,
                                                              tmp_path, expected, metric):
    """Every kind of failed reload (404, 409 shape, 409 damaged file, 422 tier, 500 unreadable)
    made while requests run: those requests are all served by the weights in place, and after
    it the tier still serves them, is still ready, keeps its version counter (the registry's,
    reported when the executor gives none) and counts only the one swap that worked as ok."""
    url, fake = swap_server
    swap = fake.swap_weights
    fake.swap_weights = lambda d: {k: v for k, v in swap(d).items() if k != "version"}
    good = write_fake_weights(tmp_path / "good", shape=fake.weight_shape, scale=2.0)
    wide = write_fake_weights(tmp_path / "wide", shape=(fake.weight_shape[0] + 1, 7), scale=9.0)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "fake_weights.json").write_text('{"shape": [1, ')
    unreadable = tmp_path / "unreadable"
    (unreadable / "fake_weights.json").mkdir(parents=True)       # a directory: OSError
    r = httpx.post(url + "/admin/reload", json={"tier": "small", "path": str(good)}, headers=AUTH)
    assert r.status_code == 200 and r.json()["version"] == 1, r.text

    bodies = [payload(seed=i, candidates=4 + i) for i in range(4)]
    stop, answers = threading.Event(), []

    def load(k):
        with httpx.Client(base_url=url, headers=AUTH, timeout=10) as c:
            while not stop.is_set() and len(answers) < 2000:
                body = bodies[(len(answers) + k) % len(bodies)]
                r = c.post("/v1/rank", json=body)
                answers.append((body, r.status_code, r.json()))

    threads = [threading.Thread(target=load, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    try:
        with httpx.Client(base_url=url, headers=AUTH, timeout=30) as admin:
            for _ in range(3):
                for path, tier, status in ((tmp_path / "nope", "small", 404),
                                           (wide, "small", 409), (damaged, "small", 409),
                                           (good, "huge", 422), (unreadable, "small", 500)):
                    r = admin.post("/admin/reload", json={"tier": tier, "path": str(path)})
                    assert r.status_code == status, r.text
                    assert r.json()["error"]["field"] in ("path", "tier"), r.text
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert answers
    for body, status, out in answers:
        assert status == 200, out
        assert _scale_of(expected, tiny_tiers["small"], body, out, [2.0]) == 2.0
    assert httpx.get(url + "/readyz", headers=AUTH).status_code == 200
    assert fake.version == 1
    text = httpx.get(url + "/metrics", headers=AUTH).text
    assert metric(text, "armjax_weight_swaps_total", tier="small", outcome="ok") == 1
    assert metric(text, "armjax_weight_swaps_total", tier="small", outcome="not_found") == 3
    assert metric(text, "armjax_weight_swaps_total", tier="small", outcome="refused") == 6
    assert metric(text, "armjax_weight_swaps_total", tier="small", outcome="error") == 3
    assert metric(text, "armjax_rejects_total") == 0
    assert metric(text, "armjax_queue_depth", tier="small") == 0
    good3 = write_fake_weights(tmp_path / "good3", shape=fake.weight_shape, scale=3.0)
    r = httpx.post(url + "/admin/reload", json={"tier": "small", "path": str(good3)}, headers=AUTH)
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    body = bodies[0]
    out = httpx.post(url + "/v1/rank", json=body, headers=AUTH, timeout=10).json()
    assert _scale_of(expected, tiny_tiers["small"], body, out, [2.0, 3.0]) == 3.0
