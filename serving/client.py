"""HTTP client for the ranker (httpx), and random valid requests built from /v1/info."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import httpx
import msgpack
import numpy as np


class RankError(httpx.HTTPStatusError):
    """The server answered with an error status.

    Carries what the server's error body says: `status`, `field` (the request field it
    names), `detail` (its message), `reason` (e.g. "invalid", "overloaded"), and
    `retry_after` (seconds, from the Retry-After header of a 503). Still an
    `httpx.HTTPStatusError`, so existing handlers keep working.
    """

    def __init__(self, response: httpx.Response):
        err: dict[str, Any] = {}
        try:
            body = response.json()
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                err = body["error"]
        except ValueError:
            pass
        self.status = response.status_code
        self.field: str | None = err.get("field")
        self.detail: str | None = err.get("message")
        self.reason: str | None = err.get("reason")
        retry = response.headers.get("retry-after", "")
        self.retry_after: float | None = float(retry) if retry.isdigit() else None
        said = f"{self.field}: {self.detail}" if self.field else response.reason_phrase
        super().__init__(f"{self.status} from {response.request.url}: {said}",
                         request=response.request, response=response)


def _ok(response: httpx.Response) -> httpx.Response:
    if not response.is_success:
        raise RankError(response)
    return response


class RankClient:
    """Synchronous client. `token` goes into every request as a bearer token."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "RankClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def info(self) -> dict[str, Any]:
        """GET /v1/info: tiers, buckets, the request schema. RankError on an error status."""
        return _ok(self.http.get("/v1/info")).json()

    def ready(self) -> bool:
        """GET /readyz answered 200. A refused token (401, 403) raises RankError: waiting
        cannot fix it."""
        try:
            r = self.http.get("/readyz")
        except httpx.HTTPError:
            return False
        if r.status_code in (401, 403):
            _ok(r)
        return r.status_code == 200

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.05, *,
                   alive: Callable[[], bool] | None = None) -> None:
        """Poll /readyz until it answers 200: TimeoutError after `timeout` s, ConnectionError
        as soon as `alive()` (e.g. "is the server process still running") is False, and
        RankError at once on a refused token (401/403)."""
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            if self.ready():
                return
            if alive is not None and not alive():
                raise ConnectionError(f"{self.url}: the server stopped before it was ready")
            time.sleep(interval)
        raise TimeoutError(f"{self.url} not ready after {timeout:g} s")

    def rank_raw(self, payload: dict[str, Any], *, use_msgpack: bool = False,
                 wire: str | None = None) -> httpx.Response:
        """POST /v1/rank with the body encoded as `wire` ("json", "msgpack" or "arrow": an
        Arrow IPC stream of one row, which needs pyarrow); the answer comes back in the same
        format. `use_msgpack=True` is `wire="msgpack"`."""
        wire = wire or ("msgpack" if use_msgpack else "json")
        content, ctype = encode_payload(payload, wire)
        return self.http.post("/v1/rank", content=content, headers={"Content-Type": ctype})

    def rank(self, payload: dict[str, Any], *, use_msgpack: bool = False,
             wire: str | None = None) -> dict[str, Any]:
        """POST /v1/rank -> the response body as a dict, whatever the wire format;
        RankError naming the field on a 4xx, with `retry_after` on a 503 (overload)."""
        r = _ok(self.rank_raw(payload, use_msgpack=use_msgpack, wire=wire))
        return decode_answer(r)

    def reload(self, tier: str, path: str | os.PathLike, *,
               admin_token: str | None = None) -> dict[str, Any]:
        """POST /admin/reload: swap `tier`'s weights for the checkpoint at `path` -> the
        server's answer. RankError on an error status, like `rank`: 404 (`path` not found),
        409 (refused, the old weights keep serving), 401/403 (token). `admin_token` defaults
        to the client's token, which the server also accepts when it has no admin token."""
        headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        return _ok(self.http.post("/admin/reload", json={"tier": tier, "path": str(path)},
                                  headers=headers)).json()


WIRES = ("json", "msgpack", "arrow")


def encode_payload(payload: dict[str, Any], wire: str) -> tuple[bytes, str]:
    """-> (body bytes, Content-Type) of a /v1/rank payload in wire format `wire`."""
    if wire == "json":
        return json.dumps(payload).encode(), "application/json"
    if wire == "msgpack":
        return msgpack.packb(payload), "application/msgpack"
    if wire == "arrow":
        from serving.arrow_wire import ARROW_STREAM, encode_request

        return encode_request(payload), ARROW_STREAM
    raise ValueError(f"wire={wire!r}: expected one of {', '.join(WIRES)}")


def decode_answer(response: httpx.Response) -> dict[str, Any]:
    """A /v1/rank answer as a dict, by its Content-Type (JSON, msgpack or Arrow)."""
    ctype = response.headers.get("content-type", "")
    if ctype.startswith("application/msgpack"):
        return msgpack.unpackb(response.content)
    if ctype.startswith("application/vnd.apache.arrow.stream"):
        from serving.arrow_wire import decode_response

        return decode_response(response.content)
    return response.json()


def random_request(features: dict[str, Any], *, candidates: int, history: int,
                   rng: np.random.Generator, **extra: Any) -> dict[str, Any]:
    """A valid /v1/rank payload for the schema `features` (the /v1/info `features` dict).

    hist_side (random side ids, one row per event) is sent when the schema has
    `history_side_fields`; it is drawn last, so the other fields of a seed stay the same.
    """
    f = features
    body = {
        "req_sparse": rng.integers(1, 10**6, f["req_sparse_fields"]).tolist(),
        "req_dense": rng.normal(size=f["req_dense_features"]).round(4).tolist(),
        "hist_item": rng.integers(1, 10**6, history).tolist(),
        "hist_action": rng.integers(0, f["num_action_types"], history).tolist(),
        "hist_gap": rng.exponential(1e5, history).round(1).tolist(),
        "cand_sparse": rng.integers(1, 10**6, (candidates, f["cand_sparse_fields"])).tolist(),
        "cand_dense": rng.normal(size=(candidates, f["cand_dense_features"])).round(4).tolist(),
    }
    if "history_side_fields" in f:
        side = len(f["history_side_fields"])
        body["hist_side"] = rng.integers(1, 10**6, (history, side)).tolist()
    return {**body, **extra}
