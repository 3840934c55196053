"""Routing policies: which tier should score this request?

Every policy maps a packed RequestBatch (plus optional per-request context such as a
declared intent or value) to one tier name per request, using request features only.

* `FixedPolicy`     always the same tier (the always-small/medium/large baselines).
* `RulesPolicy`     the cheapest tier whose history window covers the user's history;
                    high declared value or a high-value intent goes to the largest tier.
* `LearnedPolicy`   a tiny ridge model on request features (their squares and log2
                    history-length buckets; ridge strength by cross-validation) that
                    predicts the large tier's per-request gain over the small one (log-loss
                    reduction); requests whose predicted gain clears a threshold go large.
                    The threshold is set from a compute budget: the fraction of the
                    always-large FLOPs the policy may spend on average.
* `LoadAwarePolicy` wraps any policy: while the chosen tier is under pressure (a load
                    signal > 1 means it would miss the deadline), step down to cheaper tiers.

Tier costs come from the artifacts' manifests (XLA FLOPs), passed in as `TierCost`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import numbers
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from arm_jax.argcheck import is_int
from arm_jax.batch import RequestBatch
from arm_jax.routing.features import feature_names, request_features


class RoutingError(ValueError):
    """A policy is misconfigured (unknown tier, bad budget, unfitted model)."""


def _real(value: Any) -> bool:
    """A real number (Python or numpy; not a bool, a string or None); NaN included."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


@dataclasses.dataclass(frozen=True)
class TierCost:
    """A tier as the router sees it: name, FLOPs per request, history window L."""

    name: str
    flops_per_request: float
    history_len: int


class Policy(Protocol):
    def choose(self, batch: RequestBatch, context: Sequence[dict[str, Any]] | None = None
               ) -> list[str]: ...


def _sorted(tiers: Sequence[TierCost]) -> list[TierCost]:
    if not tiers:
        raise RoutingError("tiers: need at least one tier")
    if all(np.isfinite(t.flops_per_request) for t in tiers):
        return sorted(tiers, key=lambda t: (t.flops_per_request, t.history_len))
    return sorted(tiers, key=lambda t: t.history_len)   # costs unknown: L orders the tiers


class FixedPolicy:
    """Every request to one tier."""

    def __init__(self, tier: str):
        self.tier = tier

    def choose(self, batch: RequestBatch, context: Sequence[dict[str, Any]] | None = None
               ) -> list[str]:
        return [self.tier] * batch.num_requests


class RulesPolicy:
    """Cheapest tier whose L covers the history; declared value / intent can force the top.

    context keys (all optional): `value` (float, e.g. expected bid value) and `intent`
    (str). value >= value_threshold or intent in `premium_intents` -> most expensive tier;
    intent in `cheap_intents` -> cheapest tier.
    """

    def __init__(self, tiers: Sequence[TierCost], *, value_threshold: float = 10.0,
                 premium_intents: Sequence[str] = ("purchase", "checkout"),
                 cheap_intents: Sequence[str] = ("browse_only", "prefetch")):
        self.tiers = _sorted(tiers)
        self.value_threshold = value_threshold
        self.premium_intents = set(premium_intents)
        self.cheap_intents = set(cheap_intents)

    def choose(self, batch: RequestBatch, context: Sequence[dict[str, Any]] | None = None
               ) -> list[str]:
        hist = np.asarray(batch.hist_len)
        contexts = _check_context(context, len(hist))
        out = []
        for h, ctx in zip(hist, contexts):
            intent = ctx.get("intent")
            value = ctx.get("value")
            if intent in self.cheap_intents:
                out.append(self.tiers[0].name)
            elif intent in self.premium_intents or (
                    value is not None and value >= self.value_threshold):
                out.append(self.tiers[-1].name)
            else:
                cover = [t for t in self.tiers if t.history_len >= h]
                out.append((cover[0] if cover else self.tiers[-1]).name)
        return out


