"""`arm-jax store load|read|check|stats|compact|export|delete|catalog`: fill, inspect and maintain
a user-log store (LMDB or Redis), and build the item catalogue its histories are joined
with.

Logic lives in arm_jax/store (`load_events`, the backends' reads) and
arm_jax/data/catalog.py (`catalog_from_csv`); this file parses arguments and prints.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

URL_HELP = "lmdb:///path (or a plain path: embedded LMDB) or redis://host:port/db"
COMPRESS_HELP = ("write the logs compressed (codec version 2: about 2.2x smaller on disk or in "
                 "Redis memory; each read inflates them, ~0.1 ms per 1,800-event log, so "
                 "training joins run slower); a compressed log stays compressed whoever "
                 "appends to it, and every reader handles both forms")


def register(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser("store", help="fill and inspect a user-log store (LMDB or Redis)")
    ssub = st.add_subparsers(dest="store_action", metavar="ACTION", required=True)

    ld = ssub.add_parser("load", help="append the events of a CSV, .npz or .parquet file "
                                      "(creates an LMDB store if there is none); events "
                                      "already loaded are skipped")
    ld.add_argument("url", help=URL_HELP)
    ld.add_argument("file", help="CSV with a header naming user_id,item,action,ts (integers; "
                                 "ts in unix seconds), or .npz / .parquet with those four "
                                 "arrays / columns")
    ld.add_argument("--again", action="store_true",
                    help="append even events this store has loaded before (by default a "
                         "second load of the same events, or a re-run after a failure, "
                         "skips what is already stored)")
    ld.add_argument("--compress", action="store_true", help=COMPRESS_HELP)
    ld.add_argument("--tier", default=None, metavar="NAME",
                    help="refuse the file (before the store is opened) if an action is not "
                         "below this tier's features.num_action_types: training on it "
                         "would stop at that user (default: any action in [0, 255])")
    ld.add_argument("--override", dest="overrides", action="extend", nargs="+", default=[],
                    metavar="KEY=VALUE",
                    help="with --tier: the config overrides training will run with (those "
                         "`arm-jax train` takes), e.g. features.num_action_types=8")
    ld.set_defaults(func=_load)

    rd = ssub.add_parser("read", help="one user's events, oldest first")
    rd.add_argument("url", help=URL_HELP)
    rd.add_argument("--user", type=int, required=True, help="user id")
    rd.add_argument("--before", type=int, default=None, metavar="TS",
                    help="only events strictly before this unix time (the point-in-time cut)")
    rd.add_argument("--max-len", type=int, default=None, metavar="N",
                    help="keep the N most recent of those")
    rd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    rd.set_defaults(func=_read)

    ca = ssub.add_parser("catalog", help="build the item catalogue (`serve --catalog`) from "
                                         "a CSV of items and their side ids")
    ca.add_argument("items", help="CSV with a header: item, then one column of side ids per "
                                  "field (e.g. item,advertiser,topic)")
    ca.add_argument("--fields", type=_fields_arg, required=True, metavar="J,J,...",
                    help="the tiers' features.history_side_fields: which candidate sparse "
                         "fields the side columns are (in order)")
    ca.add_argument("--columns", default=None, metavar="NAME,NAME,...",
                    help="the side columns, in the order of --fields (default: every column "
                         "but item, in file order)")
    ca.add_argument("--out", required=True, help="catalogue file to write (.npz)")
    ca.set_defaults(func=_catalog)

    co = ssub.add_parser("compact", help="rewrite each user's log as one chunk (Redis logs "
                                         "appended one event at a time read slower)")
    co.add_argument("url", help=URL_HELP)
    co.add_argument("--compress", action="store_true",
                    help="also rewrite plain logs as compressed ones (about 2.2x smaller; "
                         "see `store load --compress`)")
    co.set_defaults(func=_compact)

    ex = ssub.add_parser("export", help="write every user's log as an events file (a "
                                        "backup, or to move between LMDB and Redis)")
    ex.add_argument("url", help=URL_HELP)
    ex.add_argument("file", help="events file to write: .csv, .npz or .parquet (what "
                                 "`store load` reads)")
    ex.set_defaults(func=_export)

    de = ssub.add_parser("delete", help="remove users' logs (e.g. a deletion request)")
    de.add_argument("url", help=URL_HELP)
    de.add_argument("--user", type=int, action="append", required=True, dest="users",
                    metavar="ID", help="user id (repeat for several)")
    de.set_defaults(func=_delete)

    ck = ssub.add_parser("check", help="read every user's log and list each one a join or "
                                       "a request would refuse (damaged values, actions "
                                       "beyond a tier's, unsorted times); exit 1 if any")
    ck.add_argument("url", help=URL_HELP)
    ck.add_argument("--tier", default=None, metavar="NAME",
                    help="also check every stored action against this tier's "
                         "features.num_action_types (what training and serving refuse)")
    ck.add_argument("--override", dest="overrides", action="extend", nargs="+", default=[],
                    metavar="KEY=VALUE", help="with --tier: the config overrides training "
                                              "or serving runs with")
    ck.add_argument("--json", action="store_true",
                    help="print the report as JSON (every problem) instead of a summary")
    ck.add_argument("--show", type=int, default=20, metavar="N",
                    help="problems listed in the summary (default 20; --json lists all)")
    ck.set_defaults(func=_check)

    sa = ssub.add_parser("stats", help="users stored and bytes used")
    sa.add_argument("url", help=URL_HELP)
    sa.set_defaults(func=_stats)


def _fields_arg(text: str) -> list[int]:
    """`--fields 1,2`."""
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a comma list of field indices such as 1,2") from None


def _open(url: str, *, write: bool, compress: bool = False):
    """The store at `url`; read-only unless writing (reading never creates a store); a
    Redis is checked to answer. Every command here is batch work (a load, an export of
    every log): Redis waits BULK_TIMEOUT_S, not the serving path's 0.5 s."""
    from arm_jax.store import is_redis_url, open_store

    kwargs = {"compress": True} if compress else {}
    store = open_store(url, readonly=not write, bulk=True, **kwargs)
    if is_redis_url(url):       # connects lazily: one PING, so a server that does not answer
        try:                    # is one line before any progress bar or partial work
            store.check()
        except BaseException:
            store.close()
            raise
    return store


