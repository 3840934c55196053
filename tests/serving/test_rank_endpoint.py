"""Ranking, wire formats, micro-batching, readiness and metrics over real HTTP (fake executors)."""

from __future__ import annotations

import concurrent.futures as cf
import re

import httpx
import jax
import msgpack
import numpy as np
import pytest

import arm_jax
from serving.app import create_app
from serving.executor import FakeExecutor
from serving.server import ServerThread
from serving.settings import ServerSettings


def test_rank_scores_ranking_tier_timings(serve, fakes, payload, tiny_tiers, expected):
    url = serve(fakes, ServerSettings(policy="fixed:medium"))
    p = payload(candidates=7, history=6, top_k=3, request_id="r1")
    r = httpx.post(url + "/v1/rank", json=p, timeout=10)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["tier"] == "medium" and out["degraded"] is False and out["request_id"] == "r1"
    want = expected(tiny_tiers["medium"], p)
    np.testing.assert_allclose(out["scores"], want, rtol=1e-5, atol=1e-6)
    assert out["ranking"] == list(np.argsort(-want[:, 0], kind="stable")[:3])
    assert out["bucket"] == [1, 8]
    t = out["timings"]
    assert 0 <= t["queue_ms"] <= t["total_ms"] and t["compute_ms"] >= 0


def test_padding_never_ranked_and_history_over_L_is_cut(serve, fakes, payload, tiny_tiers,
                                                       expected):
    url = serve(fakes, ServerSettings(policy="fixed:small"))
    scored, real_score = [], fakes["small"].score

    def recording(batch):      # the fake caps hist_len itself: check what the tier was given
        scored.append(batch)
        return real_score(batch)

    fakes["small"].score = recording
    p = payload(candidates=3, history=20)      # small reads L=4; bucket pads to 8 candidates
    out = httpx.post(url + "/v1/rank", json=p, timeout=10).json()
    assert sorted(out["ranking"]) == [0, 1, 2]
    np.testing.assert_allclose(out["scores"], expected(tiny_tiers["small"], p), rtol=1e-5,
                               atol=1e-6)
    b = scored[-1]                             # the newest 4 events (histories newest first)
    assert np.asarray(b.hist_len).tolist() == [4]
    for f in ("hist_item", "hist_action"):
        np.testing.assert_array_equal(np.asarray(getattr(b, f)), [p[f][:4]], err_msg=f)
    np.testing.assert_array_equal(b.hist_gap, np.float32([p["hist_gap"][:4]]))


def test_msgpack_matches_json(serve, fakes, payload):
    url = serve(fakes)
    p = payload(candidates=9)
    j = httpx.post(url + "/v1/rank", json=p, timeout=10).json()
    r = httpx.post(url + "/v1/rank", content=msgpack.packb(p),
                   headers={"Content-Type": "application/msgpack"}, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "application/msgpack"
    m = msgpack.unpackb(r.content)
    np.testing.assert_allclose(m["scores"], j["scores"])
    assert m["ranking"] == j["ranking"] and m["tier"] == j["tier"]


def test_rules_policy_routes_by_history_and_value(serve, fakes, payload):
    url = serve(fakes)      # rules: cheapest tier whose L covers the history (4 / 8 / 12)
    tier = lambda **kw: httpx.post(url + "/v1/rank", json=payload(**kw), timeout=10).json()["tier"]  # noqa: E731
    assert tier(history=3) == "small"
    assert tier(history=7) == "medium"
    assert tier(history=30) == "large"
    assert tier(history=3, context={"value": 100.0}) == "large"
    assert tier(history=30, context={"intent": "prefetch"}) == "small"


def test_micro_batching_packs_concurrent_requests(serve, tiny_tiers, payload, expected):
    fake = FakeExecutor(tiny_tiers["small"], delay_ms=60)
    url = serve({"small": fake}, ServerSettings(batch_window_ms=20, deadline_ms=5000))
    calls_before = fake.calls
    # candidates 1..8 (one bucket, 8): requests of different sizes share a call
    bodies = [payload(seed=i, candidates=i + 1) for i in range(8)]
    with cf.ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda b: httpx.post(url + "/v1/rank", json=b,
                                                  timeout=20).json(), bodies))
    assert all(o["tier"] == "small" for o in outs)
    assert max(o["batch_size"] for o in outs) > 1
    assert fake.calls - calls_before < 8
    assert {tuple(o["bucket"]) for o in outs} <= {(1, 8), (4, 8)}
    for body, o in zip(bodies, outs):     # each request gets its own row of the batch
        want = expected(tiny_tiers["small"], body)
        np.testing.assert_allclose(o["scores"], want, rtol=1e-5, atol=1e-6)
        assert o["ranking"] == np.argsort(-want[:, 0], kind="stable").tolist()


