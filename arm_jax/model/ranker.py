"""The request-oriented Wukong ranker, with `shared` and `per_pair` execution modes.

Request tower (once per request): request sparse/dense tokens, the sequence
encoder, k summary tokens, target-attention keys/values, and the request-only
shares of the first Wukong layer.  Candidate tower (over the candidate axis,
by einsum): candidate tokens, target attention of each candidate over the
request's encoded history, the rest of the Wukong stack and the heads.

`per_pair` is the classic baseline: every (request, candidate) pair becomes its
own one-candidate request before any compute, so the request tower runs N times.
Both modes use the same parameters and give the same scores to float tolerance.
"""

from __future__ import annotations

import numbers
from typing import Literal

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from arm_jax.argcheck import is_int
from arm_jax.batch import RequestBatch, check_feature_widths
from arm_jax.config import FeaturesConfig, ModelConfig
from arm_jax.model.age_bias import age_biases
from arm_jax.model.attention import SummaryPooling, key_bias, masked_softmax_attention
from arm_jax.model.embeddings import HashedEmbedding
from arm_jax.model.history_match import HistoryMatch, MatchState
from arm_jax.model.preprocess import age_bucket, normalize_dense
from arm_jax.model.sequence_encoder import SequenceEncoder
from arm_jax.model.wukong import ACTIVATIONS, WukongLayer, WukongRequestPart

Mode = Literal["shared", "per_pair"]
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@flax.struct.dataclass
class RequestState:
    """Everything the candidates need from their request, computed once. Per request b."""

    req_tokens_btd: jax.Array
    hist_k_blhk: jax.Array | None
    hist_v_blhk: jax.Array | None
    hist_mask_bl: jax.Array
    hist_bias_blh: jax.Array | None   # target attention's per-key age bias (or None)
    first_layer: WukongRequestPart
    match: MatchState | None = None


@flax.struct.dataclass
class MaskedActions:
    """The masked-action task of one training batch: predictions, targets, which events."""

    logits_bla: jax.Array     # float32 [b, l, action types], every event
    actions_bl: jax.Array     # the true actions
    hidden_bl: jax.Array      # bool: events whose action was hidden (the ones scored)


def target_attention(q_bchk: jax.Array, k_blhk: jax.Array, v_blhk: jax.Array,
                     mask_bl: jax.Array, bias_blh: jax.Array | None = None,
                     impl: str = "auto") -> jax.Array:
    """Candidates query the request's history; k/v are read per request, never tiled."""
    try:
        from pallas_kernels.target_attention import target_attention as fused
    except ImportError:  # kernels package absent: the XLA path is the reference
        return masked_softmax_attention(q_bchk, k_blhk, v_blhk, mask_bl, bias_blh)
    return fused(q_bchk, k_blhk, v_blhk, mask_bl, bias_blh, impl=impl)


