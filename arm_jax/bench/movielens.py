"""`arm-jax bench movielens`: logistic regression vs the small and large tiers on real data.

Ratings become requests (arm_jax.data.movielens); every user's log is loaded once into a
user-log store (LMDB in a temporary directory unless `store_url` names one) and joined on
the fly, point in time, by the grain pipeline (arm_jax.data.join) for training and test.
Each model trains with the project's train step (AdamW, arm_jax.train.step) on the training
requests minus the latest 10% of them by time (the validation slice): the parameters
with the best validation AUC (checked 4 times) are kept, so every model is early-stopped by
the same rule, never by the test set. They are scored on the later 20% of ratings by time
(after `cut_ts`; on ml-latest-small the last 11% of the span of rating times): AUC, log
loss, NE overall and for users with short (<= 32 past ratings) and long (>= 256) histories,
AUC, like rate and mean score in four buckets of past ratings (`by_history`), AUC within
requests and of the requests' levels (each candidate scored by its request's mean), and
95% intervals from a paired bootstrap over the test requests (arm_jax.bootstrap), which
also gives the large tier's differences to the other models.
The printout and the PNG are `arm_jax.bench.movielens_report`; every test candidate's label
and each model's score are saved beside the JSON (`arm_jax.bench.movielens_scores`).
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from tqdm import tqdm

from arm_jax.bench.movielens_report import format_table, plot
from arm_jax.bench.movielens_scores import save_test_scores, scores_path
from arm_jax.bench.timing import machine_info, write_json
from arm_jax.bootstrap import (auc_bootstrap, compare_to, interval,
                               within_request_auc_bootstrap)
from arm_jax.config import TierConfig, load_tier
from arm_jax.data.catalog import ItemCatalog
from arm_jax.data.join import joined_batches
from arm_jax.data.movielens import (MOVIE_FIELD, MovieLensData, MovieLensSpec,
                                    feature_overrides, find_movielens, load_movielens)
from arm_jax.data.outputs import check_output_file
from arm_jax.data.synthetic import Examples
from arm_jax.metrics import auc, evaluate, request_level_auc, within_request_auc
from arm_jax.store import UserLogStore, open_store
from arm_jax.train.loop import LONG_HISTORY, SHORT_HISTORY, history_len_for
from arm_jax.train.step import make_predict
from arm_jax.train.trainer import Trainer

# (name, model kind, tier config) in table order; logreg reads the tier's features only
MODELS = (("logreg", "logreg", "small"), ("small", "ranker", "small"),
          ("medium", "ranker", "medium"), ("large", "ranker", "large"))
DEFAULT_MODELS = ("logreg", "small", "large")     # medium on request (`--models`)
# default steps per model, chosen so the default bench fits ~15 min on 2 shared CPU cores
# (large: 450 x 16 requests is 0.8 of an epoch; its validation AUC still rises at the end,
# 0.7927 at 300 steps -> 0.7962 at 450, so it gets what the budget allows)
DEFAULT_STEPS = {"logreg": 1500, "small": 450, "medium": 450, "large": 450}
ROUTING_BUDGETS = (0.2, 0.3, 0.5, 0.7)
VAL_FRAC, VAL_REQUESTS, VAL_CHECKS = 0.1, 384, 4   # model selection on the latest train time
# The large tier at L=1024 costs ~0.5 s per training request on 2 shared cores (measured),
# far past a 15 min budget; by default it runs at L=512 with 16 requests per step
# (`large_history=1024` restores the tier's own L).
LARGE_HISTORY = 512
LARGE_BATCH = 16
LARGE_WARMUP = 20    # of 450 steps (the tier's 50 was picked for a longer run)
# Every ranker tier here (small, medium, large alike), chosen on validation (the latest 10%
# of training time), never on test: a recency bias in the attention over the history, and
# a tenth of the learning rate on the embedding tables (610 users: with the tiers' own
# settings the L=512 large tier overfits within 300 steps). GELU rather than ReLU in the
# interaction stack and head: with ReLU the large tier's head units all stopped firing
# within 40 steps at one seed (a constant model for the rest of the run); GELU has no
# dead zone. key=value arguments come after these and win (`model.age_bias_slope=0`
# turns the bias off).
RANKER_OVERRIDES = ("model.age_bias_slope=0.5", "train.embedding_lr_scale=0.1",
                    "model.activation=gelu")
EVAL_BATCH = 64
# Test requests by how many past ratings the user has (inclusive ranges; the first and last
# are the short and long buckets): where along the history each model wins or loses.
HISTORY_BUCKETS = ((0, SHORT_HISTORY), (SHORT_HISTORY + 1, 128), (129, LONG_HISTORY - 1),
                   (LONG_HISTORY, None))
BOOTSTRAP_SAMPLES = 1000   # redraws of the test requests for AUC intervals (arm_jax.bootstrap)


def split_validation(train: Examples, frac: float = VAL_FRAC, cap: int = VAL_REQUESTS,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) request indices into `train`: val = up to `cap` requests drawn from the
    latest `frac` of the training requests by time (a quantile of request times: on
    ml-latest-small the last 10% of requests span 6% of the training period); fit = every
    earlier request (temporal, like the test split)."""
    cut = fit_cut(train, frac)
    late = np.flatnonzero(train.ts >= cut)
    rng = np.random.default_rng(seed)
    val_idx = np.sort(rng.choice(late, min(cap, late.size), replace=False))
    return np.flatnonzero(train.ts < cut), val_idx


