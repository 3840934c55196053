"""Wukong interaction layer: Factorization Machine Block beside a Linear Compress Block.

For tokens X [t, d]:
  FMB(X) = MLP(LN(flatten(X (X^T Y))))  -> n_F tokens   (optimised FM: X^T Y first, Y [t, k])
  LCB(X) = W X                           -> n_L tokens
  out    = LN(concat(FMB, LCB) + residual(X)),  residual = X, or a learned token projection
           when t != n_F + n_L.

The first layer sees X = [R; C] (request tokens, candidate tokens). Everything there
that depends on R alone -- R^T Y_R, W_R R and the residual's R share -- is
request-level: `request_part` computes it once per request and `candidate_part`
broadcasts it to the candidates by einsum (never tiled N times).

With X^T Y = R^T Y_R + C^T Y_C, the FM rows regroup as
  R (X^T Y) = R (R^T Y_R) + (R C^T) Y_C        C (X^T Y) = C (R^T Y_R) + (C C^T) Y_C
where R (R^T Y_R) is request-level and the rest are GEMMs over all candidates at once
plus one small [t_c, t_c] Gram per candidate -- the same X (X^T Y), fewer and larger
matmuls than forming X^T Y per candidate.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu}


@flax.struct.dataclass
class WukongRequestPart:
    """Request-only shares of a first Wukong layer (shapes per request b)."""

    xty_bdk: jax.Array     # R^T Y_R
    rxty_btk: jax.Array    # R (R^T Y_R)
    lcb_bod: jax.Array     # W_lcb[:, :t_r] R   (n_L tokens)
    res_bod: jax.Array     # W_res[:, :t_r] R   (o tokens) or R itself padded (see below)


class WukongLayer(nnx.Module):
    """One Wukong layer on `num_tokens` input tokens of width `d_model`."""

    def __init__(self, num_tokens: int, d_model: int, *, fm_tokens: int, lcb_tokens: int,
                 fm_rank: int, mlp_hidden: int, use_bias: bool, activation: str = "relu",
                 dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: allowed values are "
                             f"{', '.join(ACTIVATIONS)}")
        t, o = num_tokens, fm_tokens + lcb_tokens
        self.num_tokens, self.out_tokens, self.d_model = t, o, d_model
        self.fm_tokens, self.fm_rank = fm_tokens, fm_rank
        init = nnx.initializers.lecun_normal()
        self.fm_proj = nnx.Param(nnx.initializers.normal(t ** -0.5)(rngs.params(), (t, fm_rank),
                                                                    param_dtype))
        self.lcb = nnx.Param(init(rngs.params(), (lcb_tokens, t), param_dtype))
        self.res = (nnx.Param(init(rngs.params(), (o, t), param_dtype)) if t != o else None)
        kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fm_norm = nnx.LayerNorm(t * fm_rank, use_bias=use_bias, dtype=dtype,
                                     param_dtype=param_dtype, rngs=rngs)
        self.mlp_in = nnx.Linear(t * fm_rank, mlp_hidden, **kw)
        self.mlp_out = nnx.Linear(mlp_hidden, fm_tokens * d_model, **kw)
        self.out_norm = nnx.LayerNorm(d_model, use_bias=use_bias, dtype=dtype,
                                      param_dtype=param_dtype, rngs=rngs)
        self.dtype = dtype
        self.activation = activation

    # ------------------------------------------------------------ shared tail
    def _finish(self, fm_xtk: jax.Array, lcb_xod: jax.Array, res_xod: jax.Array) -> jax.Array:
        lead = fm_xtk.shape[:-2]
        flat = self.fm_norm(fm_xtk.reshape(lead + (-1,)))
        fmb = self.mlp_out(ACTIVATIONS[self.activation](self.mlp_in(flat))).reshape(
            lead + (self.fm_tokens, self.d_model))
        return self.out_norm(jnp.concatenate([fmb, lcb_xod], axis=-2) + res_xod)

    # ------------------------------------------------------------ plain form
    def __call__(self, x_xtd: jax.Array) -> jax.Array:
        """[..., t, d] -> [..., n_F + n_L, d]."""
        y_tk = self.fm_proj[...].astype(self.dtype)
        xty_xdk = jnp.einsum("...td,tk->...dk", x_xtd, y_tk)
        fm_xtk = jnp.einsum("...td,...dk->...tk", x_xtd, xty_xdk)
        lcb_xod = jnp.einsum("ot,...td->...od", self.lcb[...].astype(self.dtype), x_xtd)
        res_xod = (x_xtd if self.res is None else
                   jnp.einsum("ot,...td->...od", self.res[...].astype(self.dtype), x_xtd))
        return self._finish(fm_xtk, lcb_xod, res_xod)

    # ------------------------------------------------------------ split form
    def request_part(self, r_btd: jax.Array) -> WukongRequestPart:
        """Request-only shares, computed once per request. r: [b, t_r, d]."""
        tr = r_btd.shape[1]
        y_rk = self.fm_proj[...][:tr].astype(self.dtype)
        xty_bdk = jnp.einsum("btd,tk->bdk", r_btd, y_rk)
        lcb_bod = jnp.einsum("ot,btd->bod", self.lcb[...][:, :tr].astype(self.dtype), r_btd)
        if self.res is None:
            # Identity residual: R's rows pass through; candidates fill the remaining rows.
            res_bod = r_btd
        else:
            res_bod = jnp.einsum("ot,btd->bod", self.res[...][:, :tr].astype(self.dtype), r_btd)
        rxty_btk = jnp.einsum("btd,bdk->btk", r_btd, xty_bdk)
        return WukongRequestPart(xty_bdk=xty_bdk, rxty_btk=rxty_btk, lcb_bod=lcb_bod,
                                 res_bod=res_bod)

    def candidate_part(self, r_btd: jax.Array, c_bctd: jax.Array,
                       part: WukongRequestPart) -> jax.Array:
        """Candidate tokens C [b, c, t_c, d] with the request share -> [b, c, o, d]."""
        tr = r_btd.shape[1]
        y_ck = self.fm_proj[...][tr:].astype(self.dtype)
        rc_bcts = jnp.einsum("btd,bcsd->bcts", r_btd, c_bctd)
        fm_r_bctk = part.rxty_btk[:, None] + jnp.einsum("bcts,sk->bctk", rc_bcts, y_ck)
        cc_bcsu = jnp.einsum("bcsd,bcud->bcsu", c_bctd, c_bctd)
        fm_c_bctk = (jnp.einsum("bcsd,bdk->bcsk", c_bctd, part.xty_bdk)
                     + jnp.einsum("bcsu,uk->bcsk", cc_bcsu, y_ck))
        fm_bctk = jnp.concatenate([fm_r_bctk, fm_c_bctk], axis=2)
        lcb_bcod = part.lcb_bod[:, None] + jnp.einsum(
            "ot,bctd->bcod", self.lcb[...][:, tr:].astype(self.dtype), c_bctd)
        if self.res is None:
            b, c = c_bctd.shape[:2]
            r_bctd = jnp.broadcast_to(part.res_bod[:, None], (b, c) + part.res_bod.shape[1:])
            res_bcod = jnp.concatenate([r_bctd, c_bctd], axis=2)
        else:
            res_bcod = part.res_bod[:, None] + jnp.einsum(
                "ot,bctd->bcod", self.res[...][:, tr:].astype(self.dtype), c_bctd)
        return self._finish(fm_bctk, lcb_bcod, res_bcod)
