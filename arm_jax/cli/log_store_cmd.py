"""`arm-jax store load|read|stats`: fill and inspect a user-log store (LMDB or Redis).

Logic lives in arm_jax/store (`load_events_file`, the backends' reads); this file parses
arguments and prints.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time

URL_HELP = "lmdb:///path (or a plain path: embedded LMDB) or redis://host:port/db"


def register(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser("store", help="fill and inspect a user-log store (LMDB or Redis)")
    ssub = st.add_subparsers(dest="store_action", metavar="ACTION", required=True)

    ld = ssub.add_parser("load", help="append the events of a CSV or .npz file (creates an "
                                      "LMDB store if there is none)")
    ld.add_argument("url", help=URL_HELP)
    ld.add_argument("file", help="CSV with a header naming user_id,item,action,ts (integers; "
                                 "ts in unix seconds), or .npz with those four arrays")
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

    sa = ssub.add_parser("stats", help="users stored and bytes used")
    sa.add_argument("url", help=URL_HELP)
    sa.set_defaults(func=_stats)


def _open(url: str, *, write: bool):
    """The store at `url`; LMDB read-only unless writing (reading never creates a store)."""
    from arm_jax.store import open_store

    if url.startswith(("redis://", "rediss://", "unix://")):
        return open_store(url)
    return open_store(url, readonly=not write)


def _load(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from arm_jax.store.events_file import load_events, read_events_file

    events = read_events_file(args.file)        # checked whole before the store is opened
    t0 = time.perf_counter()
    with _open(args.url, write=True) as store, \
            tqdm(total=int(events["ts"].size), unit="event", desc="load", unit_scale=True) as bar:
        out = load_events(store, events, progress=bar.update)
    print(f"loaded {out['events']} events of {out['users']} users into {args.url} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def _read(args: argparse.Namespace) -> int:
    from arm_jax.store.base import check_user

    user = check_user(args.user)
    if args.max_len is not None and args.max_len < 0:
        raise ValueError(f"--max-len={args.max_len}: must be >= 0")
    with _open(args.url, write=False) as store:
        ev = store.read(user)
    if args.before is not None or args.max_len is not None:
        ev = ev.before(args.before if args.before is not None else 2**62, args.max_len)
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
            when = dt.datetime.fromtimestamp(r["ts"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            print(f"{when:<20} {r['ts']:>11} {r['item']:>11} {r['action']:>6}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    with _open(args.url, write=False) as store:
        users = store.num_users()
        size = store.disk_bytes() if hasattr(store, "disk_bytes") else store.memory_bytes()
    where = "on disk" if hasattr(store, "disk_bytes") else "in Redis memory"
    print(f"{args.url}: {users} users, {size / 1e6:.2f} MB {where}")
    return 0