class Ranker(nnx.Module):
    """Multi-task ranker: logits [b, c, tasks] for a RequestBatch."""

    def __init__(self, model: ModelConfig, features: FeaturesConfig, *, rngs: nnx.Rngs):
        self.cfg, self.features = model, features
        dtype, pdtype = _DTYPES[model.dtype], _DTYPES[model.param_dtype]
        self.dtype = dtype
        d = model.d_model
        kw = dict(dtype=dtype, param_dtype=pdtype, rngs=rngs)
        self.req_sparse = HashedEmbedding(features.req_sparse_fields, features.sparse_hash_size,
                                          d, salt_base=0, param_dtype=pdtype, rngs=rngs)
        self.cand_sparse = HashedEmbedding(features.cand_sparse_fields, features.sparse_hash_size,
                                           d, salt_base=1 << 10, param_dtype=pdtype, rngs=rngs)
        self.req_dense = nnx.Linear(features.req_dense_features, d, **kw)
        self.cand_dense = nnx.Linear(features.cand_dense_features, d, **kw)
        self.encoder = SequenceEncoder(
            d_model=d, history_len=model.history_len, num_layers=model.encoder_layers,
            num_heads=model.encoder_heads, mlp_ratio=model.encoder_mlp_ratio,
            item_hash_size=features.item_hash_size, num_action_types=features.num_action_types,
            time_buckets=features.time_buckets, age_bias_slope=model.age_bias_slope,
            rank_bias_slope=model.rank_bias_slope, **kw)
        ages = lambda heads: age_biases(features.time_buckets, heads,  # noqa: E731
                                        model.age_bias_slope,
                                        rank_slope=model.rank_bias_slope, param_dtype=pdtype)
        self.summary = (SummaryPooling(d, model.summary_tokens, model.encoder_heads,
                                       age_bias=ages(model.encoder_heads), **kw)
                        if model.summary_tokens else None)
        if model.target_attention:
            self.ta_age_bias = ages(model.target_heads)
            self.ta_query = nnx.Linear(d, d, **kw)
            self.ta_kv = nnx.Linear(d, 2 * d, **kw)
            self.ta_out = nnx.Linear(d, d, **kw)
        self.req_token_count = features.req_sparse_fields + 1 + model.summary_tokens
        self.side_fields = tuple(features.history_side_fields)
        self.match = (HistoryMatch(1 + len(self.side_fields), d, **kw)
                      if model.history_match else None)
        self.cand_token_count = (features.cand_sparse_fields + 1 + int(model.target_attention)
                                 + int(model.share_item_embedding) + int(model.history_match))
        tokens = self.req_token_count + self.cand_token_count
        layers = []
        for _ in range(model.wukong_layers):
            layers.append(WukongLayer(
                tokens, d, fm_tokens=model.fm_tokens, lcb_tokens=model.lcb_tokens,
                fm_rank=model.fm_rank, mlp_hidden=model.mlp_hidden, use_bias=model.use_bias,
                activation=model.activation, **kw))
            tokens = model.fm_tokens + model.lcb_tokens
        self.wukong = nnx.List(layers)
        self.head_in = nnx.Linear(tokens * d, model.head_hidden, **kw)
        self.head_out = nnx.Linear(model.head_hidden, len(features.tasks), dtype=dtype,
                                   param_dtype=pdtype, rngs=rngs)

    # ------------------------------------------------------------------ towers
    def _drop(self, x: jax.Array, key: jax.Array | None) -> jax.Array:
        """Inverted dropout at rate `cfg.dropout` when training (a key given), else x."""
        rate = self.cfg.dropout
        if key is None or rate == 0.0:
            return x
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
        return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)

    def encode_request(self, batch: RequestBatch, *,
                       dropout_key: jax.Array | None = None) -> RequestState:
        """Request-level work, once per request. `dropout_key` only when training.

        Checks the batch's feature widths as `__call__` does (static shapes only): a
        batch of another schema failed deep in a layer naming no field."""
        check_feature_widths(batch, self.features)
        return self._encode(batch.truncate_history(self.cfg.history_len), dropout_key)[0]

    def _encode(self, batch: RequestBatch, dropout_key: jax.Array | None,
                hide_action_bl: jax.Array | None = None) -> tuple[RequestState, jax.Array]:
        """-> (request state, encoded history [b, l, d] before dropout) of a batch whose
        history is already truncated to the tier's L."""
        b = batch.num_requests
        d = self.cfg.d_model
        if batch.hist_side.shape[-1] != len(self.side_fields):
            raise ValueError(
                f"hist_side: expected {len(self.side_fields)} columns (one per "
                f"features.history_side_fields={list(self.side_fields)}), got "
                f"{batch.hist_side.shape[-1]}")
        sparse_bfd = self.req_sparse(batch.req_sparse).astype(self.dtype)
        dense_b1d = self.req_dense(normalize_dense(batch.req_dense))[:, None]
        # Each event's item side fields, in the candidate table: one embedding per value
        # whether it describes a candidate or a past event.
        side_blsd = self.cand_sparse(batch.hist_side, self.side_fields).astype(self.dtype)
        item_bld = self.encoder.items(batch.hist_item[..., None])[..., 0, :]
        age_bl = age_bucket(batch.hist_gap, self.features.time_buckets)
        seq_bld, mask_bl = self.encoder(batch.hist_item, batch.hist_action, batch.hist_gap,
                                        batch.hist_len, extra_bld=side_blsd.sum(axis=2),
                                        item_bld=item_bld, age_bucket_bl=age_bl,
                                        hide_action_bl=hide_action_bl)
        encoded_bld = seq_bld
        k_seq, k_req = (None, None) if dropout_key is None else jax.random.split(dropout_key)
        seq_bld = self._drop(seq_bld, k_seq)
        parts = [sparse_bfd, dense_b1d]
        if self.summary is not None:
            s = self.cfg.summary_history or seq_bld.shape[1]     # newest first: a slice
            parts.append(self.summary(seq_bld[:, :s], mask_bl[:, :s], age_bl[:, :s]))
        req_btd = self._drop(jnp.concatenate(parts, axis=1), k_req)
        k = v = bias = None
        if self.cfg.target_attention:
            h = self.cfg.target_heads
            kv = self.ta_kv(seq_bld).reshape(b, -1, 2, h, d // h)
            k, v = kv[:, :, 0], kv[:, :, 1]
            bias = key_bias(self.ta_age_bias, age_bl)
        match = None
        if self.match is not None:
            keys_blfd = jnp.concatenate([item_bld[:, :, None].astype(self.dtype), side_blsd],
                                        axis=2)
            match = self.match.request_part(keys_blfd, seq_bld, mask_bl)
        state = RequestState(req_tokens_btd=req_btd, hist_k_blhk=k, hist_v_blhk=v,
                             hist_mask_bl=mask_bl, hist_bias_blh=bias,
                             first_layer=self.wukong[0].request_part(req_btd), match=match)
        return state, encoded_bld

    def score_candidates(self, state: RequestState, batch: RequestBatch, *,
                         dropout_key: jax.Array | None = None) -> jax.Array:
        """Candidate-level work over the candidate axis -> logits [b, c, tasks]."""
        k_cand, k_head = (None, None) if dropout_key is None else jax.random.split(dropout_key)
        b, c = batch.cand_sparse.shape[:2]
        d = self.cfg.d_model
        sparse_bcfd = self.cand_sparse(batch.cand_sparse).astype(self.dtype)
        dense_bc1d = self.cand_dense(normalize_dense(batch.cand_dense))[:, :, None]
        parts = [sparse_bcfd, dense_bc1d]
        query_in_bcd = sparse_bcfd.mean(axis=2) + dense_bc1d[:, :, 0]
        if self.match is not None or self.cfg.share_item_embedding:
            # The candidate's item id in the history's item table: the same vector the
            # encoder sees when this item appears in a history, so "has this user engaged
            # with items like this one" is a comparison in one space (DIN-style sharing).
            item_bc1d = self.encoder.items(batch.cand_sparse[..., :1]).astype(self.dtype)
        if self.match is not None:
            keys_bcfd = jnp.concatenate([item_bc1d, sparse_bcfd[:, :, list(self.side_fields)]],
                                        axis=2)
            parts.append(self.match(state.match, keys_bcfd)[:, :, None])
        if self.cfg.share_item_embedding:
            parts.append(item_bc1d)
            query_in_bcd = query_in_bcd + item_bc1d[:, :, 0]
        if self.cfg.target_attention:
            h = self.cfg.target_heads
            query_bcd = self.ta_query(query_in_bcd)
            att_bchk = target_attention(query_bcd.reshape(b, c, h, d // h), state.hist_k_blhk,
                                        state.hist_v_blhk, state.hist_mask_bl,
                                        state.hist_bias_blh, impl=self.cfg.kernel_impl)
            parts.append(self.ta_out(att_bchk.reshape(b, c, d))[:, :, None])
        cand_bctd = self._drop(jnp.concatenate(parts, axis=2), k_cand)
        x_bctd = self.wukong[0].candidate_part(state.req_tokens_btd, cand_bctd, state.first_layer)
        for layer in self.wukong[1:]:
            x_bctd = layer(x_bctd)
        act = ACTIVATIONS[self.cfg.activation]
        hidden = self._drop(act(self.head_in(x_bctd.reshape(b, c, -1))), k_head)
        return self.head_out(hidden).astype(jnp.float32)

    # ------------------------------------------------------------------ modes
    def __call__(self, batch: RequestBatch, *, mode: Mode = "shared",
                 pair_chunk: int | None = None,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        """Logits [b, c, tasks]. `pair_chunk` bounds memory of `per_pair` (pairs per step).

        `dropout_key` (training only, `shared` mode) applies `model.dropout`; without it the
        model is deterministic, as in evaluation, export and serving."""
        if mode not in ("shared", "per_pair"):
            raise ValueError(f"mode must be 'shared' or 'per_pair', got {mode!r}")
        if pair_chunk is not None and (not is_int(pair_chunk) or pair_chunk < 1):
            raise ValueError(f"pair_chunk: must be >= 1 pairs per step, an integer (or None: "
                             f"all at once), got {pair_chunk!r}")
        check_feature_widths(batch, self.features)
        if mode == "shared":
            return self._shared(batch.truncate_history(self.cfg.history_len), dropout_key)[0]
        if dropout_key is not None:
            raise ValueError("dropout_key: dropout is applied in 'shared' mode only (the "
                             "training mode); per_pair is an inference baseline")
        return self._per_pair(batch, pair_chunk)

    def masked_action_forward(self, batch: RequestBatch, mask_key: jax.Array, rate: float, *,
                              dropout_key: jax.Array | None = None
                              ) -> tuple[jax.Array, MaskedActions]:
        """Training with the masked-action task: each history event's action is hidden with
        probability `rate` (the same view feeds the ranking logits) and predicted back from
        the encoded history, a label per event instead of per candidate.

        -> (logits [b, c, tasks], MaskedActions for `masked_action_ce`). A Python or numpy
        `rate` outside [0, 1] (or NaN) raises ValueError; a traced one is not checked."""
        host = isinstance(rate, (numbers.Real, np.ndarray, np.generic))     # no device sync
        if host and not np.all((np.asarray(rate) >= 0.0) & (np.asarray(rate) <= 1.0)):
            # 2.0 hid every event, -0.5 and NaN none, all without a word
            raise ValueError(f"rate: must be in [0, 1] (the share of history events whose "
                             f"action is hidden), got {rate!r}")
        check_feature_widths(batch, self.features)
        batch = batch.truncate_history(self.cfg.history_len)
        l = batch.hist_item.shape[1]
        valid_bl = jnp.arange(l)[None, :] < batch.hist_len[:, None]
        hide_bl = jax.random.bernoulli(mask_key, rate, valid_bl.shape) & valid_bl
        logits, encoded_bld = self._shared(batch, dropout_key, hide_action_bl=hide_bl)
        return logits, MaskedActions(self.encoder.action_logits(encoded_bld),
                                     batch.hist_action, hide_bl)

    def _shared(self, batch: RequestBatch, dropout_key: jax.Array | None,
                hide_action_bl: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Shared mode on a batch already truncated to L -> (logits, encoded history); the
        dropout key splits between the request half and the candidate half."""
        k_req, k_cand = (None, None) if dropout_key is None else jax.random.split(dropout_key)
        state, encoded_bld = self._encode(batch, k_req, hide_action_bl)
        return self.score_candidates(state, batch, dropout_key=k_cand), encoded_bld

    def _per_pair(self, batch: RequestBatch, pair_chunk: int | None) -> jax.Array:
        b, c = batch.cand_sparse.shape[:2]
        pairs = per_pair_batch(batch.truncate_history(self.cfg.history_len))
        if pair_chunk is None or pair_chunk >= b * c:
            return self(pairs, mode="shared").reshape(b, c, -1)
        n = b * c
        chunks = -(-n // pair_chunk)
        pad = chunks * pair_chunk - n

        def split(x):
            x = jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]) if pad else x
            return x.reshape((chunks, pair_chunk) + x.shape[1:])

        logits = jax.lax.map(lambda p: self(p, mode="shared"), jax.tree.map(split, pairs))
        return logits.reshape(chunks * pair_chunk, -1)[:n].reshape(b, c, -1)


def per_pair_batch(batch: RequestBatch) -> RequestBatch:
    """Replicate each request to each of its candidates: b requests x c -> b*c one-candidate requests."""
    b, c = batch.cand_sparse.shape[:2]
    rep = lambda x: jnp.repeat(x, c, axis=0)  # noqa: E731
    return RequestBatch(
        req_sparse=rep(batch.req_sparse), req_dense=rep(batch.req_dense),
        hist_item=rep(batch.hist_item), hist_action=rep(batch.hist_action),
        hist_gap=rep(batch.hist_gap), hist_len=rep(batch.hist_len),
        hist_side=rep(batch.hist_side),
        cand_sparse=batch.cand_sparse.reshape((b * c, 1) + batch.cand_sparse.shape[2:]),
        cand_dense=batch.cand_dense.reshape((b * c, 1) + batch.cand_dense.shape[2:]),
        cand_mask=batch.cand_mask.reshape(b * c, 1),
    )