def _check_context(context: Sequence[Mapping[str, Any] | None] | None, n: int
                   ) -> list[Mapping[str, Any]]:
    """One mapping per request ({} for none); RoutingError naming the context entry and the
    rule for a list of another length, an entry that is not a mapping, an `intent` that is
    not a string or a `value` that is not a real number (NaN included)."""
    if context is None:
        return [{}] * n
    if isinstance(context, (Mapping, str, bytes)) or not hasattr(context, "__len__"):
        raise RoutingError(f"context: expected a list of {n} mappings (one per request), got "
                           f"{type(context).__name__}")
    if len(context) != n:
        raise RoutingError(f"context: {len(context)} entries for {n} requests (need one per "
                           "request)")
    out = []
    for i, ctx in enumerate(context):
        ctx = {} if ctx is None else ctx
        if not isinstance(ctx, Mapping):
            raise RoutingError(f"context[{i}]: expected a mapping (keys 'intent', 'value') or "
                               f"None, got {type(ctx).__name__}")
        intent, value = ctx.get("intent"), ctx.get("value")
        if intent is not None and not isinstance(intent, str):
            raise RoutingError(f"context[{i}].intent: expected a string or None, got "
                               f"{type(intent).__name__}")
        if value is not None and (not _real(value) or math.isnan(value)):
            raise RoutingError(f"context[{i}].value: expected a real number or None, got "
                               f"{value!r}")
        out.append(ctx)
    return out


def budget_fraction_to_large(budget: float, small_flops: float, large_flops: float) -> float:
    """Fraction p of requests that may go large so that the mean cost
    p * large + (1 - p) * small stays within budget * large."""
    if not 0.0 < budget <= 1.0:
        raise RoutingError(f"budget={budget}: must be in (0, 1] (a fraction of large FLOPs)")
    if large_flops <= small_flops:
        return 1.0
    return float(np.clip((budget * large_flops - small_flops) / (large_flops - small_flops),
                         0.0, 1.0))


RIDGE_GRID = (1.0, 10.0, 100.0, 1000.0)
HISTORY_BUCKETS = 12     # log2 buckets of the history length: none, 1, 2-3, ..., >= 1024


def history_buckets(hist_len: np.ndarray) -> np.ndarray:
    """One-hot [R, HISTORY_BUCKETS] of log2(history length); column 0 = no history.

    Why: the large tier's gain grows in steps where a user's history outgrows the cheaper
    tiers' windows (L = 32, 256, ...); indicators let a linear router express that."""
    h = np.asarray(hist_len, np.float64)
    b = np.where(h >= 1, np.floor(np.log2(np.maximum(h, 1.0))) + 1, 0)
    b = np.minimum(b, HISTORY_BUCKETS - 1).astype(np.int64)
    return (b[:, None] == np.arange(HISTORY_BUCKETS)[None, :]).astype(np.float64)