def _shown(url: str) -> str:
    """`url` as printed: any password redacted."""
    from arm_jax.store.base import redact_url

    return redact_url(url)


def _load(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from arm_jax.store.events_file import check_action_limit, load_events, read_events_file

    limit = _tier_action_limit(args.tier, args.overrides)
    events = read_events_file(args.file)        # checked whole before the store is opened
    if limit is not None:
        tier = f"{args.tier} with {' '.join(args.overrides)}" if args.overrides else args.tier
        check_action_limit(events, limit, args.file, tier)
    t0 = time.perf_counter()
    with _open(args.url, write=True, compress=args.compress) as store, \
            tqdm(total=int(events["ts"].size), unit="event", desc="load", unit_scale=True) as bar:
        out = load_events(store, events, once=not args.again, progress=bar.update)
    skipped = (f" ({out['skipped']} of them were already stored and were skipped; --again "
               "appends them anyway)" if out["skipped"] else "")
    print(f"loaded {out['events']} events of {out['users']} users into {_shown(args.url)} "
          f"in {time.perf_counter() - t0:.1f} s{skipped}")
    return 0


def _read(args: argparse.Namespace) -> int:
    from arm_jax.store.base import TS_LIMIT, check_cut_ts, check_user

    user = check_user(args.user)
    if args.before is not None:
        check_cut_ts(args.before, "--before")
    if args.max_len is not None and args.max_len < 0:
        raise ValueError(f"--max-len={args.max_len}: must be >= 0")
    with _open(args.url, write=False) as store:
        ev = store.read(user)
    if args.before is not None or args.max_len is not None:
        ev = ev.before(args.before if args.before is not None else TS_LIMIT, args.max_len)
    rows = [{"ts": int(t), "item": int(i), "action": int(a)}
            for t, i, a in zip(ev.ts, ev.item, ev.action)]
    if args.json:
        print(json.dumps({"user_id": user, "events": rows}))
        return 0
    print(f"user {user}: {len(rows)} events" + (f" before {args.before}" if args.before
                                                  is not None else ""))
    if rows:
        print(f"{'time (UTC)':<20} {'ts':>11} {'item':>11} {'action':>6}")
        for r in rows:
            when = _utc(r["ts"])
            print(f"{when:<20} {r['ts']:>11} {r['item']:>11} {r['action']:>6}")
    return 0


def _utc(ts: int) -> str:
    """ts as a UTC time, or "(out of range)": a store filled before ts were bounded to
    [0, 2^32) may hold milliseconds, which must not stop the table half-way."""
    try:
        return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):
        return "(out of range)"


