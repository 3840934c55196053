"""Choose each feature's hash-table size from its observed ids under a parameter budget.

Statistics per feature: lookups, distinct ids, and the frequency tail (ids seen fewer
than `min_count` times). The ids worth a row of their own are the *head* (seen at
least `min_count` times): a tail id has too few examples to learn its own vector, so
it may share. With uniform hashing of n head ids into m rows, the chance that an id
shares its row with another head id is

    collision_rate(n, m) = 1 - (1 - 1/m) ** (n - 1)

Every field is one token of every example, so the plan minimises the sum of the
fields' collision rates subject to sum(rows) * dim <= budget: a greedy that grows,
by ~12.5% at a time, whichever table buys the largest drop in collision rate per
parameter, starting from half a row per head id, where the objective turns convex
in rows (so greedy steps from there are near optimal). Sizes are
multiples of `row_multiple` so tables row-shard evenly over the mesh.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from arm_jax.argcheck import is_int


class SizingError(ValueError):
    """The budget or the statistics cannot produce a plan."""


@dataclass(frozen=True)
class IdStats:
    """Observed ids of one feature."""

    name: str
    lookups: int
    distinct: int
    head: int          # distinct ids seen >= min_count times
    singletons: int    # distinct ids seen exactly once
    min_count: int

    @classmethod
    def from_ids(cls, name: str, ids: np.ndarray, min_count: int = 2) -> "IdStats":
        """Statistics of a 1-D array of raw ids (padding already removed)."""
        ids = np.asarray(ids).ravel()
        if ids.size == 0:
            raise SizingError(f"feature '{name}': no ids observed")
        _, counts = np.unique(ids, return_counts=True)
        return cls(name, int(ids.size), int(counts.size), int((counts >= min_count).sum()),
                   int((counts == 1).sum()), min_count)

    @property
    def effective(self) -> int:
        """Ids that deserve a row: the head, at least 1."""
        return max(1, self.head)


def collision_rate(n: int, m: int) -> float:
    """P(an id shares its row with another of n ids hashed uniformly into m rows)."""
    if n <= 1:
        return 0.0
    return float(-math.expm1((n - 1) * math.log1p(-1.0 / m))) if m > 1 else 1.0


@dataclass(frozen=True)
class FeaturePlan:
    name: str
    rows: int
    distinct: int
    head: int
    collision_rate: float        # among head ids
    collision_rate_all: float    # among all distinct ids seen


@dataclass(frozen=True)
class SizingPlan:
    dim: int
    budget_params: int
    used_params: int
    features: tuple[FeaturePlan, ...]

    def rows(self) -> dict[str, int]:
        return {f.name: f.rows for f in self.features}

    def to_dict(self) -> dict:
        return {"dim": self.dim, "budget_params": self.budget_params,
                "used_params": self.used_params,
                "features": {f.name: {k: v for k, v in asdict(f).items() if k != "name"}
                             for f in self.features}}

    def table(self) -> str:
        lines = [f"{'feature':<14}{'distinct':>10}{'head':>10}{'rows':>12}"
                 f"{'collide(head)':>15}{'collide(all)':>14}"]
        for f in self.features:
            lines.append(f"{f.name:<14}{f.distinct:>10,}{f.head:>10,}{f.rows:>12,}"
                         f"{f.collision_rate:>15.3f}{f.collision_rate_all:>14.3f}")
        lines.append(f"params {self.used_params:,} of budget {self.budget_params:,} "
                     f"(dim {self.dim})")
        return "\n".join(lines)


def plan_sizes(stats: Sequence[IdStats], budget_params: int, dim: int, *,
               row_multiple: int = 8, max_rows_per_id: float = 8.0) -> SizingPlan:
    """Rows per feature minimising the summed head collision rate within the budget.

    A table never grows past `max_rows_per_id` rows per head id (beyond that the
    collision rate is already below 1/max_rows_per_id and rows are better spent
    elsewhere). Raises SizingError naming the shortfall when even the minimum of
    `row_multiple` rows per feature does not fit.
    """
    for name, value in (("dim", dim), ("row_multiple", row_multiple)):
        # a float row_multiple planned float rows (2.5 -> 320.0) that no table can have
        if not is_int(value) or value < 1:
            raise SizingError(f"{name}={value!r}: must be an integer >= 1")
    if not stats:
        raise SizingError("no features to size")
    names = [s.name for s in stats]
    if len(set(names)) != len(names):
        raise SizingError(f"duplicate feature names in {names}")
    q = row_multiple
    rows = [q] * len(stats)
    floor = sum(rows) * dim
    if budget_params < floor:
        raise SizingError(f"budget_params={budget_params:,} is below the minimum {floor:,} "
                          f"({len(stats)} features x {q} rows x dim {dim})")
    cap = [max(q, _round_up(int(math.ceil(s.effective * max_rows_per_id)), q)) for s in stats]
    # The collision rate is flat (~1) while rows << ids, so greedy steps from tiny tables
    # would starve big features. Start every table at half its head ids (where the curve
    # turns convex), scaled down together if the budget cannot afford that. Only the rows
    # above each table's minimum of q are scaled, so the minimum is never added back on top
    # of a budget already spent (that overshot it by up to a quarter).
    start = [max(q, _round_up(s.effective // 2, q)) for s in stats]
    above = sum(start) - q * len(stats)
    spare = budget_params // dim - q * len(stats)
    scale = 1.0 if above <= spare else spare / above
    rows = [q + (int((r - q) * scale) // q) * q for r in start]
    left = budget_params // dim - sum(rows)

    def offer(i: int) -> tuple[float, int, int] | None:
        new = min(cap[i], max(rows[i] + q, _round_up(int(rows[i] * 1.125), q)),
                  rows[i] + (left // q) * q)
        if new <= rows[i]:
            return None
        n = stats[i].effective
        gain = collision_rate(n, rows[i]) - collision_rate(n, new)
        return (-gain / (new - rows[i]), i, new)

    heap = [o for o in (offer(i) for i in range(len(stats))) if o is not None]
    heapq.heapify(heap)
    while heap:
        _, i, new = heapq.heappop(heap)
        if new - rows[i] > left:  # priced when more budget was left: re-offer what fits
            again = offer(i)
            if again is not None:
                heapq.heappush(heap, again)
            continue
        left -= new - rows[i]
        rows[i] = new
        nxt = offer(i)
        if nxt is not None:
            heapq.heappush(heap, nxt)
        if left < q:
            break
    feats = tuple(FeaturePlan(s.name, r, s.distinct, s.head, collision_rate(s.effective, r),
                              collision_rate(s.distinct, r)) for s, r in zip(stats, rows))
    return SizingPlan(dim, int(budget_params), sum(rows) * dim, feats)


def _round_up(x: int, q: int) -> int:
    return -(-x // q) * q


def stats_from_columns(columns: Mapping[str, np.ndarray], min_count: int = 2) -> list[IdStats]:
    """IdStats for every column of raw ids (name -> 1-D ids)."""
    return [IdStats.from_ids(k, v, min_count) for k, v in columns.items()]


def check_groups(groups: Sequence[Sequence[str]], known: Iterable[str]) -> None:
    """Refuse (SizingError) a `--group` naming a feature not in `known` or a feature that
    is repeated or in two groups (`TableLayout.from_plan` refuses those)."""
    known = set(known)
    grouped: set[str] = set()
    for g in groups:
        unknown = [f for f in g if f not in known]
        if unknown:
            raise SizingError(f"--group {','.join(g)}: unknown feature(s) {unknown}; "
                              f"known: {sorted(known)}")
        again = sorted((grouped & set(g)) | {f for f in g if list(g).count(f) > 1})
        if again:   # TableLayout.from_plan refuses a field in two groups
            raise SizingError(f"--group {','.join(g)}: feature(s) {again} repeated or already "
                              "in another group; a feature goes in at most one --group")
        grouped |= set(g)


def tier_overrides(plan: SizingPlan) -> dict[str, int]:
    """The tier overrides the current Ranker accepts: one `features.sparse_hash_size` for
    every request/candidate field (the largest planned one) and the item table's rows."""
    rows = plan.rows()
    sparse = [r for k, r in rows.items() if k.startswith(("req_", "cand_"))]
    out = {}
    if sparse:
        out["features.sparse_hash_size"] = max(sparse)
    if "item" in rows:
        out["features.item_hash_size"] = rows["item"]
    return out


def overrides_params(plan: SizingPlan, features: Any) -> int:
    """Table parameters (rows x plan.dim) a tier with `features` (a FeaturesConfig) builds
    once `tier_overrides(plan)` are applied: every request and candidate field gets the
    one sparse size, so this exceeds `plan.used_params` whenever planned sizes differ."""
    o = tier_overrides(plan)
    sparse = o.get("features.sparse_hash_size", features.sparse_hash_size)
    item = o.get("features.item_hash_size", features.item_hash_size)
    fields = features.req_sparse_fields + features.cand_sparse_fields
    return (fields * sparse + item) * plan.dim


def write_plan_yaml(plan: SizingPlan, path: str,
                    groups: Sequence[Sequence[str]] = ()) -> None:
    """The plan as YAML: per-feature rows and unified groups (read back by
    `TableLayout.from_plan`), plus tier overrides the current Ranker accepts (one size
    for all sparse fields: the largest planned request/candidate table)."""
    from pathlib import Path

    import yaml

    overrides = [f"{k}={v}" for k, v in tier_overrides(plan).items()]
    check_groups(groups, plan.rows())
    doc = {"embeddings": {**plan.to_dict(), "groups": [list(g) for g in groups]},
           "overrides": overrides}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