class LearnedPolicy:
    """Ridge regression of the large-vs-small gain on request features, their squares and
    log2 history-length buckets; the ridge strength is chosen by 5-fold cross-validation
    on the fit data unless given."""

    def __init__(self, small: TierCost, large: TierCost, *, num_action_types: int,
                 ridge: float | None = None):
        self.small, self.large = small, large
        self.num_action_types = num_action_types
        self.requested_ridge = ridge          # None: choose by cross-validation in fit()
        self.ridge = ridge                    # the strength the current weights used
        self.cv_mse: dict[float, float] | None = None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        self.threshold = np.inf
        self.fit_predictions: np.ndarray | None = None
        self.budget: float | None = None

    # -- model
    def _design(self, feats: np.ndarray) -> np.ndarray:
        z = (feats - self.mean) / self.std
        return np.column_stack([np.ones(len(z)), history_buckets(feats[:, 0]), z, z * z])

    @staticmethod
    def _solve(a: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
        reg = ridge * np.eye(a.shape[1])
        reg[0, 0] = 0.0
        return np.linalg.solve(a.T @ a + reg, a.T @ y)

    def _choose_ridge(self, a: np.ndarray, y: np.ndarray, folds: int = 5
                      ) -> tuple[float, dict[float, float] | None]:
        """(the RIDGE_GRID value with the lowest held-out squared error over `folds` folds,
        that error per value); fixed shuffle, so a fit is reproducible; (1.0, None) when
        there are too few rows."""
        if len(y) < 4 * folds:
            return 1.0, None
        parts = np.array_split(np.random.default_rng(0).permutation(len(y)), folds)
        mse = {}
        for lam in RIDGE_GRID:
            err = 0.0
            for k in range(folds):
                tr = np.concatenate([parts[j] for j in range(folds) if j != k])
                w = self._solve(a[tr], y[tr], lam)
                err += float(((a[parts[k]] @ w - y[parts[k]]) ** 2).sum())
            mse[lam] = err / len(y)
        return min(mse, key=mse.get), mse

    def fit(self, features: np.ndarray, gain: np.ndarray, *, budget: float | None = None
            ) -> "LearnedPolicy":
        """features [R, F] (from `request_features`), gain [R] = small loss - large loss."""
        x = np.asarray(features, np.float64)
        y = np.asarray(gain, np.float64)
        if x.ndim != 2 or len(x) != len(y) or len(y) < 2:
            raise RoutingError(f"fit: need features [R, F] and gain [R] with R >= 2, got "
                               f"{x.shape} and {y.shape}")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise RoutingError("fit: features and gain must be finite")
        if budget is not None:      # a bad budget is refused before anything is fitted
            budget_fraction_to_large(budget, self.small.flops_per_request,
                                     self.large.flops_per_request)
        # Fit a copy and adopt it only once it is valid: a fit that fails leaves this policy
        # as it was (never new weights with the old model's threshold).
        new = copy.copy(self)
        new.mean = x.mean(0)
        # A constant feature (spread at rounding level, relative to its size) is scaled by 1:
        # its z is ~0 instead of rounding noise blown up, or a division by zero.
        with np.errstate(over="ignore"):      # an overflowing spread is refused below
            spread = x.std(0)
        new.std = np.where(spread > 1e-9 * np.maximum(1.0, np.abs(new.mean)), spread, 1.0)
        a = new._design(x)
        new.ridge, new.cv_mse = (new._choose_ridge(a, y) if new.requested_ridge is None
                                 else (new.requested_ridge, None))
        new.weights = new._solve(a, y, new.ridge)
        new.fit_predictions = a @ new.weights
        new.validate("fit")         # e.g. features so large their spread overflows float64
        if budget is not None:
            new.set_budget(budget)
        self.__dict__.update(new.__dict__)
        return self

    def predict_gain(self, features: np.ndarray) -> np.ndarray:
        if self.weights is None:
            raise RoutingError("LearnedPolicy: call fit() (or load a fitted policy) first")
        return self._design(np.asarray(features, np.float64)) @ self.weights

    def set_budget(self, budget: float, reference: np.ndarray | None = None) -> float:
        """Threshold so that on `reference` predictions (default: the fit set) the share sent
        large keeps the mean cost within `budget` x always-large. Returns that share."""
        preds = self.fit_predictions if reference is None else np.asarray(reference)
        if preds is None:
            raise RoutingError("set_budget: fit first or pass reference predictions")
        p = budget_fraction_to_large(budget, self.small.flops_per_request,
                                     self.large.flops_per_request)
        if not np.all(np.isfinite(preds)):
            raise RoutingError("set_budget: reference predictions must be finite")
        self.budget = budget
        if p >= 1.0:
            self.threshold = -np.inf
        elif p <= 0.0:
            self.threshold = np.inf
        else:
            # Strictly above the (1 - p) quantile: ties never push the share over budget.
            self.threshold = float(np.quantile(preds, 1.0 - p, method="higher"))
        return p

    def choose(self, batch: RequestBatch, context: Sequence[dict[str, Any]] | None = None
               ) -> list[str]:
        gain = self.predict_gain(request_features(batch, self.num_action_types))
        return [self.large.name if g > self.threshold else self.small.name for g in gain]

    # -- validity
    def validate(self, where: str = "LearnedPolicy") -> None:
        """Raise RoutingError (one line, prefixed by `where`: a file, `fit`, ...) unless
        mean/std/weights have this build's shapes for `num_action_types` and are finite,
        every std is > 0 and the threshold is a number or +-inf (not NaN). Any of those
        would silently send every request to the small tier."""
        if self.mean is None or self.std is None or self.weights is None:
            raise RoutingError(f"{where}: not fitted (mean, std and weights are needed)")
        n_feats = len(feature_names(self.num_action_types))
        for name in ("mean", "std"):
            v = np.asarray(getattr(self, name))
            if v.shape != (n_feats,):
                raise RoutingError(f"{where}: {name} holds {v.size} values; num_action_types="
                                   f"{self.num_action_types} makes {n_feats} request features")
        want = 1 + HISTORY_BUCKETS + 2 * n_feats
        if np.asarray(self.weights).shape != (want,):
            raise RoutingError(f"{where}: {np.asarray(self.weights).size} weights, this build's "
                               f"design has {want} (saved by an older arm-jax? refit it)")
        for name in ("mean", "std", "weights"):
            v = np.asarray(getattr(self, name), np.float64)
            bad = np.flatnonzero(~np.isfinite(v))
            if bad.size:
                raise RoutingError(f"{where}: {name} must be finite, got {v[bad[0]]} at index "
                                   f"{bad[0]}")
        std = np.asarray(self.std, np.float64)
        bad = np.flatnonzero(std <= 0)
        if bad.size:
            raise RoutingError(f"{where}: std must be > 0, got {std[bad[0]]} at index {bad[0]}")
        if np.isnan(self.threshold):
            raise RoutingError(f"{where}: threshold must be a number, 'inf' or '-inf', got nan")

    # -- persistence
    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready policy `load` reads back; refuses a policy `load` would refuse."""
        if self.weights is None:
            raise RoutingError("LearnedPolicy: nothing to save before fit()")
        self._check_settings("LearnedPolicy")     # never save what `load` refuses
        self.validate()
        return {
            "kind": "learned", "small": dataclasses.asdict(self.small),
            "large": dataclasses.asdict(self.large), "num_action_types": self.num_action_types,
            "features": feature_names(self.num_action_types), "mean": self.mean.tolist(),
            "std": self.std.tolist(), "weights": self.weights.tolist(),
            "threshold": self.threshold if np.isfinite(self.threshold) else str(self.threshold),
            "budget": self.budget, "ridge": self.ridge,
        }

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2))
        return p

    @classmethod
    def load(cls, path: str | Path) -> "LearnedPolicy":
        """A policy saved by `save`; RoutingError naming the file, the field and the rule for
        a file that is unreadable, from another build, or holds values `validate` refuses."""
        try:
            raw = json.loads(Path(path).read_text())
            pol = cls(TierCost(**raw["small"]), TierCost(**raw["large"]),
                      num_action_types=raw["num_action_types"], ridge=raw.get("ridge", 1.0))
            pol.mean = np.asarray(raw["mean"], np.float64)
            pol.std = np.asarray(raw["std"], np.float64)
            pol.weights = np.asarray(raw["weights"], np.float64)
            pol.threshold = float(raw["threshold"])
            pol.budget = raw.get("budget")
            feature_names(pol.num_action_types)     # a non-integer count fails here
        except (OSError, KeyError, TypeError, ValueError) as e:
            raise RoutingError(f"{path}: not a saved LearnedPolicy ({type(e).__name__}: {e})"
                               ) from None
        pol._check_settings(str(path))
        pol.validate(str(path))
        return pol

    def _check_settings(self, where: str) -> None:
        """RoutingError (prefixed by `where`) unless both tiers' costs are finite FLOPs >= 0
        and history lengths integers >= 1, the budget is None or in (0, 1] and the ridge
        None or a finite number >= 0. A file holding others loaded and routed by them (a
        NaN budget, a negative cost) without a word."""
        for side in ("small", "large"):
            tier = getattr(self, side)
            flops, length = tier.flops_per_request, tier.history_len
            if not _real(flops) or not 0.0 <= flops < math.inf:
                raise RoutingError(f"{where}: {side}.flops_per_request must be a finite number "
                                   f">= 0, got {flops!r}")
            if not is_int(length) or length < 1:
                raise RoutingError(f"{where}: {side}.history_len must be an integer >= 1, got "
                                   f"{length!r}")
        if self.budget is not None:
            if not _real(self.budget):
                raise RoutingError(f"{where}: budget must be a number in (0, 1] or null, got "
                                   f"{self.budget!r}")
            try:
                budget_fraction_to_large(self.budget, self.small.flops_per_request,
                                         self.large.flops_per_request)
            except RoutingError as e:
                raise RoutingError(f"{where}: {e}") from None
        if self.ridge is not None and (not _real(self.ridge)
                                       or not 0.0 <= self.ridge < math.inf):
            raise RoutingError(f"{where}: ridge must be a finite number >= 0 or null, got "
                               f"{self.ridge!r}")


class LoadAwarePolicy:
    """Under pressure, step down from the base policy's tier to cheaper ones.

    `pressure(tier, request_index) -> float`: > `limit` means that tier would miss the
    request's deadline right now (the server passes its admission estimate / budget).
    A NaN pressure is an unknown load, which cannot promise the deadline: it counts as
    over the limit (it used to compare as no pressure at all). Returns tiers;
    `last_degraded` records which requests were moved.
    """

    def __init__(self, base: Policy, order: Sequence[str],
                 pressure: Callable[[str, int], float], *, limit: float = 1.0):
        if not _real(limit) or math.isnan(limit):
            raise RoutingError(f"limit={limit!r}: must be a real number (the pressure above "
                               "which a tier steps down), not NaN")
        self.base = base
        self.order = list(order)    # cheapest first
        self.pressure = pressure
        self.limit = limit
        self.last_degraded: list[bool] = []

    def choose(self, batch: RequestBatch, context: Sequence[dict[str, Any]] | None = None
               ) -> list[str]:
        wanted = self.base.choose(batch, context)
        out, degraded = [], []
        for i, tier in enumerate(wanted):
            if tier not in self.order:
                raise RoutingError(f"the base policy chose tier {tier!r}, which is not served; "
                                   f"tiers: {self.order}")
            k = self.order.index(tier)
            while k > 0 and not self.pressure(self.order[k], i) <= self.limit:  # NaN: over
                k -= 1
            out.append(self.order[k])
            degraded.append(self.order[k] != tier)
        self.last_degraded = degraded
        return out


def load_policy(spec: str, tiers: Sequence[TierCost], *, num_action_types: int) -> Policy:
    """'rules' | 'fixed:<tier>' | 'learned:<file.json>' -> a policy over these tiers."""
    names = [t.name for t in tiers]
    if spec == "rules":
        return RulesPolicy(tiers)
    if spec.startswith("fixed:"):
        name = spec.split(":", 1)[1]
        if name not in names:
            raise RoutingError(f"policy {spec!r}: unknown tier {name!r}; tiers: {names}")
        return FixedPolicy(name)
    if spec.startswith("learned:"):
        pol = LearnedPolicy.load(spec.split(":", 1)[1])
        for t in (pol.small.name, pol.large.name):
            if t not in names:
                raise RoutingError(f"policy {spec!r}: its tier {t!r} is not served; tiers: {names}")
        if pol.num_action_types != num_action_types:
            raise RoutingError(f"policy {spec!r}: fitted with num_action_types="
                               f"{pol.num_action_types}, the tiers have {num_action_types} "
                               "(refit it with `arm-jax bench routing`)")
        return pol
    raise RoutingError(f"policy {spec!r}: expected 'rules', 'fixed:<tier>' or 'learned:<file>'")