def fit_cut(train: Examples, frac: float = VAL_FRAC) -> float:
    """The time before which the training requests are fitted on (`split_validation`: the
    later `frac` of them by time are where the validation requests come from)."""
    return float(np.quantile(train.ts, 1.0 - frac))


def check_distill_weight(weight: float) -> None:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distill={weight}: must be in [0, 1] (the teacher's share of the "
                         f"training targets; 0 turns it off)")


def distillation_labels(labels: np.ndarray, teacher_probs: np.ndarray, cand_mask: np.ndarray,
                        weight: float) -> np.ndarray:
    """Soft training targets (1 - weight) x labels + weight x the teacher's probabilities
    (knowledge distillation; binary cross-entropy takes them as they are); padded slots 0."""
    check_distill_weight(weight)
    if teacher_probs.shape != labels.shape:
        raise ValueError(f"teacher probabilities {teacher_probs.shape} do not match the "
                         f"labels {labels.shape}")
    mixed = (1.0 - weight) * labels + weight * teacher_probs
    return np.where(cand_mask[..., None], mixed, 0.0).astype(labels.dtype)


def check_batch_fits(tier: TierConfig, fit: int, val: int) -> None:
    """ValueError unless the training split (`fit` requests before validation, `val` for
    it) holds one full batch of `tier` and one validation request."""
    bs = tier.train.batch_size
    if fit < bs or val == 0:
        raise ValueError(f"train.batch_size={bs}: the training split has {fit} "
                         f"requests before validation and {val} for it; need at least "
                         f"one full batch and one validation request")


