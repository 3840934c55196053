"""`arm-jax serve`, `arm-jax loadgen`, and the `bench routing` / `bench serve` subcommands.

`register(sub)` adds the top-level commands; `register_bench(bsub)` adds the two
benchmarks under `arm-jax bench` (called from bench_cmd). Logic lives in `serving/`
and `arm_jax/bench/`; this file only parses arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from arm_jax.cli.argtypes import (fractions, non_negative_float, non_negative_int,
                                   positive_float, positive_int, positive_ints)
from serving.settings import LOG_LEVELS

if TYPE_CHECKING:
    from arm_jax.store.base import UserLogStore


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "serve", help="serve AOT artifacts over HTTP (POST /v1/rank)",
        description="Serve every tier of an artifact directory: dynamic batching, deadline-aware "
                    "admission, hot weight swap, Prometheus metrics. Binds 127.0.0.1 unless "
                    "--host says otherwise. SIGTERM drains in-flight requests.")
    s.add_argument("artifacts", nargs="?", help="artifact directory from `arm-jax export`")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind; a non-loopback one warns without --token")
    s.add_argument("--port", type=int, default=8000,
                   help="TCP port to bind (0: a free one, named in the start-up line)")
    s.add_argument("--token", default=os.environ.get("ARM_JAX_TOKEN"),
                   help="bearer token required on every endpoint (default: $ARM_JAX_TOKEN)")
    s.add_argument("--admin-token", default=os.environ.get("ARM_JAX_ADMIN_TOKEN"),
                   help="token for /admin/reload (default: $ARM_JAX_ADMIN_TOKEN, else --token)")
    s.add_argument("--policy", default="rules",
                   help="routing: rules | fixed:<tier> | learned:<policy.json>")
    s.add_argument("--deadline-ms", type=float, default=None,
                   help="default request budget (default: the routed tier's serving.deadline_ms)")
    s.add_argument("--batch-window-ms", type=float, default=2.0,
                   help="ms the batcher waits from a tier's oldest queued request to fill a "
                        "batch (0: no wait)")
    s.add_argument("--max-queue", type=int, default=64, help="waiting requests per tier")
    s.add_argument("--max-body-bytes", type=int, default=None,
                   help="larger bodies get 413 unread (default: 64 bytes per number of the "
                        "largest valid request plus 64 KiB; 1.4 MB for the bundled schema)")
    s.add_argument("--drain-timeout", type=float, default=30.0, help="seconds, on SIGTERM")
    s.add_argument("--body-timeout", type=float, default=2.0,
                   help="seconds a request body may take to arrive; past it, a 408")
    s.add_argument("--fake", default=None, metavar="TIERS",
                   help="serve deterministic fake executors for these config tiers "
                        "(e.g. small,medium,large) instead of artifacts: a demo / test mode")
    s.add_argument("--fake-delay-ms", type=non_negative_float, default=0.0,
                   help="ms each call of a --fake executor sleeps (simulated compute per batch)")
    s.add_argument("--history-store", default=None, metavar="URL",
                   help="user-log store for requests sending user_id instead of hist_* "
                        "(lmdb://PATH or redis://HOST:PORT/DB); outages degrade, never 5xx")
    s.add_argument("--history-timeout-ms", type=float, default=100.0,
                   help="most ms a request waits on --history-store (less if the history-free "
                        "fallback would miss its deadline)")
    s.add_argument("--catalog", default=None, metavar="PATH.npz",
                   help="item catalogue (ItemCatalog.save): side ids (e.g. advertiser, topic) "
                        "of history items sent without hist_side or read from the store; "
                        "without it they are unknown and scores are worse")
    s.add_argument("--log-level", default="warning", type=str.lower, choices=LOG_LEVELS,
                   help="log level of the server and uvicorn (stderr)")
    s.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides for --fake tiers")
    s.set_defaults(func=_serve)

    g = sub.add_parser("loadgen", help="open-loop load against a running server",
                       description="Send requests at --rate per second for --duration seconds "
                                   "(open loop) and report p50/p95/p99, throughput, tier mix "
                                   "and errors.")
    g.add_argument("--url", default="http://127.0.0.1:8000",
                   help="base URL of a running `arm-jax serve`")
    g.add_argument("--rate", type=positive_float, required=True, help="requests per second")
    g.add_argument("--duration", type=positive_float, required=True, help="seconds (bounded)")
    g.add_argument("--candidates", type=positive_int, default=64, help="candidates per request")
    g.add_argument("--history", type=non_negative_int, default=64,
                   help="inline history events per request")
    g.add_argument("--wire", choices=("json", "msgpack", "arrow"), default="json",
                   help="body format: JSON, msgpack or an Arrow IPC stream (needs pyarrow)")
    g.add_argument("--msgpack", action="store_true", help="the same as --wire msgpack")
    g.add_argument("--token", default=os.environ.get("ARM_JAX_TOKEN"),
                   help="the server's bearer token (default: $ARM_JAX_TOKEN)")
    g.add_argument("--max-in-flight", type=positive_int, default=512,
                   help="requests awaiting an answer at most; arrivals past it count as "
                        "client_dropped")
    g.add_argument("--out", default=None, help="also write the report as JSON")
    g.set_defaults(func=_loadgen)


def register_bench(bsub: argparse._SubParsersAction) -> None:
    r = bsub.add_parser("routing", help="routing policies: FLOPs per request vs AUC / NE")
    r.add_argument("--checkpoints", default="runs",
                   help="directory holding small/ and large/ checkpoints (arm-jax train); "
                        "medium/ is used when present")
    r.add_argument("--artifacts", default=None,
                   help="artifact directory: take tier FLOPs from its manifests")
    r.add_argument("--budgets", type=fractions, default=(0.2, 0.3, 0.5, 0.7),
                   help="learned-policy budgets, fractions of always-large FLOPs")
    r.add_argument("--candidates", type=positive_int, default=None,
                   help="candidates per request for the FLOPs figure (default: the data's)")
    r.add_argument("--max-requests", type=positive_int, default=None, help="cap held-out requests")
    r.add_argument("--out", default="bench-results/routing.json",
                   help="JSON results path; a PNG and the learned policy (<stem>-policy.json) "
                        "go beside it")
    r.set_defaults(func=_bench_routing)

    v = bsub.add_parser("serve", help="server latency vs the executable alone; 2x overload")
    v.add_argument("artifacts", help="artifact directory from `arm-jax export`")
    v.add_argument("--tier", default="large",
                   help="tier of the artifacts to time (served with --policy fixed:<tier>)")
    v.add_argument("--candidates", type=positive_int, default=256, help="candidates per request")
    v.add_argument("--history", type=non_negative_int, default=None,
                   help="events (default: tier's L)")
    v.add_argument("--duration", type=positive_float, default=10.0, help="seconds per load phase")
    v.add_argument("--batch-window-ms", type=non_negative_float, default=None,
                   help="the server's batching window (default: the server's, 2 ms); 0 runs "
                        "a lone request at once")
    v.add_argument("--wire", choices=("json", "msgpack", "arrow"), default="json",
                   help="request and answer format (arrow needs pyarrow)")
    v.add_argument("--out", default="bench-results/serve.json",
                   help="JSON results path; a PNG is written beside it")
    v.set_defaults(func=_bench_serve)

    w = bsub.add_parser("wire", help="/v1/rank body formats: JSON vs msgpack vs Arrow IPC",
                        description="Per request: client encode, server decode + pack, "
                                    "answer encode and body bytes for JSON, msgpack and "
                                    "Arrow IPC bodies (needs pyarrow), at each candidate "
                                    "count; no server or model involved.")
    w.add_argument("--tier", default="large", help="whose request schema to use")
    w.add_argument("--candidates", type=positive_ints, default=(16, 256, 1024),
                   help="candidates per request, comma-separated (each <= "
                        "features.max_candidates)")
    w.add_argument("--history", type=non_negative_int, default=256,
                   help="inline history events per request")
    w.add_argument("--repeats", type=positive_int, default=15,
                   help="timed rounds per count, median (formats interleaved)")
    w.add_argument("--out", default="bench-results/wire.json",
                   help="JSON results path; a PNG is written beside it")
    w.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides of the requests' schema, e.g. features.max_history=512")
    w.set_defaults(func=_bench_wire)


def _bench_wire(args: argparse.Namespace) -> int:
    from serving.wire_bench import run_wire_bench

    run_wire_bench(tier=args.tier, candidates=args.candidates, history=args.history,
                   repeats=args.repeats, overrides=tuple(args.overrides), out_json=args.out)
    print(f"wrote {args.out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from serving.settings import ServerSettings

    if (args.artifacts is None) == (args.fake is None):
        raise ValueError("give an artifact directory or --fake TIERS (not both)")
    if args.overrides and not args.fake:
        raise ValueError(f"key=value overrides ({' '.join(args.overrides)}) apply to --fake "
                         "tiers only: an artifact directory serves the configs it was "
                         "exported with")
    settings = ServerSettings(
        host=args.host, port=args.port, token=args.token, admin_token=args.admin_token,
        max_body_bytes=args.max_body_bytes, deadline_ms=args.deadline_ms,
        batch_window_ms=args.batch_window_ms, max_queue=args.max_queue, policy=args.policy,
        drain_timeout_s=args.drain_timeout, body_timeout_s=args.body_timeout,
        log_level=args.log_level,
        history_store=args.history_store, history_timeout_ms=args.history_timeout_ms,
        catalog=args.catalog)
    from serving.server import configure_logging

    configure_logging(args.log_level)       # the server's warnings while loading, too
    catalog = None
    if args.catalog:   # a bad file fails here, before any tier is loaded
        from arm_jax.data.catalog import ItemCatalog

        catalog = ItemCatalog.load(args.catalog)
    from serving.server import bind_socket, serve_forever

    store = _open_history_store(args.history_store) if args.history_store else None
    sock = None
    try:   # the store and the socket are closed also when a tier fails to load
        sock = bind_socket(args.host, args.port)   # a taken port fails before any tier loads
        if args.host not in ("127.0.0.1", "localhost", "::1") and not args.token:
            print(f"arm-jax: warning: binding {args.host} without --token", file=sys.stderr)
        executors = _load_executors(args)
        from serving.app import create_app

        app = create_app(executors, settings, catalog=catalog, history_store=store)
        side = f"; catalogue of {catalog.num_items} items" if catalog is not None else ""
        host = f"[{args.host}]" if ":" in args.host else args.host
        port = sock.getsockname()[1]
        print(f"arm-jax: serving {', '.join(executors)} on http://{host}:{port} (policy "
              f"{settings.policy}{side}; /docs for the API)", file=sys.stderr, flush=True)
        serve_forever(app, settings, sock)
    finally:
        if sock is not None:
            sock.close()
        if store is not None:
            store.close()
    return 0


def _load_executors(args: argparse.Namespace) -> dict:
    """The tiers to serve: AOT artifacts, or `--fake` executors (no model code)."""
    if args.fake:
        from arm_jax.config import load_tier
        from serving.executor import FakeExecutor

        return {n: FakeExecutor(load_tier(n, args.overrides), delay_ms=args.fake_delay_ms)
                for n in args.fake.split(",") if n}
    from serving.executor import load_artifact_executors

    return load_artifact_executors(args.artifacts)


def _open_history_store(url: str) -> UserLogStore:
    """The store the server reads, opened read-only and checked once here: stop on a store
    that is not there (a mistyped LMDB path); only warn on an unreachable Redis, an outage
    the server serves through (degraded) until it comes back."""
    from arm_jax.store import open_store
    from arm_jax.store.base import InvalidStoreUrl, StoreUnavailable

    try:
        store = open_store(url, readonly=True)
    except InvalidStoreUrl as e:
        raise InvalidStoreUrl(f"--history-store: {e}") from None
    except StoreUnavailable as e:
        raise StoreUnavailable(f"--history-store: {e}; fill one with `arm-jax store load "
                               f"{url} EVENTS.csv`") from None
    try:
        what = store.check()
    except StoreUnavailable as e:
        print(f"arm-jax: warning: --history-store: {str(e).rstrip('.')}; requests sending "
              "only user_id are served history-free on the cheapest tier until it answers",
              file=sys.stderr)
        return store
    print(f"arm-jax: history store {url}: {what}", file=sys.stderr)
    return store


def _loadgen(args: argparse.Namespace) -> int:
    from serving.loadgen import format_report, run_load

    if args.duration > 3600:
        raise ValueError(f"--duration={args.duration}: at most 3600 seconds")
    if args.out:        # before the load, not a traceback after up to an hour of it
        from arm_jax.data.outputs import check_output_file

        check_output_file(args.out, "--out")
    report = run_load(args.url, rate=args.rate, duration=args.duration,
                      candidates=args.candidates, history=args.history, token=args.token,
                      wire="msgpack" if args.msgpack else args.wire,
                      max_in_flight=args.max_in_flight)
    print(format_report(report))
    if args.out:
        from arm_jax.bench.timing import write_json

        write_json(args.out, report)
        print(f"wrote {args.out}")
    return 0


def _bench_routing(args: argparse.Namespace) -> int:
    from arm_jax.bench.routing import run_routing_bench

    res = run_routing_bench(args.checkpoints, artifacts=args.artifacts, budgets=args.budgets,
                            candidates=args.candidates, max_requests=args.max_requests,
                            out_json=args.out)
    print(json.dumps(res.get("target", {}), indent=2))
    print(f"wrote {args.out}")
    if res["learned"].get("policy_file"):
        print(f"wrote {res['learned']['policy_file']} (learned policy at budget "
              f"{res['learned']['policy_budget']}: arm-jax serve --policy "
              f"learned:{res['learned']['policy_file']})")
    return 0


def _bench_serve(args: argparse.Namespace) -> int:
    from serving.serve_bench import run_serve_bench

    run_serve_bench(args.artifacts, tier=args.tier, candidates=args.candidates,
                    history=args.history, duration=args.duration,
                    batch_window_ms=args.batch_window_ms, wire=args.wire, out_json=args.out)
    print(f"wrote {args.out}")
    return 0
