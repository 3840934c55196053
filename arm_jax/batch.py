"""RequestBatch: the one packed format shared by training, export and serving.

A batch holds B requests. Each request is one person (request-level sparse ids,
dense features, and a history of L events, most recent first) and N candidate
ads (sparse ids, dense features, and a validity mask for padding).

Axis letters used across the project: b requests, c candidates, l history
events, f sparse fields, e dense features, d model width, t tokens, h heads.

Ids are raw non-negative integers; hashing into table rows happens in-graph.
History is stored most-recent-first so truncating to a tier's L is a slice.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import numpy as np

from arm_jax.argcheck import is_int


class BatchError(ValueError):
    """A batch field has the wrong shape, dtype or values."""


# A history event whose item's side fields are unknown (not in the catalogue, or the
# client did not send them): one reserved id, hashed like any other, never a real value.
UNKNOWN_SIDE = 2**31 - 1


@flax.struct.dataclass
class RequestBatch:
    """Packed requests. Shapes:

    req_sparse  int32   [b, f_r]     raw request sparse ids (>= 0)
    req_dense   float32 [b, e_r]     request dense features (finite)
    hist_item   int32   [b, l]       item ids of past events, most recent first
    hist_action int32   [b, l]       action type per event, in [0, num_action_types)
    hist_gap    float32 [b, l]       seconds from the event to the request (>= 0)
    hist_len    int32   [b]          number of valid events, in [0, l]
    hist_side   int32   [b, l, s]    side ids of each event's item (its values of the
                                     candidate fields `features.history_side_fields`,
                                     e.g. advertiser, topic); UNKNOWN_SIDE when unknown
    cand_sparse int32   [b, c, f_c]  raw candidate sparse ids (>= 0)
    cand_dense  float32 [b, c, e_c]  candidate dense features (finite)
    cand_mask   bool    [b, c]       True for real candidates, False for padding
    """

    req_sparse: jax.Array
    req_dense: jax.Array
    hist_item: jax.Array
    hist_action: jax.Array
    hist_gap: jax.Array
    hist_len: jax.Array
    hist_side: jax.Array
    cand_sparse: jax.Array
    cand_dense: jax.Array
    cand_mask: jax.Array

    @property
    def num_requests(self) -> int:
        """b: requests in the batch."""
        return self.req_sparse.shape[0]

    @property
    def num_candidates(self) -> int:
        """c: candidate slots per request (padded ones included)."""
        return self.cand_sparse.shape[1]

    @property
    def history_len(self) -> int:
        """l: history slots per request (the array's length, not a tier's L; hist_len holds
        each request's valid events)."""
        return self.hist_item.shape[1]

    def truncate_history(self, max_len: int) -> "RequestBatch":
        """Keep the `max_len` most recent events (a slice: history is newest first)."""
        if not is_int(max_len) or max_len < 0:
            # a negative slice end would drop the OLDEST events and set hist_len < 0
            raise BatchError(f"max_len: must be an integer >= 0, got {max_len!r}")
        if self.history_len <= max_len:
            return self
        return self.replace(
            hist_item=self.hist_item[:, :max_len],
            hist_action=self.hist_action[:, :max_len],
            hist_gap=self.hist_gap[:, :max_len],
            hist_side=self.hist_side[:, :max_len],
            hist_len=np.minimum(self.hist_len, max_len) if isinstance(self.hist_len, np.ndarray)
            else jax.numpy.minimum(self.hist_len, max_len),
        )


# field name -> (dtype kind, rank, which axes carry (b, c, l))
_INT_FIELDS = ("req_sparse", "hist_item", "hist_action", "hist_len", "hist_side", "cand_sparse")
_FLOAT_FIELDS = ("req_dense", "hist_gap", "cand_dense")
_RANKS = {
    "req_sparse": 2, "req_dense": 2, "hist_item": 2, "hist_action": 2, "hist_gap": 2,
    "hist_len": 1, "hist_side": 3, "cand_sparse": 3, "cand_dense": 3, "cand_mask": 2,
}


# make_batch's `expected` keys (expected_widths returns every one of them)
EXPECTED_KEYS = ("req_sparse_fields", "req_dense_features", "cand_sparse_fields",
                 "cand_dense_features", "history_side_fields", "history_len", "candidates",
                 "num_action_types")
INT32_MAX = int(np.iinfo(np.int32).max)


def _axes_wanted(b: int, c: int, l: int) -> dict[str, tuple[int | None, ...]]:
    """Every field's leading axes, from b (req_sparse), c (cand_sparse) and l (hist_item);
    None: a feature width, checked against the config elsewhere."""
    return {"req_dense": (b, None), "hist_item": (b, l), "hist_action": (b, l),
            "hist_gap": (b, l), "hist_len": (b,), "hist_side": (b, l, None),
            "cand_sparse": (b, c, None), "cand_dense": (b, c, None), "cand_mask": (b, c)}


def _check_axes(shapes: dict[str, tuple[int, ...]]) -> None:
    """BatchError naming the first field whose b, c or l axis is not the others'."""
    b, c, l = shapes["req_sparse"][0], shapes["cand_sparse"][1], shapes["hist_item"][1]
    for name, shape in _axes_wanted(b, c, l).items():
        got = shapes.get(name)
        if got is not None and any(w is not None and w != g for w, g in zip(shape, got)):
            pretty = ("(" + ", ".join("*" if w is None else str(w) for w in shape)
                      + ("," if len(shape) == 1 else "") + ")")
            raise BatchError(f"{name}: expected shape {pretty}, got {got}")


def dtype_problem(name: str, dtype: Any, integer: bool, what: str = "ids") -> str | None:
    """make_batch's dtype rule, as the message to raise (None: fine): ids are integers
    (not bool, not float: a float id is truncated when hashed), values real numbers."""
    dtype = np.dtype(dtype)
    if integer:
        if dtype.kind not in "iu":
            return f"{name}: expected integer {what}, got dtype {dtype}"
    elif dtype.kind not in "iuf" and not jax.numpy.issubdtype(dtype, jax.numpy.floating):
        return f"{name}: expected real numbers, got dtype {dtype}"
    return None


def checked_ids(name: str, arr: np.ndarray, what: str = "ids") -> np.ndarray:
    """`arr` as int32, or BatchError naming `name`: an integer dtype and every value in
    [0, 2^31 - 1] (what int32 holds; a larger id or timestamp would wrap)."""
    if arr.size:
        problem = dtype_problem(name, arr.dtype, integer=True, what=what)
        if problem:
            raise BatchError(problem)
        if arr.min() < 0:
            raise BatchError(f"{name}: {what} must be >= 0, got {int(arr.min())}")
        if arr.max() > INT32_MAX:
            raise BatchError(f"{name}: {what} must be <= {INT32_MAX}, got {int(arr.max())}")
    return arr.astype(np.int32)


def checked_reals(name: str, arr: np.ndarray) -> np.ndarray:
    """`arr` as float32, or BatchError naming `name`: real numbers, every one finite
    (in float32: a float64 past its range becomes inf)."""
    if arr.size:
        problem = dtype_problem(name, arr.dtype, integer=False)
        if problem:
            raise BatchError(problem)
    arr = arr.astype(np.float32)
    if arr.size and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise BatchError(f"{name}: values must be finite, got {arr[tuple(bad)]} at {bad}")
    return arr


def expected_widths(features: Any) -> dict[str, int]:
    """make_batch's `expected` for a FeaturesConfig: every width and limit it pins
    (including num_action_types: an action past the table reads NaN in the model)."""
    f = features
    return {"req_sparse_fields": f.req_sparse_fields, "req_dense_features": f.req_dense_features,
            "cand_sparse_fields": f.cand_sparse_fields,
            "cand_dense_features": f.cand_dense_features,
            "history_side_fields": len(f.history_side_fields),
            "history_len": f.max_history, "candidates": f.max_candidates,
            "num_action_types": f.num_action_types}


def check_feature_widths(batch: RequestBatch, features: Any) -> None:
    """Raise BatchError unless the batch's feature widths are the FeaturesConfig's, its
    ids are integers, its fields agree on b, c and l, and its request, candidate and
    history axes are not empty (make_batch pads an empty history).

    Reads static shapes and dtypes only, so it costs nothing under jit; a batch built for
    another schema otherwise fails deep inside the model with an unnamed shape error, and
    float ids would be truncated when hashed.
    """
    shapes = {}
    for name, rank in _RANKS.items():
        arr = getattr(batch, name)
        shapes[name] = shape = tuple(arr.shape)
        if len(shape) != rank:
            raise BatchError(f"{name}: expected rank {rank}, got shape {shape}")
        problem = (None if name == "cand_mask" else
                   dtype_problem(name, arr.dtype, integer=name in _INT_FIELDS))
        if problem:
            raise BatchError(problem)
    if shapes["req_sparse"][0] == 0:
        raise BatchError("req_sparse: a batch needs at least 1 request, got 0")
    if shapes["cand_sparse"][1] == 0:
        raise BatchError("cand_sparse: a request needs at least 1 candidate, got 0")
    if shapes["hist_item"][1] == 0:
        raise BatchError("hist_item: history axis of length 0; give at least one (masked) "
                         "event with hist_len 0, as make_batch does")
    _check_axes(shapes)
    widths = expected_widths(features)
    for name, key in (("req_sparse", "req_sparse_fields"), ("req_dense", "req_dense_features"),
                      ("cand_sparse", "cand_sparse_fields"),
                      ("cand_dense", "cand_dense_features"), ("hist_side", "history_side_fields")):
        shape, rank, width = tuple(getattr(batch, name).shape), _RANKS[name], widths[key]
        if len(shape) != rank or shape[-1] != width:
            raise BatchError(f"{name}: shape {shape}, expected rank {rank} with last "
                             f"dimension {key}={width} (features config)")


def _as_array(name: str, value: Any) -> np.ndarray:
    """np.asarray, with a ragged nested list named as a BatchError (numpy's own error names
    no field)."""
    try:
        return np.asarray(value)
    except ValueError as e:
        raise BatchError(
            f"{name}: not a rectangular array (rows of different lengths?): pad every "
            "request's history and candidates to one length, set hist_len to each request's "
            f"real event count and cand_mask False on padded candidates ({e})") from None


def _pad_empty_history(arrays: dict[str, np.ndarray]) -> None:
    """A history axis of length 0 (every request cold-start) becomes one masked event:
    the model reduces over that axis, and hist_len 0 already means "no history"."""
    b = arrays["hist_item"].shape[0]
    for name in ("hist_item", "hist_action", "hist_gap"):
        arrays[name] = np.zeros((b, 1), arrays[name].dtype)
    arrays["hist_side"] = np.full((b, 1, arrays["hist_side"].shape[2]), UNKNOWN_SIDE, np.int32)


def _check_actions(actions_bl: np.ndarray, hist_len_b: np.ndarray, num_action_types: int) -> None:
    """Actions of valid events (index < hist_len) must be < num_action_types; padded events
    are never read, so their values do not matter."""
    valid = np.arange(actions_bl.shape[1])[None, :] < hist_len_b[:, None]
    if valid.any():
        top = int(actions_bl[valid].max())
        if top >= num_action_types:
            raise BatchError(
                f"hist_action: must be < num_action_types={num_action_types}, got {top}")


def make_batch(
    *,
    req_sparse: Any,
    req_dense: Any,
    hist_item: Any,
    hist_action: Any,
    hist_gap: Any,
    hist_len: Any,
    cand_sparse: Any,
    cand_dense: Any,
    cand_mask: Any | None = None,
    hist_side: Any | None = None,
    num_action_types: int | None = None,
    expected: dict[str, int] | None = None,
) -> RequestBatch:
    """Validate numpy-like inputs once and pack them into a RequestBatch.

    `expected` may pin widths: keys among req_sparse_fields, req_dense_features,
    cand_sparse_fields, cand_dense_features, history_side_fields, history_len (max),
    candidates (max), num_action_types (used when the argument is None). `hist_side` None
    means every event's side ids are unknown (UNKNOWN_SIDE), with
    `expected["history_side_fields"]` columns (0 if not pinned). A history axis of length 0
    becomes one masked event (hist_len 0). Raises BatchError naming the field, the
    offending value and the limit.
    """
    unknown = [k for k in (expected or ()) if k not in EXPECTED_KEYS]
    if unknown:
        raise BatchError(f"expected: unknown key {unknown[0]!r}; the keys are "
                         f"{', '.join(EXPECTED_KEYS)}")
    raw = dict(
        req_sparse=req_sparse, req_dense=req_dense, hist_item=hist_item,
        hist_action=hist_action, hist_gap=hist_gap, hist_len=hist_len,
        cand_sparse=cand_sparse, cand_dense=cand_dense,
    )
    if hist_side is None:
        hist_item_arr = _as_array("hist_item", hist_item)
        width = (expected or {}).get("history_side_fields", 0)
        hist_side = np.full(hist_item_arr.shape + (width,), UNKNOWN_SIDE, np.int32)
    raw["hist_side"] = hist_side
    arrays: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        arr = _as_array(name, value)
        if arr.ndim != _RANKS[name]:
            raise BatchError(f"{name}: expected rank {_RANKS[name]}, got shape {arr.shape}")
        arrays[name] = (checked_ids(name, arr) if name in _INT_FIELDS
                        else checked_reals(name, arr))

    b = arrays["req_sparse"].shape[0]
    l = arrays["hist_item"].shape[1]
    c = arrays["cand_sparse"].shape[1]
    if b == 0:
        # refused like 0 candidates (and like select_bucket): the model has no empty path
        raise BatchError("req_sparse: a batch needs at least 1 request, got 0")
    if c == 0:
        raise BatchError("cand_sparse: a request needs at least 1 candidate, got 0 "
                         "(pad with a candidate whose cand_mask is False)")
    _check_axes({name: a.shape for name, a in arrays.items()})

    if cand_mask is None:
        mask = np.ones((b, c), dtype=bool)
    else:
        mask = _as_array("cand_mask", cand_mask)
        if mask.shape != (b, c):
            raise BatchError(f"cand_mask: expected shape {(b, c)}, got {mask.shape}")
        if mask.dtype != bool:
            if not np.isin(mask, (0, 1)).all():
                raise BatchError("cand_mask: expected booleans (0/1)")
            mask = mask.astype(bool)

    hist_len_arr = arrays["hist_len"]
    if hist_len_arr.size and hist_len_arr.max() > l:
        raise BatchError(f"hist_len: must be <= history length {l}, got {int(hist_len_arr.max())}")
    if arrays["hist_gap"].size and arrays["hist_gap"].min() < 0:
        raise BatchError(f"hist_gap: must be >= 0 seconds, got {float(arrays['hist_gap'].min())}")
    if num_action_types is None:
        num_action_types = (expected or {}).get("num_action_types")
    if num_action_types is not None:
        _check_actions(arrays["hist_action"], hist_len_arr, num_action_types)

    if expected:
        checks = {
            "req_sparse_fields": ("req_sparse", arrays["req_sparse"].shape[1]),
            "req_dense_features": ("req_dense", arrays["req_dense"].shape[1]),
            "cand_sparse_fields": ("cand_sparse", arrays["cand_sparse"].shape[2]),
            "cand_dense_features": ("cand_dense", arrays["cand_dense"].shape[2]),
            "history_side_fields": ("hist_side", arrays["hist_side"].shape[2]),
        }
        for key, (field, got) in checks.items():
            if key in expected and expected[key] != got:
                raise BatchError(f"{field}: expected {expected[key]} columns ({key}), got {got}")
        if "history_len" in expected and l > expected["history_len"]:
            raise BatchError(f"hist_item: history of {l} events exceeds the limit {expected['history_len']}")
        if "candidates" in expected and c > expected["candidates"]:
            raise BatchError(f"cand_sparse: {c} candidates exceed the limit {expected['candidates']}")

    if l == 0:
        _pad_empty_history(arrays)
    return RequestBatch(cand_mask=mask, **arrays)


def batch_spec(
    *, batch: int, candidates: int, history: int,
    req_sparse_fields: int, req_dense_features: int,
    cand_sparse_fields: int, cand_dense_features: int, history_side_fields: int = 0,
) -> RequestBatch:
    """A RequestBatch of jax.ShapeDtypeStruct: the one signature used by jit, AOT and export."""
    import jax.numpy as jnp

    s = jax.ShapeDtypeStruct
    return RequestBatch(
        req_sparse=s((batch, req_sparse_fields), jnp.int32),
        req_dense=s((batch, req_dense_features), jnp.float32),
        hist_item=s((batch, history), jnp.int32),
        hist_action=s((batch, history), jnp.int32),
        hist_gap=s((batch, history), jnp.float32),
        hist_len=s((batch,), jnp.int32),
        hist_side=s((batch, history, history_side_fields), jnp.int32),
        cand_sparse=s((batch, candidates, cand_sparse_fields), jnp.int32),
        cand_dense=s((batch, candidates, cand_dense_features), jnp.float32),
        cand_mask=s((batch, candidates), jnp.bool_),
    )


def batch_spec_for(features: Any, *, batch: int, candidates: int, history: int) -> RequestBatch:
    """batch_spec with every width taken from a FeaturesConfig."""
    f = features
    return batch_spec(batch=batch, candidates=candidates, history=history,
                      req_sparse_fields=f.req_sparse_fields,
                      req_dense_features=f.req_dense_features,
                      cand_sparse_fields=f.cand_sparse_fields,
                      cand_dense_features=f.cand_dense_features,
                      history_side_fields=len(f.history_side_fields))
