"""RankClient turns an error status into RankError carrying what the server said."""

from __future__ import annotations

import httpx
import pytest

from serving.app import create_app
from serving.client import RankClient, RankError
from serving.executor import FakeExecutor, write_fake_weights
from serving.server import ServerThread
from serving.settings import ServerSettings


def test_a_bad_request_is_a_rank_error_naming_the_field(serve, fakes, payload):
    with RankClient(serve(fakes)) as client:
        assert client.rank(payload())["tier"]
        with pytest.raises(RankError) as e:
            client.rank({**payload(), "bogus": 1})
    err = e.value
    assert isinstance(err, httpx.HTTPStatusError)          # old handlers keep working
    assert (err.status, err.field, err.reason) == (422, "bogus", "invalid")
    assert err.detail and "422" in str(err) and "bogus: " + err.detail in str(err)
    assert err.retry_after is None


def test_a_wrong_token_is_named(serve, fakes):
    url = serve(fakes, ServerSettings(token="s3cret-token"),
                headers={"Authorization": "Bearer s3cret-token"})
    with RankClient(url, token="not-the-token") as client, pytest.raises(RankError) as e:
        client.info()
    assert (e.value.status, e.value.field) == (401, "authorization")


def test_wait_ready_with_a_wrong_token_raises_at_once_instead_of_timing_out(serve, fakes):
    """A refused token never gets ready: waiting out the 60 s default to a TimeoutError
    hid the cause."""
    import time

    url = serve(fakes, ServerSettings(token="s3cret-token"),
                headers={"Authorization": "Bearer s3cret-token"})
    with RankClient(url, token="not-the-token") as client, pytest.raises(RankError) as e:
        t0 = time.monotonic()
        client.wait_ready(timeout=20)
    assert time.monotonic() - t0 < 5
    assert (e.value.status, e.value.field) == (401, "authorization")
    with RankClient(url, token="s3cret-token") as client:
        client.wait_ready(timeout=20)


def test_a_warming_server_is_503_with_retry_after(tiny_tiers, payload):
    slow = {n: FakeExecutor(t, warmup_delay_s=30.0) for n, t in tiny_tiers.items()}
    with ServerThread(create_app(slow)) as srv, RankClient(srv.url) as client:
        with pytest.raises(RankError) as e:
            client.rank(payload())
    assert (e.value.status, e.value.reason, e.value.retry_after) == (503, "not_ready", 1.0)


def test_reload_returns_the_answer_and_raises_on_refusal(serve, fakes, tmp_path):
    """`reload` is a RankError on an error status like every other call, never a silent
    Response the caller has to remember to check."""
    url = serve(fakes, ServerSettings(token="admin-and-request"),
                headers={"Authorization": "Bearer admin-and-request"})
    good = write_fake_weights(tmp_path / "good", shape=fakes["small"].weight_shape, scale=2.0)
    with RankClient(url, token="admin-and-request") as client:
        assert client.reload("small", good)["tier"] == "small"
        with pytest.raises(RankError) as e:
            client.reload("small", tmp_path / "nope")
        assert (e.value.status, e.value.field, e.value.reason) == (404, "path", "not_found")
        with pytest.raises(RankError) as e:
            client.reload("small", good, admin_token="not-the-token")
        assert (e.value.status, e.value.field) == (401, "authorization")
    assert fakes["small"].version == 1
