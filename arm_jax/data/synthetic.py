"""A bundled, deterministic synthetic ads world: users, ads, action logs, labelled requests.

Why: the ranker's claims (long histories pay, crosses matter, request-oriented sharing is
exact) need data where the truth is known. Everything is vectorized numpy; the default
world (6,000 users, ~1.3M events) plus 24k requests builds in a couple of seconds.

The world (every value below is a `SyntheticSpec` default):
- Topics K=64, advertisers A=500 (each belongs to one topic), ads I=20,000 (each belongs to
  one advertiser; lognormal(0, 1) popularity; quality ~ N(0, 1); bid ~ lognormal(0, 0.8);
  creative type in [0, 6)).
- Users: interest mix over topics ~ Dirichlet(0.1) (sparse: a handful of topics), and 8
  favourite advertisers drawn from their topics. Neither is visible in request features:
  they are recoverable ONLY from the action log.
- Logs: lengths ~ lognormal(median 64, sigma 1.8) clipped to [0, 3000] (~1/3 of users under
  32 events, ~1/8 over 512). Each event is noise (15%: a popular ad, any topic), a favourite
  advertiser's ad (25%) or an ad from a topic drawn from the interest mix (60%). Action type
  a in [0, num_action_types) (view, click, convert, like: deeper engagement = larger a) has
  P(a) ~ exp(-s a) with s = 2.0 / 1.0 / 0.3 for noise / interest / favourite events, so
  actions help denoise. Timestamps uniform over 180 days from 2023-11-14, ascending per user.
- Requests: a uniform user at a uniform time in the last 90 days, so on average ~3/4 of the
  user's log precedes it. Candidates: half retrieved from the user's interest topics, half
  popular ads; between `min_candidates` and `candidates` are real, the rest padded.

Ground truth (logits; `c` = candidate, `u` = user):
  click = -3.4 + 0.9 * log1p(K * mix[u, topic(c)])         topic interest (history)
               + 1.0 * [advertiser(c) in favourites(u)]      needs long histories
               + 0.5 * [topic(c) == topic of u's last event]  recency
               + cross[req field 0, cand field 2] ~ N(0, 0.5)   planted sparse cross
               + 0.3 * req_dense[0] * cand_dense[0]             planted dense cross
               + per-value effects of every sparse field (N(0, 0.1..0.3)), 0.4 * quality,
                 0.1 * log(bid), N(0, 0.15) weights on other dense features
  conversion | click = -1.5 + 0.4 * log1p(K * mix) + 0.8 * favourite + 0.3 * quality
                            + geo effect ~ N(0, 0.2)
Measured on the default world: click ~0.185 of valid candidates, conversion ~0.072 (about
0.39 of clicks); oracle AUC ~0.86 click, ~0.87 conversion.

Request sparse fields, in order: geo (16 values, skewed), hour of day (from ts), device (8),
then random fields (cardinality 1000 / 100 alternating). Candidate sparse fields: ad id,
advertiser id, topic id, creative type, placement (5), then random fields (cardinality 50).
Candidate dense: quality, bid, then noise. Request dense: N(0, 1). Only the first
`features.*_fields` of each list exist; ground truth uses only fields that exist.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from arm_jax.batch import RequestBatch, expected_widths, make_batch
from arm_jax.config import FeaturesConfig
from arm_jax.data.catalog import ItemCatalog
from arm_jax.data.examples import Examples
from arm_jax.metrics import evaluate

_DAY = 86400
_KNOWN_TASKS = ("click", "conversion")


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes and ground-truth coefficients of the synthetic world (see module docstring)."""

    num_users: int = 6000
    num_items: int = 20000
    num_topics: int = 64
    num_advertisers: int = 500
    seed: int = 0
    topic_concentration: float = 0.1     # Dirichlet alpha of a user's interest mix
    favourites_per_user: int = 8         # favourite advertisers per user
    history_median: float = 64.0         # log length ~ lognormal(log(median), sigma)
    history_sigma: float = 1.8
    history_max: int = 3000
    noise_frac: float = 0.15             # events on a random popular ad
    favourite_frac: float = 0.25         # events on a favourite advertiser's ad
    retrieval_frac: float = 0.5          # candidates retrieved from the user's topics
    days: int = 180                      # log time span; requests in the second half
    start_ts: int = 1_700_000_000        # 2023-11-14, seconds
    click_bias: float = -3.4
    interest_weight: float = 0.9
    favourite_weight: float = 1.0
    recency_weight: float = 0.5
    cross_scale: float = 0.5             # std of the planted (req f0, cand f2) table
    dense_cross_weight: float = 0.3
    conversion_bias: float = -1.5

    def __post_init__(self) -> None:
        if not 1 <= self.num_topics <= self.num_advertisers <= self.num_items:
            raise ValueError(
                "need 1 <= num_topics <= num_advertisers <= num_items, got "
                f"{self.num_topics}, {self.num_advertisers}, {self.num_items}")
        if self.num_users < 1 or self.favourites_per_user < 1:
            raise ValueError(f"num_users={self.num_users} and favourites_per_user="
                             f"{self.favourites_per_user} must be >= 1")
        if not 0 <= self.noise_frac + self.favourite_frac <= 1:
            raise ValueError(f"noise_frac + favourite_frac = "
                             f"{self.noise_frac + self.favourite_frac} must be in [0, 1]")
        if not 0 < self.days * _DAY < 2**32 or self.start_ts < 0:
            raise ValueError(f"days={self.days}, start_ts={self.start_ts}: need a positive "
                             "span under 2**32 seconds and a non-negative start")