def _compact(args: argparse.Namespace) -> int:
    with _open(args.url, write=False):
        pass                                   # a missing LMDB store is an error, not created
    t0 = time.perf_counter()
    with _open(args.url, write=True, compress=args.compress) as store:
        done = store.compact()
    form = "one compressed chunk" if args.compress else "one chunk"
    print(f"{_shown(args.url)}: rewrote {done} users' logs as {form} in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


def _export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from arm_jax.store.events_file import check_events_output, export_events

    check_events_output(Path(args.file))       # a bad FILE before the store is read
    t0 = time.perf_counter()
    with _open(args.url, write=False) as store, \
            tqdm(unit="user", desc="export", unit_scale=True) as bar:
        out = export_events(store, args.file, progress=bar.update)
    print(f"exported {out['events']} events of {out['users']} users from {_shown(args.url)} "
          f"to {args.file} in {time.perf_counter() - t0:.1f} s")
    return 0


def _delete(args: argparse.Namespace) -> int:
    from arm_jax.store.base import check_user

    users = list(dict.fromkeys(check_user(u) for u in args.users))   # checked before opening
    with _open(args.url, write=False):
        pass                                   # a missing LMDB store is an error, not created
    with _open(args.url, write=True) as store:
        gone = store.delete(users)
    print(f"{_shown(args.url)}: deleted the logs of {gone} of {len(users)} users "
          f"({len(users) - gone} had none)")
    return 0


def _tier_action_limit(tier: str | None, overrides: list[str]) -> int | None:
    """`features.num_action_types` of --tier with --override (None without --tier; an
    --override without --tier is refused)."""
    from arm_jax.config import ConfigError, load_tier

    if overrides and tier is None:
        raise ConfigError(f"--override {overrides[0]}: overrides apply to --tier's "
                          "config; give --tier NAME too")
    return None if tier is None else load_tier(tier, overrides).features.num_action_types


def _check(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from arm_jax.store.check import check_store

    if args.show < 0:
        raise ValueError(f"--show={args.show}: must be >= 0")
    limit = _tier_action_limit(args.tier, args.overrides)     # before the store is opened
    t0 = time.perf_counter()
    with _open(args.url, write=False) as store, \
            tqdm(unit="user", desc="check", unit_scale=True, disable=args.json) as bar:
        report = check_store(store, num_action_types=limit, progress=bar.update)
    if args.json:
        print(json.dumps(report.to_json()))
        return 0 if report.ok else 1
    span = (f", {_utc(report.first_ts)} .. {_utc(report.last_ts)} UTC"
            if report.first_ts is not None else "")
    actions = (f", actions checked against features.num_action_types={limit} of tier "
               f"{args.tier}" if limit is not None else "")
    print(f"{report.url}: {report.users} users, {report.events} events (longest log "
          f"{report.max_events}{span}){actions}; read in {time.perf_counter() - t0:.1f} s")
    if report.ok:
        print("ok: every log reads back whole and in time order")
        return 0
    print(f"{report.summary()}:")
    for p in report.problems[:args.show]:
        print(f"  {p.kind}: {p.message}")
    if len(report.problems) > args.show:
        print(f"  ... and {len(report.problems) - args.show} more (--json lists every one)")
    return 1


def _stats(args: argparse.Namespace) -> int:
    with _open(args.url, write=False) as store:
        users = store.num_users()
        size, where = store.size()
    print(f"{_shown(args.url)}: {users} users, {size / 1e6:.2f} MB {where}")
    return 0


def _catalog(args: argparse.Namespace) -> int:
    from arm_jax.batch import UNKNOWN_SIDE
    from arm_jax.data.catalog import ItemCatalog, catalog_from_csv, check_fields

    check_fields(args.fields, "--fields")      # bad --fields or --out before the table is read
    ItemCatalog.save_path(args.out)
    columns = None if args.columns is None else [c.strip() for c in args.columns.split(",")]
    catalog = catalog_from_csv(args.items, args.fields, columns)
    path = catalog.save(args.out)
    known = int((catalog.side != UNKNOWN_SIDE).any(axis=1).sum())
    print(f"wrote {path}: {catalog.num_items} item rows ({known} with known side ids), "
          f"fields {list(catalog.fields)}")
    return 0
