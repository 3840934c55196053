"""Training examples on disk: one `.npz` or `.parquet` per split, without histories.

An examples file holds what a logged request knows at its time, and its labels; the
user's history is joined from a user-log store at read time (`arm_jax.data.join`), so the
file stays small however long the histories are. Arrays, R requests, N candidate slots,
T tasks (the names of `Examples`):

    user_id [R] int, ts [R] int (unix seconds), req_sparse [R, f_r] int,
    req_dense [R, e_r] float, cand_sparse [R, N, f_c] int, cand_dense [R, N, e_c] float,
    cand_mask [R, N] bool (or 0/1), labels [R, N, T] in [0, 1];
    optional: tasks [T] str (checked against the config's tasks), true_prob [R, N, T].

The same arrays as Parquet (one row per request, candidates as nested lists, a varying
number per request allowed): `arm_jax.data.examples_parquet`; needs pyarrow
(`arm-jax[parquet]`). Both formats go through the same checks.

`load_examples` checks a file against a tier's FeaturesConfig before any training starts
and raises ExamplesFileError naming the file, the array and the limit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from arm_jax.batch import BatchError, expected_widths, make_batch
from arm_jax.config import FeaturesConfig
from arm_jax.data.examples_parquet import read_examples_parquet, write_examples_parquet
from arm_jax.data.outputs import check_input_file, replaced_when_written
from arm_jax.data.examples import Examples, labels_problem
from arm_jax.store.base import InvalidEvents, check_cut_ts

FORMAT_VERSION = 1
SUFFIXES = (".npz", ".parquet")
REQUIRED = ("user_id", "ts", "req_sparse", "req_dense", "cand_sparse", "cand_dense",
            "cand_mask", "labels")


class ExamplesFileError(ValueError):
    """An examples file is missing, unreadable, or does not fit the features config."""


def save_examples(examples: Examples, path: str | Path) -> Path:
    """Write `examples` as an uncompressed .npz or a .parquet (by the suffix; parent
    directories created); the path. Both read back bit for bit. The file appears whole
    or not at all, and a failed write leaves an earlier file there as it was.

    The arrays first pass `load_examples`'s checks that need no config (ranks, dtypes,
    value ranges: finite labels in [0, 1], ts in unix seconds, ...): ExamplesFileError
    naming the file and the array, and nothing is written, rather than a file that no
    load would take over a good one."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ExamplesFileError(f"{path}: an examples file must end in .npz or .parquet")
    arrays = {name: getattr(examples, name) for name in REQUIRED}
    if not np.isnan(examples.true_prob).all():
        arrays["true_prob"] = examples.true_prob
    try:        # what load_examples checks, but against the examples' own tasks and widths
        _checked_examples({**arrays, "tasks": np.asarray(examples.tasks)},
                          tuple(examples.tasks), None)
    except (ExamplesFileError, BatchError) as e:
        raise ExamplesFileError(f"{path}: {e}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_when_written(path) as tmp:    # never seen half-written, even if killed
        if path.suffix == ".parquet":
            write_examples_parquet(arrays, tuple(examples.tasks), FORMAT_VERSION, tmp)
        else:
            with tmp.open("wb") as f:     # a file, not a name: savez would add ".npz"
                np.savez(f, format_version=np.int64(FORMAT_VERSION),
                         tasks=np.asarray(examples.tasks), **arrays)
    return path


def load_examples(path: str | Path, features: FeaturesConfig) -> Examples:
    """Read and check an examples file (.npz or .parquet) against `features` (widths,
    limits, value ranges)."""
    path = check_input_file(path, "examples file", ExamplesFileError)
    if path.suffix not in SUFFIXES:
        raise ExamplesFileError(f"{path}: expected a .npz or .parquet examples file, got "
                                f"{path.suffix or 'no suffix'}")
    if path.suffix == ".parquet":
        arrays = _read_parquet(path, features.max_candidates)
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001 - zip, pickle and format errors alike
            raise ExamplesFileError(f"{path}: not a readable .npz ({type(e).__name__}: "
                                    f"{e})") from e
    try:
        return _examples_from_arrays(arrays, features)
    except (ExamplesFileError, BatchError) as e:
        raise ExamplesFileError(f"{path}: {e}") from None


def _read_parquet(path: Path, max_candidates: int) -> dict[str, np.ndarray]:
    try:
        return read_examples_parquet(path, max_candidates)
    except ImportError as e:
        raise ExamplesFileError(f"{path}: {e}") from None
    except ValueError as e:         # missing columns, nulls, ragged widths (ArrowInvalid too)
        raise ExamplesFileError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - pyarrow's errors for a file that is not Parquet
        raise ExamplesFileError(f"{path}: not a readable .parquet ({type(e).__name__}: "
                                f"{e})") from e


def _examples_from_arrays(a: dict[str, np.ndarray], f: FeaturesConfig) -> Examples:
    return _checked_examples(a, tuple(f.tasks), expected_widths(f))


def _checked_examples(a: dict[str, np.ndarray], tasks: tuple[str, ...],
                      expected: dict[str, int] | None) -> Examples:
    """Examples from a file's arrays, every value checked; `tasks` and `expected`
    (make_batch's widths and limits) are the config's on load, and on save the examples'
    own tasks and no widths."""
    version = _format_version(a.get("format_version", FORMAT_VERSION))
    if version != FORMAT_VERSION:
        raise ExamplesFileError(f"format_version={version}: this arm-jax reads "
                                f"{FORMAT_VERSION}")
    missing = [k for k in REQUIRED if k not in a]
    if missing:
        raise ExamplesFileError(f"missing arrays {missing} (has {sorted(a)})")
    if "tasks" in a and _file_tasks(a["tasks"]) != tasks:
        raise ExamplesFileError(f"tasks: the file's {[str(t) for t in a['tasks']]} are not "
                                f"the config's features.tasks={list(tasks)}")
    user_id = _ids("user_id", a["user_id"], np.int64)
    ts = _ids("ts", a["ts"], np.int64)
    if ts.size:
        try:        # the unit of the store's events: a millisecond ts would join the future
            check_cut_ts(int(ts.max()))
        except InvalidEvents as e:
            raise ExamplesFileError(str(e)) from None
    r = user_id.shape[0]
    if r == 0:
        raise ExamplesFileError("user_id: the file holds no requests")
    if ts.shape != (r,):
        raise ExamplesFileError(f"ts: expected shape ({r},) like user_id, got {ts.shape}")
    # make_batch checks the request and candidate arrays (ranks, dtypes, ranges, widths,
    # the candidate limit) exactly as every training batch will be checked.
    batch = make_batch(req_sparse=a["req_sparse"], req_dense=a["req_dense"],
                       hist_item=np.zeros((r, 0), np.int32),
                       hist_action=np.zeros((r, 0), np.int32),
                       hist_gap=np.zeros((r, 0), np.float32), hist_len=np.zeros(r, np.int32),
                       cand_sparse=a["cand_sparse"], cand_dense=a["cand_dense"],
                       cand_mask=a["cand_mask"], expected=expected)
    if not np.asarray(batch.cand_mask).any():   # nothing to learn from or to score
        raise ExamplesFileError("cand_mask: no request has a real candidate (all false)")
    n = batch.cand_sparse.shape[1]
    labels = _reals("labels", a["labels"], (r, n, len(tasks)))
    problem = labels_problem(labels)
    if problem:
        raise ExamplesFileError(problem)
    true_prob = (_reals("true_prob", a["true_prob"], labels.shape) if "true_prob" in a
                 else np.full(labels.shape, np.nan, np.float32))
    in_range = (true_prob >= 0) & (true_prob <= 1)
    if not np.isnan(true_prob).all() and not in_range.all():
        bad = true_prob[~in_range][0]
        raise ExamplesFileError(f"true_prob: must be in [0, 1] (or all NaN: unknown), got "
                                f"{float(bad)}")   # else the oracle row reads nan
    return Examples(user_id=user_id, ts=ts, req_sparse=np.asarray(batch.req_sparse),
                    req_dense=np.asarray(batch.req_dense),
                    cand_sparse=np.asarray(batch.cand_sparse),
                    cand_dense=np.asarray(batch.cand_dense),
                    cand_mask=np.asarray(batch.cand_mask), labels=labels, true_prob=true_prob,
                    tasks=tasks)


def _format_version(value: object) -> int:
    v = np.asarray(value)
    if v.shape != () or not np.issubdtype(v.dtype, np.integer):
        raise ExamplesFileError(f"format_version: expected one integer, got shape {v.shape} "
                                f"of {v.dtype}")
    return int(v)


def _file_tasks(value: np.ndarray) -> tuple[str, ...]:
    t = np.asarray(value)
    if t.ndim != 1:     # np.savez(..., tasks="like") stores one string, not a list
        raise ExamplesFileError(f"tasks: expected a list of task names (shape (T,)), got "
                                f"shape {t.shape}")
    return tuple(str(x) for x in t)


def _ids(name: str, arr: np.ndarray, dtype: type) -> np.ndarray:
    if arr.ndim != 1:
        raise ExamplesFileError(f"{name}: expected one value per request, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ExamplesFileError(f"{name}: expected integers, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ExamplesFileError(f"{name}: must be >= 0, got {int(arr.min())}")
    if arr.size and arr.max() > np.iinfo(dtype).max:
        raise ExamplesFileError(f"{name}: must be <= {np.iinfo(dtype).max}")
    return arr.astype(dtype)


def _reals(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if arr.shape != shape:
        raise ExamplesFileError(f"{name}: expected shape {shape} (requests, candidates, "
                                f"tasks), got {arr.shape}")
    if arr.size and not (np.issubdtype(arr.dtype, np.floating)
                         or np.issubdtype(arr.dtype, np.integer)
                         or arr.dtype == bool):
        raise ExamplesFileError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float32)


def holdout_latest(examples: Examples, frac: float) -> tuple[Examples, Examples]:
    """(earlier, latest): the latest `frac` of the requests by timestamp held out, as a
    temporal split (a model is judged on requests after the ones it learned from)."""
    if not 0.0 < frac < 1.0:
        raise ValueError(f"holdout fraction {frac}: must be in (0, 1)")
    order = np.argsort(examples.ts, kind="stable")
    k = int(round(len(examples) * frac))
    if k < 1 or k >= len(examples):
        raise ExamplesFileError(f"{len(examples)} examples: too few to hold out {frac:.0%} "
                                "for evaluation; pass --eval-examples")
    return examples.take(np.sort(order[:-k])), examples.take(np.sort(order[-k:]))


__all__ = ["ExamplesFileError", "FORMAT_VERSION", "SUFFIXES", "save_examples", "load_examples",
           "holdout_latest"]