def test_readyz_only_after_warmup(tiny_tiers, payload):
    fake = FakeExecutor(tiny_tiers["small"], warmup_delay_s=1.0)
    with ServerThread(create_app({"small": fake}, ServerSettings())) as srv:
        assert httpx.get(srv.url + "/healthz", timeout=5).status_code == 200
        r = httpx.get(srv.url + "/readyz", timeout=5)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        r = httpx.post(srv.url + "/v1/rank", json=payload(), timeout=5)
        assert r.status_code == 503
        for _ in range(100):
            if httpx.get(srv.url + "/readyz", timeout=5).status_code == 200:
                break
            import time
            time.sleep(0.05)
        assert fake.warmed
        assert httpx.post(srv.url + "/v1/rank", json=payload(), timeout=5).status_code == 200


def test_metrics_present_and_counting(serve, fakes, payload, metric):
    url = serve(fakes, ServerSettings(policy="fixed:large"))
    for i in range(5):
        assert httpx.post(url + "/v1/rank", json=payload(seed=i), timeout=10).status_code == 200
    httpx.post(url + "/v1/rank", content=b"{", headers={"Content-Type": "application/json"})
    text = httpx.get(url + "/metrics", timeout=10).text
    assert metric(text, "armjax_request_latency_seconds_count", tier="large") == 5
    assert metric(text, "armjax_requests_total", tier="large", degraded="false") == 5
    assert metric(text, "armjax_batch_size_count", tier="large") >= 1
    assert metric(text, "armjax_compute_seconds_count", tier="large") >= 1
    assert metric(text, "armjax_rejects_total", reason="bad_request") == 1
    assert metric(text, "armjax_ready") == 1
    for name in ("armjax_queue_depth", "armjax_executor_busy_ratio", "armjax_queue_wait_seconds"):
        assert re.search(rf'^{name}\S*{{tier="(small|medium|large)"', text, re.M), name
    busy = metric(text, "armjax_executor_busy_ratio", tier="large")
    assert 0.0 <= busy <= 1.0
    assert metric(text, "armjax_build_info", arm_jax=arm_jax.__version__,
                   jax=jax.__version__) == 1


def test_openapi_docs(serve, fakes):
    url = serve(fakes)
    spec = httpx.get(url + "/openapi.json", timeout=10).json()
    body = spec["paths"]["/v1/rank"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/msgpack",
                         "application/vnd.apache.arrow.stream"}
    assert "cand_sparse" in spec["components"]["schemas"]["RankRequest"]["properties"]
    assert "Context" in spec["components"]["schemas"]
    assert httpx.get(url + "/docs", timeout=10).status_code == 200


def test_info_lists_tiers_cheapest_first(serve, fakes):
    info = httpx.get(serve(fakes) + "/v1/info", timeout=10).json()
    assert [t["name"] for t in info["tiers"]] == ["small", "medium", "large"]
    assert info["limits"]["max_candidates"] == 32
    assert info["versions"]["arm-jax"] == arm_jax.__version__
    assert info["versions"]["jax"] == jax.__version__


@pytest.mark.parametrize("bad", ["tcp", "fixed:huge"])
def test_bad_policy_refused_at_startup(fakes, bad, caplog):
    from serving.registry import RegistryError
    from serving.settings import SettingsError

    with pytest.raises((RegistryError, SettingsError)):
        create_app(fakes, ServerSettings(policy=bad))
    # no advice about a catalogue ahead of the error that stops start-up
    assert "no item catalogue" not in caplog.text


def test_an_unknown_log_level_is_refused_by_name():
    from serving.settings import SettingsError

    with pytest.raises(SettingsError, match="log_level='loud': allowed critical, error"):
        ServerSettings(log_level="loud")


@pytest.mark.parametrize("field", ["token", "admin_token"])
@pytest.mark.parametrize("value, why", [("short", "at least 8 characters"),
                                        ("tok en-with-space", "printable ASCII without spaces"),
                                        ("jeton-sécurisé", "printable ASCII without spaces")])
def test_tokens_are_long_printable_ascii(field, value, why):
    from serving.settings import SettingsError

    with pytest.raises(SettingsError, match=f"{field}: must be {why}"):
        ServerSettings(**{field: value})


