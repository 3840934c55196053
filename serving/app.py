"""The ASGI app: /v1/rank, health, readiness, metrics, hot reload, OpenAPI docs.

`create_app(executors, settings)` builds everything from executors (real AOT tiers or
fakes); nothing here imports model or training code. Request path:

    body (size-limited) -> JSON | msgpack (schema.RankRequest) | Arrow IPC (arrow_wire)
    -> schema.RankArrays -> RequestBatch (b=1)
    -> policy (request features only) -> load-aware step-down -> admission
    -> tier's micro-batcher -> executor (worker thread) -> response

Client mistakes are 4xx naming the field and the limit; overload is 503 + Retry-After;
a request never waits past its deadline plus a small grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import threading
import time
from typing import Any

import msgpack
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from arm_jax import __version__, stack_versions
from arm_jax.data.catalog import CatalogError, ItemCatalog, empty_catalog
from arm_jax.routing.policies import (FixedPolicy, LoadAwarePolicy, RoutingError, TierCost,
                                      load_policy)
from arm_jax.store.base import CorruptValue, UserLogStore
from arm_jax.store.fetch import fetch_request_history
from serving.admission import Rejected
from serving.batcher import DeadlineExceeded, Pending, ShuttingDown
from serving.executor import IncompatibleWeights, TierExecutor, WeightsNotFound
from serving.metrics import ServerMetrics
from serving.registry import RegistryError, TierRegistry
from serving.arrow_wire import ARROW_STREAM, arrow_available, encode_response
from serving.daemon_call import in_daemon_thread
from serving.schema import (FieldError, RankArrays, RankOptions, RankRequest, RankResponse,
                            ReloadRequest, default_body_limit, pack_batch)
from serving.settings import ServerSettings
from serving.store_reads import StoreReads
from serving.throttled_log import ThrottledWarning
from serving.wire import (BODY_TYPES, ClientGone, parse_body, parse_rank_body, read_body,
                          response_wire)

log = logging.getLogger("serving.app")
STORE_WARN_EVERY_S = 10.0
GRACE_S = 1.0   # beyond the deadline, how long a handler waits for a running batch


def _error(status: int, field: str, message: str, *, reason: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"field": field, "message": message, "reason": reason or "invalid"}}
    return JSONResponse(body, status_code=status, headers=headers)


class BearerAuth:
    """Pure ASGI middleware: every HTTP request needs `Authorization: Bearer <token>`."""

    def __init__(self, app: Any, tokens: list[str]):
        self.app = app
        self.tokens = [t.encode() for t in tokens]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.tokens:
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        ok = scheme.lower() == b"bearer" and any(hmac.compare_digest(given.strip(), t)
                                                 for t in self.tokens)
        if not ok:
            resp = _error(401, "authorization",
                          "missing or wrong bearer token (Authorization: Bearer <token>)",
                          reason="unauthorized", headers={"WWW-Authenticate": "Bearer"})
            return await resp(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(executors: dict[str, TierExecutor], settings: ServerSettings | None = None,
               *, warm_in_background: bool = True,
               history_store: UserLogStore | None = None,
               catalog: ItemCatalog | None = None) -> FastAPI:
    """FastAPI app over these tiers. Readiness flips once every executor is warmed.

    `history_store` (else `settings.history_store`, a URL opened on first use) serves the
    histories of requests that carry a user_id instead of inline hist_* fields.
    `catalog` (else `settings.catalog`, a file loaded here) fills the side ids of
    histories that come without them; CatalogError if it is unreadable or does not hold
    the tiers' `features.history_side_fields`.
    """
    settings = settings or ServerSettings()
    metrics = ServerMetrics()
    versions = stack_versions()
    metrics.build.info({name.replace("-", "_"): v or "none" for name, v in versions.items()})
    registry = TierRegistry(executors, settings, on_batch=metrics.on_batch)
    metrics.ready.set_function(lambda: float(registry.ready))   # 0 again if a worker stops
    feats = registry.features
    body_limit = settings.max_body_bytes or default_body_limit(feats, registry.max_candidates)
    if catalog is None and settings.catalog is not None:
        catalog = ItemCatalog.load(settings.catalog)
    if catalog is not None:
        try:
            catalog.check_fields(feats.history_side_fields)
        except CatalogError as e:
            raise CatalogError(f"{settings.catalog or 'catalog'}: {e}") from None
    side_ids = catalog or empty_catalog(feats.history_side_fields)   # what lookups use
    costs = [TierCost(n, _per_request_flops(executors[n]), executors[n].config.model.history_len)
             for n in registry.order]
    try:
        base_policy = load_policy(settings.policy, costs, num_action_types=feats.num_action_types)
    except RoutingError as e:
        raise RegistryError(str(e)) from None
    if catalog is None and feats.history_side_fields:   # warned once the setup is known good
        log.warning("no item catalogue: histories sent without hist_side get unknown side "
                    "ids (scores are worse); pass --catalog PATH.npz")
    for name, bt in registry.batchers.items():
        metrics.bind_tier(name, lambda bt=bt: bt.depth, lambda bt=bt: bt.busy.ratio())
    state: dict[str, Any] = {"warm_error": None, "store": history_store}
    can_arrow = arrow_available()     # Arrow IPC answers need pyarrow (an extra)
    fetch_len = min(feats.max_history, max(executors[n].config.model.history_len
                                           for n in registry.order))

    open_lock = threading.Lock()
    store_reads = StoreReads()
    # an outage fails every request: one log line per interval and reason (a corrupt log's
    # lines never count an outage's), the metric counts them all
    fetch_failures = {reason: ThrottledWarning(log, STORE_WARN_EVERY_S)
                      for reason in ("store_unavailable", "store_corrupt")}

    def store_read(user_id: int, ts: int) -> dict[str, Any]:
        with open_lock:
            if state["store"] is None:
                from arm_jax.store import open_store

                # read-only: a server never writes logs, and a mistyped path must not
                # become a new empty store (each request degrades until one exists)
                state["store"] = open_store(settings.history_store, readonly=True)
        return fetch_request_history(state["store"], user_id, ts, fetch_len,
                                     feats.num_action_types, side_ids)

    def store_wait_ms(req: RankOptions, n: int, t_start: float) -> float:
        """How long this request may wait on the store: --history-timeout-ms, cut so that
        a fallback still fits its budget. A failed read is served on the cheapest tier
        within the same deadline (the request's, else that tier's), so the wait leaves
        that tier twice its estimate (queue + compute + window: the queue grows while
        everyone waits on a hung store), and at least a fifth of the budget (scheduling
        jitter). Without the cut, a hung store took the whole 100 ms of the bundled
        small tier and every fallback was a 503."""
        cheapest = registry.order[0]
        budget = (req.deadline_ms or settings.deadline_ms
                  or executors[cheapest].config.serving.deadline_ms)
        reserve = max(2 * registry.admission.estimate_ms(cheapest, n), 0.2 * budget)
        left = budget - (time.monotonic() - t_start) * 1e3 - reserve
        return max(1.0, min(settings.history_timeout_ms, left))

    async def fetch_history(req: RankOptions, arrays: RankArrays, n: int, t_start: float
                            ) -> tuple[RankArrays, str, str | None]:
        """-> (arrays with history, history source, store failure reason or None).
        One store read per request, waited on for at most `store_wait_ms`; any failure
        degrades, never raises."""
        if arrays.has_inline_history or req.user_id is None:
            return arrays, ("inline" if arrays.hist_item.size else "none"), None
        if state["store"] is None and not settings.history_store:
            reason = "store_not_configured"
        else:
            wait_ms = store_wait_ms(req, n, t_start)     # only when the store is read
            t0 = time.monotonic()
            ts = req.ts if req.ts is not None else int(time.time())
            try:
                hist = await store_reads.call(store_read, req.user_id, ts,
                                              timeout_s=wait_ms / 1e3)
                metrics.history_fetch.observe(time.monotonic() - t0)
                metrics.history_events.observe(len(hist["hist_item"]))
                return arrays.with_history(hist), "store", None
            except asyncio.TimeoutError:
                reason = "store_unavailable"
                fetch_failures[reason].warn(
                    "history fetch failed for user %s: no answer from the store within "
                    "%.0f ms (--history-timeout-ms %g, or less to keep the fallback within "
                    "the request's budget)", req.user_id, wait_ms, settings.history_timeout_ms)
            except Exception as e:  # noqa: BLE001 - a store problem must never become a 5xx
                reason = "store_corrupt" if isinstance(e, CorruptValue) else "store_unavailable"
                fetch_failures[reason].warn("history fetch failed for user %s: %s: %s",
                                            req.user_id, type(e).__name__, e)
        metrics.store_fallbacks.labels(reason).inc()
        return arrays, "none", reason

    def not_ready_reason() -> str:
        stopped = registry.stopped_workers()
        if stopped:
            return f"the batching worker of tier {', '.join(stopped)} stopped (see the log)"
        return state["warm_error"] or "warming up"

    def warm() -> None:
        try:
            registry.start()
        except Exception as e:  # noqa: BLE001 - surfaced on /readyz
            log.exception("warm-up failed")
            state["warm_error"] = f"{type(e).__name__}: {e}"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if warm_in_background:
            threading.Thread(target=warm, name="warmup", daemon=True).start()
        else:
            warm()
        yield
        # uvicorn has stopped accepting and finished in-flight requests; drain the rest,
        # unless the operator forced the quit (a second Ctrl-C): then refuse them at once
        forced = getattr(app.state, "force_exit", False)
        if forced:
            log.warning("force quit: the drain is cut short; queued requests are refused")
        await asyncio.to_thread(registry.stop, drain=not forced,
                                timeout=0.0 if forced else settings.drain_timeout_s)
        store_reads.shutdown()
        if history_store is None and state["store"] is not None:   # opened from the URL
            state["store"].close()

    app = FastAPI(title="arm-jax ranker", version=__version__, lifespan=lifespan,
                  description="Request-oriented ads ranking over AOT-compiled tiers.")
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.catalog = catalog
    if settings.token:   # an admin token alone guards /admin/* only (the handler checks it)
        app.add_middleware(BearerAuth, tokens=[t for t in (settings.token,
                                                           settings.admin_token) if t])

    def count_bad_request(request: Request) -> None:
        """`armjax_rejects_total` counts ranking requests; admin mistakes are not traffic."""
        if request.url.path == "/v1/rank":
            metrics.rejects.labels("bad_request").inc()

    @app.exception_handler(FieldError)
    async def _field_error(request: Request, e: FieldError):
        count_bad_request(request)
        return _error(e.status, e.field, e.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        err = e.errors()[0] if e.errors() else {"loc": ("body",), "msg": "invalid"}
        count_bad_request(request)
        return _error(422, ".".join(str(p) for p in err["loc"]), err["msg"])

    @app.exception_handler(ClientGone)
    async def _client_gone(request: Request, e: ClientGone):
        """Counted, not logged: a client's abort is no error of the server's."""
        if request.url.path == "/v1/rank":
            metrics.rejects.labels("client_gone").inc()
        return _error(400, "body", str(e), reason="client_gone")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception):
        # Starlette still re-raises it after this answer, so the server log has the traceback.
        if request.url.path == "/v1/rank":
            metrics.rejects.labels("internal").inc()
        return _error(500, "server", f"internal error: {type(e).__name__} (details in the "
                      "server log)", reason="internal")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        return _error(e.status_code, "path" if e.status_code in (404, 405) else "request",
                      str(e.detail), reason="http")

    @app.get("/healthz")
    @app.head("/healthz", include_in_schema=False)   # some load balancers probe with HEAD
    async def healthz() -> dict[str, Any]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    @app.head("/readyz", include_in_schema=False)
    async def readyz():
        """Ready once every executor is loaded and warmed, while every tier's worker runs."""
        if registry.ready:
            return {"status": "ready", "tiers": registry.order}
        return _error(503, "readyz", not_ready_reason(), reason="not_ready",
                      headers={"Retry-After": "1"})

    @app.get("/metrics")
    async def prom() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        """Request schema, limits, tiers (cheapest first) and their buckets."""
        return {
            "features": feats.__dict__ | {"tasks": list(feats.tasks)},
            "limits": {"max_candidates": registry.max_candidates,
                       "max_history": feats.max_history,
                       "max_body_bytes": body_limit},
            "policy": settings.policy,
            "catalog": None if catalog is None else {"items": catalog.num_items,
                                                     "fields": list(catalog.fields)},
            "tiers": [{"name": n, "history_len": executors[n].config.model.history_len,
                       "deadline_ms": executors[n].config.serving.deadline_ms,
                       "buckets": [list(b) for b in executors[n].buckets],
                       "flops_per_request": costs[i].flops_per_request,
                       "compute_ms": registry.models[n].snapshot()}
                      for i, n in enumerate(registry.order)],
            "ready": registry.ready,
            "versions": versions,
        }

    @app.post("/v1/rank", response_model=RankResponse,
              responses={400: {}, 401: {}, 413: {}, 415: {}, 422: {}, 503: {}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  **{t: {"schema": {"$ref": "#/components/schemas/RankRequest"}}
                     for t in BODY_TYPES},
                  ARROW_STREAM: {"schema": {"type": "string", "format": "binary",
                                            "description": "one row, RankRequest's fields "
                                                           "as columns"}}}}})
    async def rank(request: Request):
        """Score every candidate for every task; top-K ranking; tier and timings."""
        t_start = time.monotonic()
        raw = await read_body(request, body_limit, settings.body_timeout_s)
        req, arrays, wire = parse_rank_body(raw, request.headers.get("content-type", ""),
                                            feats, registry.max_candidates)
        if req.tier is not None and req.tier not in executors:
            raise FieldError("tier", f"unknown tier {req.tier!r}; tiers: {registry.order}")
        # The request's own fields are checked before any store read, so that a bad request
        # costs no round trip and never counts as a store fallback.
        batch = pack_batch(arrays, feats, registry.max_candidates, side_ids)
        if not registry.ready:
            metrics.rejects.labels("not_ready").inc()
            return _error(503, "server", not_ready_reason(), reason="not_ready",
                          headers={"Retry-After": "1"})
        arrays, history_source, store_failure = await fetch_history(
            req, arrays, batch.num_candidates, t_start)
        if history_source == "store":
            batch = pack_batch(arrays, feats, registry.max_candidates, side_ids)
        n = batch.num_candidates
        ctx = [req.context.model_dump() if req.context else {}]
        if store_failure is not None:   # history-free: the cheapest tier is all it is worth
            preferred = registry.order[0]
        else:
            preferred = req.tier or base_policy.choose(batch, ctx)[0]
        budget_ms = (req.deadline_ms or settings.deadline_ms
                     or executors[preferred].config.serving.deadline_ms)
        budget_ms -= (time.monotonic() - t_start) * 1e3
        routed = LoadAwarePolicy(
            FixedPolicy(preferred), registry.order,
            lambda tier, i: registry.admission.pressure(tier, n, budget_ms)).choose(batch)[0]
        try:
            decision = registry.admission.decide(routed, n, budget_ms)
        except Rejected as e:
            metrics.rejects.labels(e.reason).inc()
            return _error(503, "server", str(e), reason=e.reason,
                          headers={"Retry-After": str(e.retry_after_s)})
        tier = decision.tier
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        pending = Pending(batch=batch, n=n, deadline=now + budget_ms / 1e3, enqueued=now,
                          loop=loop, future=loop.create_future())
        try:
            registry.batchers[tier].submit(pending)
            scored = await asyncio.wait_for(pending.future, budget_ms / 1e3 + GRACE_S)
        except (DeadlineExceeded, asyncio.TimeoutError) as e:
            metrics.rejects.labels("deadline").inc()
            return _error(503, "deadline_ms", f"budget of {budget_ms:.0f} ms exhausted ({e})",
                          reason="deadline", headers={"Retry-After": "1"})
        except ShuttingDown as e:
            metrics.rejects.labels("shutting_down").inc()
            return _error(503, "server", str(e), reason="shutting_down",
                          headers={"Retry-After": "1"})
        except asyncio.CancelledError:
            # uvicorn cancels the requests still waiting when the SIGTERM drain runs past
            # --drain-timeout: answer them as refused (JSON 503), not uvicorn's bare 500
            # with a traceback in the log
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            metrics.rejects.labels("shutting_down").inc()
            return _error(503, "server", "the server is shutting down: its --drain-timeout "
                          "ran out before this request was served", reason="shutting_down",
                          headers={"Retry-After": "1"})
        except Exception as e:  # noqa: BLE001 - a failing executor is a JSON 500, counted
            log.exception("tier %r failed on a request", tier)
            metrics.rejects.labels("internal").inc()
            return _error(500, "server", f"tier {tier!r} failed on this request: "
                          f"{type(e).__name__} (details in the server log)", reason="internal")
        if not np.isfinite(scored.probs).all():     # JSON cannot carry it: a clear 500
            metrics.rejects.labels("non_finite_scores").inc()
            return _error(500, "model", f"tier {tier!r} scored NaN or inf for this request; "
                          "nothing was served", reason="non_finite_scores")
        total_ms = (time.monotonic() - t_start) * 1e3
        metrics.latency.labels(tier).observe(total_ms / 1e3)
        metrics.queue_wait.labels(tier).observe(scored.queue_ms / 1e3)
        degraded = tier != preferred or store_failure is not None
        metrics.requests.labels(tier, str(degraded).lower()).inc()
        ranking, top_scores = scored.top_indices, scored.top_scores
        if req.top_k is not None and req.top_k > len(ranking) and len(ranking) < n:
            # beyond the K the tier was exported with: ranked here from the scores, by the
            # executable's key (the first task's probability; ties to the lower index)
            key = scored.probs[:, 0]
            ranking = np.argsort(-key, kind="stable")[:req.top_k]
            top_scores = key[ranking]
        k = min(req.top_k or len(ranking), len(ranking))
        body = {
            "request_id": req.request_id, "tier": tier, "preferred_tier": preferred,
            "degraded": degraded,
            "degraded_reason": store_failure or ("load" if tier != preferred else None),
            "history_source": history_source, "tasks": list(feats.tasks),
            "scores": np.asarray(scored.probs, np.float64).round(7).tolist(),
            "ranking": [int(i) for i in ranking[:k]],
            "top_scores": [float(s) for s in top_scores[:k]],
            "bucket": list(scored.bucket), "batch_size": scored.batch_size,
            "timings": {"queue_ms": round(scored.queue_ms, 3),
                        "compute_ms": round(scored.compute_ms, 3),
                        "total_ms": round(total_ms, 3)},
        }
        wire = response_wire(request.headers.get("accept", ""), wire, arrow=can_arrow)
        if wire == "arrow":
            return Response(encode_response(body, scored.probs), media_type=ARROW_STREAM)
        if wire == "msgpack":
            return Response(msgpack.packb(body), media_type="application/msgpack")
        return JSONResponse(body)

    @app.post("/admin/reload", responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}})
    async def reload(request: Request):
        """Swap a tier's weights atomically: {"tier": NAME, "path": DIR}. Admin token only."""
        admin = settings.effective_admin_token
        if admin is None:
            return _error(403, "authorization", "admin endpoints are disabled: start the "
                          "server with --token or --admin-token", reason="forbidden")
        given = request.headers.get("authorization", "").partition(" ")[2].strip()
        if not hmac.compare_digest(given.encode(), admin.encode()):
            return _error(401, "authorization", "admin token required", reason="unauthorized",
                          headers={"WWW-Authenticate": "Bearer"})
        raw = await read_body(request, 64 * 1024, settings.body_timeout_s)
        req, _ = parse_body(ReloadRequest, raw, request.headers.get("content-type", ""))
        try:
            out = await in_daemon_thread(registry.reload, req.tier, req.path)
        except asyncio.CancelledError:   # the drain timeout ended with the swap still running
            if (task := asyncio.current_task()) is not None:
                task.uncancel()
            metrics.swaps.labels(req.tier, "error").inc()
            return _error(503, "server", "the server is shutting down; the swap was still "
                          "running and may or may not have completed", reason="shutting_down",
                          headers={"Retry-After": "1"})
        except RegistryError as e:
            raise FieldError("tier", str(e).partition(": ")[2] or str(e)) from None
        except WeightsNotFound as e:
            metrics.swaps.labels(req.tier, "not_found").inc()
            return _error(404, "path", str(e), reason="not_found")
        except IncompatibleWeights as e:
            metrics.swaps.labels(req.tier, "refused").inc()
            return _error(409, "path", f"refused, old weights keep serving: {e}",
                          reason="incompatible")
        except Exception as e:  # noqa: BLE001 - the old weights keep serving; say so in JSON
            log.exception("weight swap of tier %r from %s failed", req.tier, req.path)
            metrics.swaps.labels(req.tier, "error").inc()
            return _error(500, "path", f"swap failed, old weights keep serving: "
                          f"{type(e).__name__}: {e}", reason="internal")
        metrics.swaps.labels(req.tier, "ok").inc()
        return out

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        req_schema = RankRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        comps.update(req_schema.pop("$defs", {}))
        comps["RankRequest"] = req_schema
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
    return app


def _per_request_flops(ex: TierExecutor) -> float:
    """FLOPs of one request at the smallest batch bucket and the middle candidate bucket."""
    b = min(bb for bb, _ in ex.buckets)
    ns = sorted({n for _, n in ex.buckets})
    c = ex.cost_flops((b, ns[len(ns) // 2]))
    return float(c / b) if math.isfinite(c) else float("nan")
