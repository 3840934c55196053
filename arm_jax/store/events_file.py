"""Event files for filling a user-log store: CSV, .npz or .parquet with user_id, item,
action, ts.

An operator who serves with `--history-store` needs the logs in the store first; these
read a whole file, check every row, and only then append (a bad row never leaves half a
file in the store). CSV: a header naming the four columns (any order, other columns
ignored), integers only (`arm_jax.data.int_csv`). .npz: four 1-d integer arrays under
the same names. .parquet: four integer columns under those names (others ignored; `ts`
may also be a timestamp; needs pyarrow, `arm-jax[parquet]`).
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from arm_jax.data.arrow import flat_column, read_table, require_pyarrow, seconds_column
from arm_jax.data.int_csv import CsvError, read_int_csv
from arm_jax.data.outputs import check_input_file, check_output_file, replaced_when_written
from arm_jax.store.base import (CorruptValue, InvalidEvents, StoreError, UserLogStore,
                                check_events, check_user_ids)

COLUMNS = ("user_id", "item", "action", "ts")


def read_events_file(path: str | Path) -> dict[str, np.ndarray]:
    """{user_id, item, action, ts} int64 arrays of equal length, checked like `append` input.

    InvalidEvents names the file, the column and (for CSV) the line of the first bad value;
    FileNotFoundError if the file is missing.
    """
    path = check_input_file(path, "events file", InvalidEvents, FileNotFoundError)
    if path.suffix == ".npz":
        cols = _read_npz(path)
    elif path.suffix in (".csv", ".txt"):
        cols = _read_csv(path)
    elif path.suffix == ".parquet":
        cols = _read_parquet(path)
    else:
        raise InvalidEvents(f"events file {path}: expected .csv, .npz or .parquet, got "
                            f"{path.suffix!r}")
    try:   # the same checks as append: a file that passes here cannot fail half-way in
        user = check_user_ids(cols["user_id"])
        item, action, ts = check_events(cols["item"], cols["action"], cols["ts"])
    except InvalidEvents as e:
        raise InvalidEvents(f"events file {path}: {e}") from None
    if user.size != ts.size:
        raise InvalidEvents(f"events file {path}: user_id has {user.size} entries, ts {ts.size}")
    return {"user_id": user, "item": item, "action": action, "ts": ts}


def check_action_limit(events: dict[str, np.ndarray], num_action_types: int,
                       path: str | Path, tier: str) -> None:
    """InvalidEvents naming the file, the first user with an action >= num_action_types,
    the value and the limit (tier `tier`'s features.num_action_types), unless every action
    of `read_events_file(path)`'s arrays is below it: training on that tier would refuse
    the user's history part way through a run."""
    bad = np.flatnonzero(events["action"] >= num_action_types)
    if bad.size:
        i = int(bad[0])
        raise InvalidEvents(f"events file {path}: user {int(events['user_id'][i])}: action "
                            f"{int(events['action'][i])} >= features.num_action_types="
                            f"{num_action_types} of tier {tier} ({bad.size} such events; "
                            "actions must be in [0, num_action_types))")


def load_events(store: UserLogStore, events: dict[str, np.ndarray], *,
                chunk_events: int = 1 << 20, once: bool = True,
                progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Append `read_events_file`'s arrays to `store` -> {events, users, skipped}.

    Events are sorted by (user, ts, item, action) first, so each user's log is written in
    one append (two where a chunk boundary falls inside it) rather than rewritten once per
    chunk it appears in. With `once` (the default) each chunk is an `append_batch` whose id
    is a digest of all the events and the chunk's range: loading the same events again
    (from any file format, in any row order) skips every chunk already in the store, and a
    load that failed half-way resumes where it stopped. `skipped` counts the events of
    those chunks. The same `chunk_events` must be used for the ranges to match. With
    `once=False` every call appends (twice stores twice). `progress(n)` is called after
    each chunk of at most `chunk_events` events. A store failure mid-way raises with the
    number of events already written (with `once`, simply run the load again).
    """
    if chunk_events < 1:
        raise ValueError(f"chunk_events={chunk_events}: must be >= 1")
    order = np.lexsort((events["action"], events["item"], events["ts"], events["user_id"]))
    events = {k: np.ascontiguousarray(np.asarray(v, np.int64)[order])
              for k, v in events.items()}
    n = int(events["ts"].size)
    digest = events_digest(events) if once else ""
    skipped = 0
    for lo in range(0, n, chunk_events):
        hi = min(n, lo + chunk_events)
        part = [events[c][lo:hi] for c in COLUMNS]
        try:
            if once:
                skipped += 0 if store.append_batch(f"events-{digest}-{lo}-{hi}", *part) \
                    else hi - lo
            else:
                store.append_many(*part)
        except StoreError as e:
            again = "; run the load again: the chunks already stored are skipped" if once else ""
            if again and isinstance(e, CorruptValue):     # not passing: a log stored damaged
                again = ("; a run of the load again fails the same way until that log is "
                         "repaired or removed (`arm-jax store check`, `arm-jax store delete`); "
                         "the chunks already stored are skipped")
            raise type(e)(f"{e} (after {lo} of {n} events were written{again})") from None
        if progress is not None:
            progress(hi - lo)
    users = events["user_id"]                       # sorted: count the runs
    return {"events": n, "users": int(np.count_nonzero(np.diff(users)) + 1) if n else 0,
            "skipped": skipped}


def events_digest(events: dict[str, np.ndarray]) -> str:
    """sha256 (40 hex digits) of the event arrays (`COLUMNS`, as int64) in their order: the
    content, not the file. Batch ids of loads are built from it."""
    h = hashlib.sha256(str(events["ts"].size).encode())
    for c in COLUMNS:
        h.update(np.ascontiguousarray(events[c], np.int64).tobytes())
    return h.hexdigest()[:40]


def load_events_file(store: UserLogStore, path: str | Path, **kwargs: object) -> dict[str, int]:
    """Read and check the whole file, then append it (`load_events`) -> {events, users,
    skipped}."""
    return load_events(store, read_events_file(path), **kwargs)  # type: ignore[arg-type]


def export_events(store: UserLogStore, path: str | Path, *, users_per_read: int = 1000,
                  progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Write every user's log as an events file `store load` reads (.csv, .npz or
    .parquet, by the suffix) -> {events, users}: a backup, or a move between backends.

    Users are read `users_per_read` at a time (one batch read each) and the file is written
    once, at the end: the whole log is held in memory (32 bytes per event). `progress(n)`
    is called with the number of users read.
    """
    path = Path(path)
    check_events_output(path)
    if users_per_read < 1:
        raise ValueError(f"users_per_read={users_per_read}: must be >= 1")
    users = list(store.user_ids())
    parts: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
    for lo in range(0, len(users), users_per_read):
        batch = users[lo:lo + users_per_read]
        logs = store.read_many(batch)
        # one array per column per read, not per user: four small arrays per user cost
        # ~600 bytes whatever the log's length (20x the 32 bytes/event of a 2-event log)
        parts["user_id"].append(np.repeat(np.asarray(batch, np.int64), [len(e) for e in logs]))
        for c in ("item", "action", "ts"):
            parts[c].append(np.concatenate([getattr(e, c) for e in logs]).astype(np.int64))
        if progress is not None:
            progress(len(batch))
    cols = {c: np.concatenate(v) if v else np.zeros(0, np.int64) for c, v in parts.items()}
    write_events_file(path, cols)
    return {"events": int(cols["ts"].size), "users": len(users)}


def write_events_file(path: str | Path, cols: dict[str, np.ndarray]) -> Path:
    """Write {user_id, item, action, ts} arrays as the events file `read_events_file`
    reads, in the format of the suffix (.csv, .npz or .parquet; parents created).

    The file appears whole or not at all (`replaced_when_written`): a CSV cut off after
    whole lines parses cleanly, so a partial one would load as a smaller backup."""
    path = Path(path)
    check_events_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_when_written(path) as tmp:
        if path.suffix == ".csv":
            write_events_csv(tmp, *(cols[c] for c in COLUMNS))
        elif path.suffix == ".npz":
            with tmp.open("wb") as f:     # a file, not a name: savez would add ".npz"
                np.savez(f, **{c: cols[c] for c in COLUMNS})
        else:
            pa, pq = require_pyarrow()
            pq.write_table(pa.table({c: cols[c] for c in COLUMNS}), str(tmp))
    return path


def write_events_csv(path: str | Path, user_id: object, item: object, action: object,
                     ts: object) -> Path:
    """Write flat event arrays as a CSV `read_events_file` reads (tests, exports)."""
    path = Path(path)
    arr = np.stack([np.asarray(a, np.int64) for a in (user_id, item, action, ts)], axis=1)
    np.savetxt(path, arr, fmt="%d", delimiter=",", header=",".join(COLUMNS), comments="")
    return path


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    arrays = _npz_arrays(path)
    for c, a in arrays.items():
        if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise InvalidEvents(f"events file {path}: {c} must be a 1-d integer array, "
                                f"got {a.dtype} {a.shape}")
    return arrays     # cast to int64 by the checks, after the range checks


def _npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of an .npz. A damaged file (truncated, a crc mismatch, a bad array
    header), a lone .npy, or an array only pickle can load is InvalidEvents naming the
    file: numpy raises BadZipFile, zlib.error, EOFError or ValueError, lazily, per array."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"one {type(data).__name__}, not an archive of named arrays")
        with data:
            arrays = {c: _npz_array(data, c, path) for c in COLUMNS if c in data.files}
    except InvalidEvents:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise InvalidEvents(f"events file {path}: not a readable .npz ({e})") from None
    missing = [c for c in COLUMNS if c not in arrays]
    if missing:
        raise InvalidEvents(f"events file {path}: missing arrays {missing}; "
                            f"expected {list(COLUMNS)}")
    return arrays


def _npz_array(data: np.lib.npyio.NpzFile, name: str, path: Path) -> np.ndarray:
    """One array of an .npz; an object array (a pickle: never loaded) is InvalidEvents
    naming the file and the array."""
    try:
        return data[name]
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise
        raise InvalidEvents(f"events file {path}: {name}: an object array (pickled Python "
                            "objects are never loaded); expected a 1-d integer array") from None


def check_events_output(path: Path) -> None:
    """InvalidEvents unless `path` has an events file suffix and a file can be written
    there (not a directory, nor under a file): checked before a store is read."""
    if path.suffix not in (".csv", ".npz", ".parquet"):
        raise InvalidEvents(f"events file {path}: expected .csv, .npz or .parquet, got "
                            f"{path.suffix!r}")
    check_output_file(path, "events file", InvalidEvents)


def _read_parquet(path: Path) -> dict[str, np.ndarray]:
    try:
        table = read_table(path, list(COLUMNS))
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise InvalidEvents(f"missing columns {missing}; expected {list(COLUMNS)}")
        out = {c: seconds_column(table, c) if c == "ts" else flat_column(table, c)
               for c in COLUMNS}
    except ImportError as e:
        raise InvalidEvents(f"events file {path}: {e}") from None
    except ValueError as e:         # ArrowInvalid (not Parquet) is a ValueError too
        raise InvalidEvents(f"events file {path}: {e}") from None
    for c, a in out.items():
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise InvalidEvents(f"events file {path}: {c} must be an integer column, got "
                                f"{a.dtype}")
    return out


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    try:
        return read_int_csv(path, COLUMNS)
    except CsvError as e:
        raise InvalidEvents(f"events file {path}: {e}") from None


__all__ = ["COLUMNS", "events_digest", "read_events_file", "check_action_limit", "load_events",
           "load_events_file", "export_events", "check_events_output", "write_events_file",
           "write_events_csv"]