def train_and_evaluate(name: str, kind: str, tier: TierConfig, data: MovieLensData,
                       store: UserLogStore, *, steps: int, num_threads: int | None = None,
                       progress: bool = True, train_labels: np.ndarray | None = None
                       ) -> tuple[dict[str, Any], np.ndarray, Any]:
    """Train one model on the earlier training requests (histories joined from `store`),
    keep the parameters with the best validation AUC (checked VAL_CHECKS times, on the
    latest training requests), and evaluate those on the test requests. `train_labels`
    ([R, N, T] over `data.train`, e.g. `distillation_labels`) replaces the labels it
    trains on; validation and test always score against the data's own.

    Returns (table row, test probabilities [R, N, T], (graphdef, best params))."""
    tc, f = tier.train, tier.features
    max_len = history_len_for(kind, tier)
    fit_idx, val_idx = split_validation(data.train, seed=tc.seed)
    targets = data.train if train_labels is None else dataclasses.replace(data.train,
                                                                          labels=train_labels)
    fit, val = targets.take(fit_idx), data.train.take(val_idx)
    check_batch_fits(tier, len(fit), len(val))
    trainer = Trainer.create(kind, tier, steps)
    graphdef = trainer.graphdef
    fwd = make_predict(graphdef)
    check_every = max(1, steps // VAL_CHECKS)

    def batches():
        for epoch in itertools.count():
            yield from joined_batches(fit, store, f, batch_size=tc.batch_size,
                                      max_len=max_len, shuffle=True, seed=tc.seed + epoch,
                                      drop_remainder=True, num_threads=num_threads,
                                      catalog=data.catalog)

    def auc_on(examples: Examples, p: Any) -> float:
        probs = predict(fwd, p, examples, store, tier, max_len, num_threads, False, name,
                        data.catalog)
        return evaluate(examples.labels, probs, examples.cand_mask, f.tasks)[f.tasks[0]]["auc"]

    losses, val_curve = [], []
    best: tuple[float, int, Any] = (-1.0, 0, None)
    t0 = time.perf_counter()
    bar = tqdm(itertools.islice(batches(), steps), total=steps, disable=not progress,
               desc=f"train {name} (L={max_len})", unit="step")
    for i, (batch, labels) in enumerate(bar):
        trainer.step(i, batch, labels)
        if trainer.logs_at(i):
            losses.append(trainer.mean_loss())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if (i + 1) % check_every == 0 or i == steps - 1:
            v = auc_on(val, trainer.eval_params)
            val_curve.append((i + 1, round(v, 5)))
            if v > best[0]:
                best = (v, i + 1, jax.device_get(trainer.eval_params))  # host copy: donated
            bar.set_postfix(loss=f"{losses[-1]:.4f}", val_auc=f"{v:.4f}")
    jax.block_until_ready(trainer.eval_params)
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ex = data.test
    probs = predict(fwd, best[2], ex, store, tier, max_len, num_threads, progress, name,
                    data.catalog)
    eval_s = time.perf_counter() - t0
    full = data.full_history_len(ex)
    task = f.tasks[0]
    row: dict[str, Any] = {"name": name, "kind": kind, "tier": tier.name,
                           "history_len": max_len, "batch_size": tc.batch_size, "steps": steps,
                           "best_step": best[1], "val_auc": best[0], "val_curve": val_curve,
                           **evaluate(ex.labels, probs, ex.cand_mask, f.tasks)[task],
                           "auc_within_request": within_request_auc(ex.labels[..., 0],
                                                                    probs[..., 0],
                                                                    ex.cand_mask),
                           "auc_request_level": request_level_auc(ex.labels[..., 0],
                                                                  probs[..., 0], ex.cand_mask)}
    row["by_history"] = buckets = by_history(ex, probs, full)
    row["by_seen"] = by_seen(ex, probs, fit)
    # the first and last buckets are the short and long histories (nan AUC where undefined)
    for key, b in (("short_history", buckets[0]), ("long_history", buckets[-1])):
        row[f"auc_{key}"] = float("nan") if b["auc"] is None else b["auc"]
        row[f"requests_{key}"] = b["requests"]
    row.update(train_seconds=round(train_s, 2), eval_seconds=round(eval_s, 2),
               first_loss=losses[0], last_loss=losses[-1],
               fit_requests=len(fit), val_requests=len(val))
    return row, probs, (graphdef, best[2])


def _segment(y: np.ndarray, p: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """Candidates, AUC, like rate and mean score over the candidates in `mask` (None where
    there are none or, for AUC, one class only)."""
    n = int(mask.sum())
    a = auc(y, p, mask) if n else float("nan")
    return {"candidates": n, "auc": None if np.isnan(a) else a,
            "like_rate": float(y[mask].mean()) if n else None,
            "mean_score": float(p[mask].mean()) if n else None}


def by_history(ex: Examples, probs: np.ndarray, full: np.ndarray) -> list[dict[str, Any]]:
    """AUC, like rate and mean score of the test requests in each HISTORY_BUCKETS range of
    past ratings (first task; None where a bucket is empty or, for AUC, one-class). The
    like rate falls with the length of the past, so a model can order each bucket well and
    still lose overall AUC by misplacing the buckets' levels."""
    y, p = np.asarray(ex.labels)[..., 0], np.asarray(probs)[..., 0]
    cand_mask = np.asarray(ex.cand_mask)
    out = []
    for lo, hi in HISTORY_BUCKETS:
        sel = (full >= lo) & (full <= (np.inf if hi is None else hi))
        out.append({"past_min": lo, "past_max": hi, "requests": int(sel.sum()),
                    **_segment(y, p, cand_mask & sel[:, None])})
    return out


def by_seen(ex: Examples, probs: np.ndarray, fit: Examples) -> dict[str, dict[str, Any]]:
    """The test candidates split by what training saw (first task): of users with at least
    one request among the requests the model fitted on (`returning_users`) or none
    (`new_users`: their user-id row is its initialisation), and movies that were a
    candidate in those requests (`seen_movies`) or not (`unseen_movies`). Each: requests
    (with at least one such candidate), candidates, AUC, like rate, mean score."""
    y, p = np.asarray(ex.labels)[..., 0], np.asarray(probs)[..., 0]
    cand_mask = np.asarray(ex.cand_mask)
    returning = np.isin(np.asarray(ex.user_id), np.asarray(fit.user_id))
    movie = np.asarray(ex.cand_sparse)[..., MOVIE_FIELD]
    fit_movies = np.asarray(fit.cand_sparse)[..., MOVIE_FIELD][np.asarray(fit.cand_mask)]
    seen = np.isin(movie, fit_movies)
    out = {}
    for name, sel in (("returning_users", np.broadcast_to(returning[:, None], seen.shape)),
                      ("new_users", np.broadcast_to(~returning[:, None], seen.shape)),
                      ("seen_movies", seen), ("unseen_movies", ~seen)):
        mask = cand_mask & sel
        out[name] = {"requests": int(mask.any(axis=1).sum()), **_segment(y, p, mask)}
    return out


def predict(fwd: Any, params: Any, examples: Examples, store: UserLogStore, tier: TierConfig,
            max_len: int, num_threads: int, progress: bool, name: str,
            catalog: ItemCatalog) -> np.ndarray:
    """Probabilities [R, N, T] (tail batch padded to the compiled shape, never recompiled)."""
    out = []
    for batch, _ in joined_batches(examples, store, tier.features, batch_size=EVAL_BATCH,
                                   max_len=max_len, num_threads=num_threads, progress=progress,
                                   desc=f"eval {name}", catalog=catalog):
        b = batch.num_requests
        if b < EVAL_BATCH:
            batch = jax.tree.map(lambda x: np.concatenate(
                [x, np.repeat(x[:1], EVAL_BATCH - b, axis=0)]), batch)
        out.append(np.asarray(fwd(params, batch))[:b])
    return np.concatenate(out)


def resolve_steps(models: Sequence[str], steps: int | Mapping[str, int] | None
                  ) -> dict[str, int]:
    """Steps per model: one int for all, a {model: steps} map over the defaults, or None."""
    if steps is None:
        steps = {}
    if isinstance(steps, int):
        steps = {m: steps for m in models}
    unknown = sorted(set(steps) - {n for n, _, _ in MODELS})
    if unknown:
        raise ValueError(f"steps: unknown model {unknown}; choose from "
                         f"{', '.join(n for n, _, _ in MODELS)}")
    for m, v in steps.items():
        if int(v) < 1:
            raise ValueError(f"steps: {m}={v} must be >= 1")
    return {m: int(steps.get(m, DEFAULT_STEPS[m])) for m in models}


def routing_table(data: MovieLensData, store: UserLogStore,
                  trained: Mapping[str, tuple[TierConfig, np.ndarray, Any]], *,
                  budgets: Sequence[float] = ROUTING_BUDGETS, num_threads: int | None = None
                  ) -> dict[str, Any]:
    """The `bench routing` table on the MovieLens test requests, for the trained tiers.

    trained: {tier name: (tier config, test probs [R, N, T], (graphdef, params))}; needs
    small and large. The router sees each request with its full history (max_history)."""
    from arm_jax.bench.routing import tier_flops, compare_policies

    feats = trained["large"][0].features
    batch, _ = next(iter(joined_batches(data.test, store, feats, batch_size=len(data.test),
                                        max_len=feats.max_history, num_threads=num_threads,
                                        catalog=data.catalog)))
    n_cand = data.test.cand_mask.shape[1]
    flops = {n: tier_flops(n, gp[0], gp[1], tier, n_cand, None)
             for n, (tier, _, gp) in trained.items()}
    lens = {n: tier.model.history_len for n, (tier, _, _) in trained.items()}
    rows, target, learned = compare_policies(
        {n: probs for n, (_, probs, _) in trained.items()}, data.test.labels,
        data.test.cand_mask, feats.tasks, flops, lens, batch,
        num_action_types=feats.num_action_types, budgets=budgets)
    return {"tiers": {n: {"flops_per_request": flops[n], "history_len": lens[n]}
                      for n in trained},
            "candidates_for_flops": n_cand, "learned": learned, "policies": rows,
            "target": target}


def bench_tier(name: str, spec: MovieLensSpec, overrides: Sequence[str] = (),
               large_history: int = LARGE_HISTORY,
               large_batch: int = LARGE_BATCH) -> TierConfig:
    """The tier config model `name` trains with here: the MovieLens feature schema, the
    ranker settings (rankers only), the large tier's budget, then the caller's overrides."""
    _, kind, tier_name = next(m for m in MODELS if m[0] == name)
    ranker = RANKER_OVERRIDES if kind == "ranker" else ()
    extra = ((f"model.history_len={large_history}", f"train.batch_size={large_batch}",
              f"train.warmup_steps={LARGE_WARMUP}") if name == "large" else ())
    return load_tier(tier_name, [*feature_overrides(spec), *ranker, *extra, *overrides])


def run_movielens_bench(data_dir: str | Path | None = None, *,
                        steps: int | Mapping[str, int] | None = None,
                        models: Sequence[str] = DEFAULT_MODELS,
                        store_url: str | None = None, overrides: Sequence[str] = (),
                        large_history: int = LARGE_HISTORY, large_batch: int = LARGE_BATCH,
                        num_threads: int | None = None, out_json: str | Path | None = None,
                        bootstrap_samples: int = BOOTSTRAP_SAMPLES, distill: float = 0.0,
                        id_min_count: int = 0, progress: bool = True) -> dict[str, Any]:
    """Load MovieLens, fill the store, train and evaluate every model; print, JSON, PNG.

    Every row gets a 95% bootstrap interval of its test AUC, and the JSON `comparison`
    the paired differences of the reference model (large, else the last one) to the others
    (`bootstrap_samples` redraws of the test requests; 0 turns it off). `distill` > 0
    trains large on `distillation_labels` with the small tier of the same run (trained
    before it) as the teacher. `id_min_count` > 0 maps user and movie ids with fewer
    ratings than that before the fitted period's end to one out-of-vocabulary id, for
    every model (`MovieLensData.with_id_vocabulary`; 0: every id keeps its own row)."""
    unknown = [m for m in models if m not in {n for n, _, _ in MODELS}]
    if unknown:
        raise ValueError(f"models: unknown {unknown}; choose from "
                         f"{', '.join(n for n, _, _ in MODELS)}")
    check_distill_weight(distill)
    if distill > 0.0 and not {"small", "large"} <= set(models):
        raise ValueError(f"distill={distill}: the large tier learns from the small tier "
                         f"trained in the same run; --models must include small and large")
    steps_by = resolve_steps(models, steps)
    if id_min_count < 0:
        raise ValueError(f"id_min_count={id_min_count}: must be >= 0 (0 turns it off)")
    if bootstrap_samples < 0:
        raise ValueError(f"bootstrap_samples={bootstrap_samples}: must be >= 0 (0 turns it off)")
    if not models:
        raise ValueError(f"models: none given; choose from {', '.join(n for n, _, _ in MODELS)}")
    spec = MovieLensSpec()
    # every argument is checked before any work: a config error in the large tier (its
    # history or batch past the limits, a bad override) must not wait for the others'
    # training, nor an output that cannot be written for the whole run
    tiers = {name: bench_tier(name, spec, overrides, large_history, large_batch)
             for name, _, _ in MODELS if name in models}
    if out_json is not None:
        check_output_file(out_json, "out_json")
    find_movielens(data_dir)
    t0 = time.perf_counter()
    tmp = None
    if store_url is None:
        tmp = tempfile.TemporaryDirectory(prefix="armjax-movielens-")
        store_url = f"lmdb://{tmp.name}/logs"
    store = open_store(store_url, bulk=True)      # loads and training joins
    try:
        store.check()                             # a Redis that does not answer: now
        data = load_movielens(data_dir, spec)
        if id_min_count:
            data = data.with_id_vocabulary(fit_cut(data.train), id_min_count)
        for tier in tiers.values():               # a batch the split cannot fill: now
            fit_idx, val_idx = split_validation(data.train, seed=tier.train.seed)
            check_batch_fits(tier, len(fit_idx), len(val_idx))
        data.load_into(store)
        load_s = time.perf_counter() - t0
        rows, trained, test_probs = [], {}, {}
        for name, kind, _ in MODELS:
            if name not in models:
                continue
            tier = tiers[name]
            soft = None
            if name == "large" and distill > 0.0:
                t_tier, _, (t_graphdef, t_params) = trained["small"]
                teacher = predict(make_predict(t_graphdef), t_params, data.train, store,
                                  t_tier, history_len_for("ranker", t_tier), num_threads,
                                  progress, "small on train (teacher)", data.catalog)
                soft = distillation_labels(data.train.labels, teacher, data.train.cand_mask,
                                           distill)
            row, probs, model = train_and_evaluate(
                name, kind, tier, data, store, steps=steps_by[name],
                num_threads=num_threads, progress=progress, train_labels=soft)
            if soft is not None:
                row.update(distilled_from="small", distill_weight=distill)
            rows.append(row)
            test_probs[name] = probs[..., 0]
            if kind == "ranker":
                trained[name] = (tier, probs, model)
        routing = (routing_table(data, store, trained, num_threads=num_threads)
                   if {"small", "large"} <= set(trained) else None)
    finally:
        store.close()
        if tmp is not None:
            tmp.cleanup()
    met = large_beats_others({r["name"]: r["auc"] for r in rows})
    target = None if met is None else {"large_beats_logreg_and_small": met}
    comparison = bootstrap_rows(rows, test_probs, data.test.labels[..., 0],
                                data.test.cand_mask, bootstrap_samples)
    res = {"bench": "movielens", "data": data.stats, "spec": spec.__dict__,
           "store": store_url.split("://")[0], "load_seconds": round(load_s, 2),
           "ranker_overrides": [*RANKER_OVERRIDES, *overrides], "distill": distill,
           "id_min_count": id_min_count,
           "models": rows, "target": target, "comparison": comparison, "routing": routing,
           "machine": machine_info()}
    print(format_table(res))
    if routing is not None:
        from arm_jax.bench.routing import format_table as routing_format

        print("routing on the MovieLens test requests (learned policy fitted on half):")
        print(routing_format(routing["policies"]))
        print(f"large_auc_gain_over_small: {routing['target']['large_auc_gain_over_small']:+.4f}"
              f"   target met: {routing['target']['met']}")
    if out_json is not None:
        out = Path(out_json)
        if routing is not None:
            from arm_jax.bench.routing import plot_curve

            routing["png"] = str(plot_curve(routing["policies"],
                                            out.with_name(out.stem + "-routing.png"),
                                            title="Routing on MovieLens: quality vs cost"))
        res["png"] = str(plot(res, out.with_suffix(".png")))
        res["scores"] = str(save_test_scores(scores_path(out), data.test,
                                             data.full_history_len(data.test), test_probs))
        write_json(out_json, res)
    return res


def large_beats_others(aucs: Mapping[str, float]) -> bool | None:
    """The issue's target: large above logistic regression and small in test AUC; None
    unless all three are in `aucs` ({model: AUC})."""
    if not {"logreg", "small", "large"} <= set(aucs):
        return None
    return bool(aucs["large"] > max(aucs["logreg"], aucs["small"]))


def bootstrap_rows(rows: list[dict[str, Any]], probs: Mapping[str, np.ndarray],
                   labels: np.ndarray, mask: np.ndarray, samples: int) -> dict[str, Any] | None:
    """Add `auc_ci95` and `auc_within_request_ci95` to every row; return the paired
    comparison of the reference model (large if trained, else the last row) with every
    other model, for both AUCs on the same redraws, or None when off (samples 0).
    probs {model: [R, N]}, labels [R, N] (the first task), mask [R, N]."""
    if samples <= 0 or not rows:
        return None
    args = (labels, probs, mask)
    draws = auc_bootstrap(*args, num_samples=samples)
    within = within_request_auc_bootstrap(*args, num_samples=samples)   # the same redraws
    for r in rows:
        r["auc_ci95"] = list(interval(draws[r["name"]]))
        r["auc_within_request_ci95"] = list(interval(within[r["name"]]))
    ref = "large" if "large" in probs else rows[-1]["name"]
    return {"reference": ref, "samples": samples, "level": 0.95,
            "versus": compare_to(ref, draws, {r["name"]: r["auc"] for r in rows}),
            "versus_within_request": compare_to(
                ref, within, {r["name"]: r["auc_within_request"] for r in rows})}


__all__ = ["run_movielens_bench", "train_and_evaluate", "routing_table", "resolve_steps",
           "DEFAULT_STEPS", "DEFAULT_MODELS"]