@dataclass(frozen=True)
class _Truth:
    """Hidden ground-truth parameters (effect tables per field, dense weights)."""

    req_card: tuple[int, ...]
    req_effect: tuple[np.ndarray, ...]
    cand_card: tuple[int, ...]
    cand_effect: tuple[np.ndarray, ...]
    cross_field: int
    cross_table: np.ndarray          # [req_card[0], cand_card[cross_field]]
    req_dense_w: np.ndarray          # [e_r]
    cand_noise_w: np.ndarray         # [max(e_c - 2, 0)]
    geo_p: np.ndarray                # [req_card[0]] request geo distribution
    cvr_geo: np.ndarray              # [req_card[0]]


def _categorical_rows(cum_rk: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Category per query from row `rows[i]` of cumulative probs `cum_rk` (last column 1).

    One searchsorted over all rows flattened, each row shifted by its index.
    """
    k = cum_rk.shape[1]
    flat = (cum_rk + np.arange(cum_rk.shape[0])[:, None]).ravel()
    idx = np.searchsorted(flat, rows + u, side="right") - rows * k
    return np.clip(idx, 0, k - 1)


def _in_ranges(cum_w: np.ndarray, start: np.ndarray, end: np.ndarray,
               u: np.ndarray) -> np.ndarray:
    """Weighted index in [start, end) per query; cum_w = [0, cumsum(weights)]."""
    lo, hi = cum_w[start], cum_w[end]
    idx = np.searchsorted(cum_w, lo + u * (hi - lo), side="right") - 1
    return np.clip(idx, start, end - 1)


def _cum(p: np.ndarray) -> np.ndarray:
    c = np.cumsum(p, axis=-1)
    c /= c[..., -1:]
    return c


@dataclass(frozen=True)
class SyntheticWorld:
    """Users, ads, the flat user-log store and the hidden truth. Build with `generate`.

    Logs are flat and sorted by (user, ts): log_user int32 [E], log_item int32 [E],
    log_action int32 [E], log_ts int64 [E]; user u's events are
    [user_offsets[u], user_offsets[u + 1]).
    """

    spec: SyntheticSpec
    features: FeaturesConfig
    log_user: np.ndarray
    log_item: np.ndarray
    log_action: np.ndarray
    log_ts: np.ndarray
    user_offsets: np.ndarray
    user_mix: np.ndarray             # [U, K] interest mix (hidden)
    user_favourites: np.ndarray      # [U, F] favourite advertisers (hidden)
    item_topic: np.ndarray           # [I]
    item_advertiser: np.ndarray      # [I]
    item_quality: np.ndarray         # [I]
    item_bid: np.ndarray             # [I]
    item_creative: np.ndarray        # [I]
    item_cum_pop: np.ndarray         # [I + 1] cumulative popularity
    topic_item_start: np.ndarray     # [K + 1] items sorted by topic
    truth: _Truth = field(repr=False)
    _log_key: np.ndarray = field(repr=False)  # user << 32 | (ts - start_ts), ascending

    @functools.cached_property
    def _catalog(self) -> ItemCatalog:
        return self._build_catalog()

    @property
    def num_users(self) -> int:
        return int(self.user_offsets.shape[0] - 1)

    @property
    def history_lengths(self) -> np.ndarray:
        """Total events per user, int64 [U]."""
        return np.diff(self.user_offsets)

    @classmethod
    def generate(cls, spec: SyntheticSpec, features: FeaturesConfig) -> "SyntheticWorld":
        """Build the world deterministically from `spec.seed`."""
        unknown = [t for t in features.tasks if t not in _KNOWN_TASKS]
        if unknown:
            raise ValueError(f"synthetic world knows tasks {_KNOWN_TASKS}, got {unknown}")
        rng = np.random.default_rng((spec.seed, 0))
        u_n, i_n, k_n, a_n = spec.num_users, spec.num_items, spec.num_topics, spec.num_advertisers

        # Catalogue: every topic has an advertiser, every advertiser an ad; ids sorted by
        # (topic, advertiser) so each topic and advertiser owns a contiguous id range.
        adv_topic = np.sort(np.concatenate([np.arange(k_n), rng.integers(0, k_n, a_n - k_n)]))
        item_adv = np.sort(np.concatenate([np.arange(a_n), rng.integers(0, a_n, i_n - a_n)]))
        item_topic = adv_topic[item_adv]
        topic_item_start = np.searchsorted(item_topic, np.arange(k_n + 1))
        adv_item_start = np.searchsorted(item_adv, np.arange(a_n + 1))
        topic_adv_start = np.searchsorted(adv_topic, np.arange(k_n + 1))
        cum_pop = np.concatenate([[0.0], np.cumsum(rng.lognormal(0.0, 1.0, i_n))])
        quality = rng.normal(size=i_n)
        bid = rng.lognormal(0.0, 0.8, i_n)
        creative = rng.integers(0, 6, i_n)

        # Users: sparse interest mix and favourite advertisers from their own topics.
        g = rng.gamma(spec.topic_concentration, size=(u_n, k_n)) + 1e-12
        mix = g / g.sum(1, keepdims=True)
        mix_cum = _cum(mix)
        f_n = spec.favourites_per_user
        fav_rows = np.repeat(np.arange(u_n), f_n)
        fav_topic = _categorical_rows(mix_cum, fav_rows, rng.random(u_n * f_n))
        n_adv = topic_adv_start[fav_topic + 1] - topic_adv_start[fav_topic]
        favourites = (topic_adv_start[fav_topic]
                      + (rng.random(u_n * f_n) * n_adv).astype(np.int64)).reshape(u_n, f_n)

        # Logs.
        lengths = np.clip(np.rint(rng.lognormal(np.log(spec.history_median),
                                                spec.history_sigma, u_n)),
                          0, spec.history_max).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        e_n = int(offsets[-1])
        ev_user = np.repeat(np.arange(u_n), lengths)
        r = rng.random(e_n)
        kind = np.where(r < spec.noise_frac, 0,
                        np.where(r < spec.noise_frac + spec.favourite_frac, 2, 1))
        item = np.empty(e_n, np.int64)
        sel = kind == 0
        item[sel] = _in_ranges(cum_pop, np.zeros(sel.sum(), np.int64),
                               np.full(sel.sum(), i_n), rng.random(sel.sum()))
        sel = kind == 1
        topic = _categorical_rows(mix_cum, ev_user[sel], rng.random(sel.sum()))
        item[sel] = _in_ranges(cum_pop, topic_item_start[topic], topic_item_start[topic + 1],
                               rng.random(sel.sum()))
        sel = kind == 2
        adv = favourites[ev_user[sel], rng.integers(0, f_n, sel.sum())]
        item[sel] = _in_ranges(cum_pop, adv_item_start[adv], adv_item_start[adv + 1],
                               rng.random(sel.sum()))
        act_n = features.num_action_types
        act_p = np.exp(-np.array([2.0, 1.0, 0.3])[:, None] * np.arange(act_n)[None, :])
        act_cum = _cum(act_p)                                    # [3 kinds, act_n]
        action = (rng.random(e_n)[:, None] >= act_cum[kind]).sum(1).clip(0, act_n - 1)
        rel_ts = rng.integers(0, spec.days * _DAY, e_n)
        key = (ev_user.astype(np.int64) << 32) | rel_ts
        order = np.argsort(key, kind="stable")

        truth = _make_truth(np.random.default_rng((spec.seed, 1)), spec, features, i_n, a_n)
        return cls(
            spec=spec, features=features,
            log_user=ev_user[order].astype(np.int32), log_item=item[order].astype(np.int32),
            log_action=action[order].astype(np.int32),
            log_ts=(rel_ts[order] + spec.start_ts).astype(np.int64),
            user_offsets=offsets.astype(np.int64), user_mix=mix, user_favourites=favourites,
            item_topic=item_topic, item_advertiser=item_adv, item_quality=quality,
            item_bid=bid, item_creative=creative, item_cum_pop=cum_pop,
            topic_item_start=topic_item_start, truth=truth, _log_key=key[order],
        )

    # ---------------------------------------------------------------- catalogue

    def catalog(self) -> ItemCatalog:
        """Every ad's side ids for `features.history_side_fields` (built once per world)."""
        return self._catalog

    def _build_catalog(self) -> ItemCatalog:
        """The catalogue from the ads' attributes.

        Only item attributes can be side fields: 0 ad id, 1 advertiser, 2 topic, 3 creative
        type (placement and the random fields belong to the impression, not the ad).
        """
        attrs = (np.arange(self.spec.num_items), self.item_advertiser, self.item_topic,
                 self.item_creative)
        fields = tuple(self.features.history_side_fields)
        bad = [j for j in fields if j >= len(attrs)]
        if bad:
            raise ValueError(f"features.history_side_fields={list(fields)}: the synthetic "
                             f"world's ads have attributes only for candidate fields 0..3 "
                             f"(ad, advertiser, topic, creative), got {bad}")
        side = np.stack([attrs[j] for j in fields], -1) if fields else \
            np.zeros((self.spec.num_items, 0), np.int64)
        return ItemCatalog(side, fields)

    # ---------------------------------------------------------------- history join

    def _query_key(self, user_id: np.ndarray, ts: np.ndarray) -> np.ndarray:
        user_id = np.asarray(user_id, np.int64)
        if user_id.size and (user_id.min() < 0 or user_id.max() >= self.num_users):
            raise ValueError(f"user_id must be in [0, {self.num_users}), got "
                             f"{int(user_id.min())}..{int(user_id.max())}")
        rel = np.clip(np.asarray(ts, np.int64) - self.spec.start_ts, 0, 2**32 - 1)
        return (user_id << 32) | rel

    def join_history(self, user_id: np.ndarray, ts: np.ndarray,
                     max_len: int) -> dict[str, np.ndarray]:
        """Point-in-time history: the user's events with ts < request ts, most recent first.

        Returns hist_item int32 [R, L], hist_action int32 [R, L], hist_gap float32 [R, L]
        (request ts - event ts, seconds), hist_len int32 [R], hist_side int32 [R, L, s]
        (the items' catalogue side ids); slots past hist_len are 0.
        One searchsorted on the (user, ts) key, then a gather: no loop over requests.
        """
        user_id = np.asarray(user_id, np.int64)
        ts = np.asarray(ts, np.int64)
        end_r = np.searchsorted(self._log_key, self._query_key(user_id, ts), side="left")
        start_r = self.user_offsets[user_id]
        hist_len = np.minimum(end_r - start_r, max_len)
        pos_l = np.arange(max_len)
        valid_rl = pos_l[None, :] < hist_len[:, None]
        idx_rl = np.where(valid_rl, end_r[:, None] - 1 - pos_l[None, :], 0)
        gap = (ts[:, None] - self.log_ts[idx_rl]).astype(np.float32)
        return {
            "hist_item": np.where(valid_rl, self.log_item[idx_rl], 0).astype(np.int32),
            "hist_action": np.where(valid_rl, self.log_action[idx_rl], 0).astype(np.int32),
            "hist_gap": np.where(valid_rl, gap, 0.0).astype(np.float32),
            "hist_len": hist_len.astype(np.int32),
            "hist_side": np.where(valid_rl[..., None], self._catalog.lookup(
                np.where(valid_rl, self.log_item[idx_rl], 0)), 0).astype(np.int32),
        }

    # ---------------------------------------------------------------- requests

    def sample_examples(self, num_requests: int, candidates: int, *, seed: int,
                        min_candidates: int | None = None) -> Examples:
        """Labelled requests: uniform users at uniform times in the last half of the log.

        Each request has between `min_candidates` (default: max(1, candidates // 2)) and
        `candidates` real candidates; padded slots are masked and zero. Candidates may
        repeat within a request (retrieval is with replacement).
        """
        min_c = max(1, candidates // 2) if min_candidates is None else min_candidates
        if not 1 <= min_c <= candidates:
            raise ValueError(f"need 1 <= min_candidates <= candidates, got {min_c}, {candidates}")
        spec, f, tr = self.spec, self.features, self.truth
        rng = np.random.default_rng((spec.seed, 2, seed))
        r_n, n_n, k_n = num_requests, candidates, spec.num_topics
        span = spec.days * _DAY
        user = rng.integers(0, self.num_users, r_n)
        ts = spec.start_ts + rng.integers(span // 2, span, r_n)
        mask = np.arange(n_n)[None, :] < rng.integers(min_c, n_n + 1, r_n)[:, None]

        # Request fields: geo, hour, device, random ... (independent of the user).
        req_vals = []
        for j, card in enumerate(tr.req_card):
            if j == 0:
                v = rng.choice(card, r_n, p=tr.geo_p)
            elif j == 1:
                v = (ts // 3600) % 24
            else:
                v = rng.integers(0, card, r_n)
            req_vals.append(v)
        req_sparse = np.stack(req_vals, 1)
        req_dense = rng.normal(size=(r_n, f.req_dense_features))

        # Candidates: retrieved from the user's topics, or popular ads.
        retrieved = rng.random(r_n * n_n) < spec.retrieval_frac
        topic = _categorical_rows(_cum(self.user_mix[user]), np.repeat(np.arange(r_n), n_n),
                                  rng.random(r_n * n_n))
        start = np.where(retrieved, self.topic_item_start[topic], 0)
        end = np.where(retrieved, self.topic_item_start[topic + 1], spec.num_items)
        item = _in_ranges(self.item_cum_pop, start, end, rng.random(r_n * n_n)).reshape(r_n, n_n)
        adv, c_topic = self.item_advertiser[item], self.item_topic[item]
        cand_vals = []
        for j, card in enumerate(tr.cand_card):
            v = (item, adv, c_topic, self.item_creative[item], None)[j] if j < 5 else None
            cand_vals.append(rng.integers(0, card, (r_n, n_n)) if v is None else v)
        cand_sparse = np.stack(cand_vals, -1)
        quality, log_bid = self.item_quality[item], np.log(self.item_bid[item])
        dense = [quality, self.item_bid[item]][: f.cand_dense_features]
        noise = rng.normal(size=(r_n, n_n, max(f.cand_dense_features - 2, 0)))
        cand_dense = np.concatenate([np.stack(dense, -1), noise], -1)

        # Ground truth.
        last = self.join_history(user, ts, 1)
        last_topic = np.where(last["hist_len"] > 0, self.item_topic[last["hist_item"][:, 0]], -1)
        interest = np.log1p(k_n * self.user_mix[user[:, None], c_topic])
        is_fav = (self.user_favourites[user][:, None, :] == adv[..., None]).any(-1)
        logit = (spec.click_bias + spec.interest_weight * interest
                 + spec.favourite_weight * is_fav
                 + spec.recency_weight * (c_topic == last_topic[:, None])
                 + tr.cross_table[req_sparse[:, :1], cand_sparse[..., tr.cross_field]]
                 + spec.dense_cross_weight * req_dense[:, :1] * quality
                 + 0.4 * quality + 0.1 * log_bid * (f.cand_dense_features > 1)
                 + (req_dense @ tr.req_dense_w)[:, None] + noise @ tr.cand_noise_w)
        for j, eff in enumerate(tr.req_effect):
            logit += eff[req_sparse[:, j]][:, None]
        for j, eff in enumerate(tr.cand_effect):
            logit += eff[cand_sparse[..., j]]
        cvr_logit = (spec.conversion_bias + 0.4 * interest + 0.8 * is_fav + 0.3 * quality
                     + tr.cvr_geo[req_sparse[:, :1]])
        p_click = 1.0 / (1.0 + np.exp(-logit))
        p_cvr = 1.0 / (1.0 + np.exp(-cvr_logit))
        p_conv = p_click * p_cvr
        click = rng.random((r_n, n_n)) < p_click
        conv = click & (rng.random((r_n, n_n)) < p_cvr)
        by_task = {"click": (click, p_click), "conversion": (conv, p_conv)}
        labels = np.stack([by_task[t][0] for t in f.tasks], -1) & mask[..., None]
        true_prob = np.stack([by_task[t][1] for t in f.tasks], -1) * mask[..., None]
        m3 = mask[..., None]
        return Examples(
            user_id=user.astype(np.int64), ts=ts.astype(np.int64),
            req_sparse=req_sparse.astype(np.int32), req_dense=req_dense.astype(np.float32),
            cand_sparse=np.where(m3, cand_sparse, 0).astype(np.int32),
            cand_dense=np.where(m3, cand_dense, 0.0).astype(np.float32),
            cand_mask=mask, labels=labels.astype(np.float32),
            true_prob=true_prob.astype(np.float32), tasks=tuple(f.tasks),
        )


def _make_truth(rng: np.random.Generator, spec: SyntheticSpec, f: FeaturesConfig,
                i_n: int, a_n: int) -> _Truth:
    """Effect tables for every existing field (drawn from their own seed stream)."""
    req_card = tuple(([16, 24, 8] + [1000 if j % 2 else 100 for j in range(256)])
                     [: f.req_sparse_fields])
    req_scale = [0.25, 0.0, 0.15] + [0.1] * 256
    req_effect = [rng.normal(0.0, req_scale[j], c) for j, c in enumerate(req_card)]
    if len(req_card) > 1:   # hour of day: a smooth daily cycle instead of noise
        req_effect[1] = 0.2 * np.sin(2 * np.pi * np.arange(24) / 24)
    cand_card = tuple(([i_n, a_n, spec.num_topics, 6, 5] + [50] * 256)[: f.cand_sparse_fields])
    cand_scale = [0.3, 0.3, 0.2, 0.2, 0.3] + [0.1] * 256
    cand_effect = tuple(rng.normal(0.0, cand_scale[j], c) for j, c in enumerate(cand_card))
    cross_field = min(2, f.cand_sparse_fields - 1)
    geo_p = 1.0 / np.arange(1, req_card[0] + 1)
    return _Truth(
        req_card=req_card, req_effect=tuple(req_effect), cand_card=cand_card,
        cand_effect=cand_effect, cross_field=cross_field,
        cross_table=rng.normal(0.0, spec.cross_scale, (req_card[0], cand_card[cross_field])),
        req_dense_w=rng.normal(0.0, 0.15, f.req_dense_features),
        cand_noise_w=rng.normal(0.0, 0.15, max(f.cand_dense_features - 2, 0)),
        geo_p=geo_p / geo_p.sum(), cvr_geo=rng.normal(0.0, 0.2, req_card[0]),
    )


def iterate_batches(world: SyntheticWorld, examples: Examples, batch_size: int, max_len: int,
                    *, shuffle: bool, seed: int, drop_remainder: bool, first_batch: int = 0
                    ) -> Iterator[tuple[RequestBatch, np.ndarray]]:
    """Yield (validated RequestBatch, labels float32 [B, N, T]), joining histories per batch.

    The last short batch is yielded unless `drop_remainder`. `first_batch` skips that many
    batches of the same order without joining them (a resumed run picks up mid-epoch).
    """
    n = len(examples)
    order = np.random.default_rng((seed, 3)).permutation(n) if shuffle else np.arange(n)
    f = world.features
    expected = expected_widths(f)
    for lo in range(first_batch * batch_size, n, batch_size):
        idx = order[lo:lo + batch_size]
        if drop_remainder and idx.size < batch_size:
            break
        ex = examples.take(idx)
        hist = world.join_history(ex.user_id, ex.ts, max_len)
        batch = make_batch(req_sparse=ex.req_sparse, req_dense=ex.req_dense,
                           cand_sparse=ex.cand_sparse, cand_dense=ex.cand_dense,
                           cand_mask=ex.cand_mask, num_action_types=f.num_action_types,
                           expected=expected, **hist)
        yield batch, ex.labels


def oracle_metrics(examples: Examples) -> dict[str, dict[str, float]]:
    """{task: {auc, logloss, ne}} of scoring by the true probability: the ceiling."""
    return evaluate(examples.labels, examples.true_prob, examples.cand_mask, examples.tasks)


__all__ = ["SyntheticSpec", "SyntheticWorld", "Examples", "iterate_batches", "oracle_metrics"]