def test_a_failing_executor_is_a_json_500_counted_and_the_server_goes_on(serve, fakes, payload,
                                                                          metric):
    url = serve(fakes)
    real = fakes["large"].score

    def broken(batch):
        raise RuntimeError("device lost")

    fakes["large"].score = broken
    r = httpx.post(url + "/v1/rank", json={**payload(), "tier": "large"}, timeout=10)
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert (err["field"], err["reason"]) == ("server", "internal")
    assert "'large' failed on this request: RuntimeError" in err["message"]
    fakes["large"].score = real
    r = httpx.post(url + "/v1/rank", json={**payload(), "tier": "large"}, timeout=10)
    assert r.status_code == 200
    text = httpx.get(url + "/metrics").text
    assert metric(text, "armjax_rejects_total", reason="internal") == 1


def test_top_k_beyond_the_compiled_k_is_ranked_not_cut(serve, fakes, payload):
    """The tiers rank K=16 in the executable; a request asking for more gets them all,
    ordered by the same key (the first task's score), its first K the executable's own."""
    url = serve(fakes)
    body = {**payload(candidates=25, seed=3), "tier": "small"}
    compiled = httpx.post(url + "/v1/rank", json=body, timeout=10).json()
    assert len(compiled["ranking"]) == fakes["small"].top_k == 16
    for want, got in ((20, 20), (25, 25), (40, 25)):
        out = httpx.post(url + "/v1/rank", json={**body, "top_k": want}, timeout=10).json()
        first = np.asarray(out["scores"])[:, 0]
        assert len(out["ranking"]) == got and sorted(out["ranking"]) == sorted(
            set(out["ranking"]))
        assert out["ranking"] == np.argsort(-first, kind="stable")[:got].tolist()
        assert out["ranking"][:16] == compiled["ranking"]
        np.testing.assert_allclose(out["top_scores"], first[out["ranking"]], rtol=1e-6)


def test_health_checks_answer_head_as_well_as_get(serve, fakes):
    url = serve(fakes)
    for path in ("/healthz", "/readyz"):
        r = httpx.head(url + path, timeout=5)
        assert r.status_code == 200 and r.content == b"", (path, r.status_code)


def _wait_queued(url: str, metric, tier: str, depth: int, timeout: float = 10.0) -> None:
    """Until the tier's queue-depth gauge reads `depth` (AssertionError after `timeout`)."""
    import time

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        text = httpx.get(url + "/metrics", timeout=5).text
        if metric(text, "armjax_queue_depth", tier=tier) == depth:
            return
        time.sleep(0.02)
    raise AssertionError(f"queue depth of {tier} never reached {depth}")


def test_an_executor_failing_a_batch_answers_every_request_of_it_and_serves_the_next(
        serve, tiny_tiers, gated, payload, expected, metric):
    """Each request of a failed batch gets the JSON 500 at once, not only the first (the
    others used to be able to wait out their budget); the worker then serves the next."""
    ex = gated(tiny_tiers["small"])
    ex.gate.set()                                      # open for the warm-up timing
    url = serve({"small": ex}, ServerSettings(deadline_ms=20000, batch_window_ms=0))
    ex.gate.clear()
    ex.entered.clear()
    gated_score, sizes = ex.score, []

    def failing(batch):
        sizes.append(batch.num_requests)
        gated_score(batch)
        raise RuntimeError("device lost")

    ex.score = failing
    bodies = [payload(seed=i, candidates=5) for i in range(4)]
    with cf.ThreadPoolExecutor(4) as pool:
        first = pool.submit(httpx.post, url + "/v1/rank", json=bodies[0], timeout=15)
        assert ex.entered.wait(10)                     # the first call holds the executor
        rest = [pool.submit(httpx.post, url + "/v1/rank", json=b, timeout=15)
                for b in bodies[1:]]
        _wait_queued(url, metric, "small", 3)                  # the other three: one batch
        ex.gate.set()
        results = [f.result() for f in (first, *rest)]
    assert sizes == [1, 3]
    for r in results:
        assert r.status_code == 500 and r.headers["content-type"] == "application/json", r.text
        assert (r.json()["error"]["field"], r.json()["error"]["reason"]) == ("server",
                                                                             "internal")
    ex.score = gated_score
    r = httpx.post(url + "/v1/rank", json=bodies[2], timeout=10)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["scores"], expected(tiny_tiers["small"], bodies[2]),
                               rtol=1e-5, atol=1e-6)
    text = httpx.get(url + "/metrics").text
    assert metric(text, "armjax_rejects_total", reason="internal") == 4
    assert metric(text, "armjax_queue_depth", tier="small") == 0


def test_requests_of_two_candidate_buckets_queued_together_are_each_served(
        serve, tiny_tiers, gated, payload, expected, metric):
    """Queued behind a running call: A (5 candidates, bucket 8), B (20, bucket 32), C (3,
    bucket 8). A and C share the next call, B the one after; each gets its own scores, the
    queue empties, and the tier serves the next request."""
    ex = gated(tiny_tiers["small"])
    ex.gate.set()                                      # open for the warm-up timing
    url = serve({"small": ex}, ServerSettings(deadline_ms=3000, batch_window_ms=0))
    ex.gate.clear()
    ex.entered.clear()
    bodies = [payload(seed=i, candidates=c) for i, c in enumerate((5, 5, 20, 3))]
    with cf.ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(httpx.post, url + "/v1/rank", json=bodies[0], timeout=15)]
        assert ex.entered.wait(10)
        for i, body in enumerate(bodies[1:], 1):      # queued in this order
            futs.append(pool.submit(httpx.post, url + "/v1/rank", json=body, timeout=15))
            _wait_queued(url, metric, "small", i)
        ex.gate.set()
        results = [f.result() for f in futs]
    assert [r.status_code for r in results] == [200] * 4, [r.text for r in results]
    for body, r in zip(bodies, results):
        np.testing.assert_allclose(r.json()["scores"], expected(tiny_tiers["small"], body),
                                   rtol=1e-5, atol=1e-6)
    assert [r.json()["batch_size"] for r in results] == [1, 2, 1, 2]
    assert httpx.post(url + "/v1/rank", json=bodies[1], timeout=10).status_code == 200
    assert metric(httpx.get(url + "/metrics").text, "armjax_queue_depth", tier="small") == 0


def test_a_failed_warm_up_is_named_on_readyz_and_refuses_requests_at_once(tiny_tiers, payload,
                                                                          metric):
    """The warm-up runs in a background thread: its error must reach /readyz and the
    metrics, not die with the thread (readiness said "warming up" forever)."""
    import time

    class BrokenWarmUp(FakeExecutor):
        def warmup(self):
            raise RuntimeError("planted warm-up failure")

    app = create_app({"small": BrokenWarmUp(tiny_tiers["small"])}, ServerSettings())
    with ServerThread(app) as srv:
        deadline = time.monotonic() + 10
        while True:
            r = httpx.get(srv.url + "/readyz", timeout=5)
            if "planted" in r.text or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["message"] == "RuntimeError: planted warm-up failure"
        r = httpx.post(srv.url + "/v1/rank", json=payload(), timeout=5)
        assert r.status_code == 503 and "planted warm-up failure" in r.text
        page = httpx.get(srv.url + "/metrics", timeout=5).text
    assert metric(page, "armjax_ready") == 0
    assert metric(page, "armjax_rejects_total", reason="not_ready") == 1


def test_a_tier_whose_worker_died_is_not_ready_or_still_serves(fakes, payload):
    app = create_app({"small": fakes["small"]}, ServerSettings(deadline_ms=1000),
                     warm_in_background=False)
    bt = app.state.registry.batchers["small"]
    real = bt._take_group

    def once():
        bt._take_group = real
        raise RuntimeError("planted: grouping failed")

    with ServerThread(app) as srv:
        bt._take_group = once        # the worker's next group: after the request below
        r1 = httpx.post(srv.url + "/v1/rank", json=payload(), timeout=10)
        r2 = httpx.post(srv.url + "/v1/rank", json=payload(seed=1), timeout=10)
        ready = httpx.get(srv.url + "/readyz", timeout=5).status_code
    assert r1.status_code == 200, r1.text
    assert r2.status_code == 200 or ready == 503, (r2.status_code, r2.text, ready)


def test_a_stopped_worker_makes_the_server_not_ready_naming_the_tier(fakes, payload, metric):
    """A tier's batching worker only ends by a bug; then /readyz, /v1/rank and armjax_ready
    say so (a load balancer drains the process) instead of the tier's requests timing out
    while the server reports ready."""
    app = create_app({"small": fakes["small"], "large": fakes["large"]}, ServerSettings(),
                     warm_in_background=False)
    with ServerThread(app) as srv:
        assert httpx.get(srv.url + "/readyz", timeout=5).status_code == 200
        app.state.registry.batchers["large"].stop(timeout=5)     # as if its thread had died
        r = httpx.get(srv.url + "/readyz", timeout=5)
        assert r.status_code == 503 and "tier large stopped" in r.text, r.text
        r = httpx.post(srv.url + "/v1/rank", json=payload(), timeout=5)
        assert r.status_code == 503 and "tier large stopped" in r.text, r.text
        page = httpx.get(srv.url + "/metrics", timeout=5).text
    assert metric(page, "armjax_ready") == 0
