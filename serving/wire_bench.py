"""`arm-jax bench wire`: what each /v1/rank body format costs, per request, in this process.

For each candidate count, one random request of the tier's schema (`--history` inline
events) is encoded as JSON, msgpack and an Arrow IPC stream, and timed through:
- `encode_us`: the client turning the payload dict into body bytes (`encode_payload`);
- `decode_us`: the server's body -> RequestBatch (`parse_rank_body` then `pack_batch`:
  parsing, validation, packing; everything the handler does before routing);
- `answer_us`: the server encoding the answer (N scores per task, the ranking);
- `bytes`: the body's size.
Before timing, the three formats must decode to identical batches (else the bench stops).
Medians over `repeats`, the three formats interleaved so drift hits each alike; ratios
(JSON / Arrow, msgpack / Arrow) come from the same run. No server or model is involved:
the transport and the tier's compute are the same whatever the body.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from tqdm import tqdm

from arm_jax.bench.figures import pyplot, save_png
from arm_jax.bench.timing import interleaved_median_ms, machine_info, publish
from arm_jax.config import load_tier
from serving.wire import parse_rank_body
from serving.arrow_wire import encode_response
from serving.client import WIRES, encode_payload, random_request
from serving.schema import pack_batch



def _answer(n: int, tasks: int, rng: np.random.Generator) -> tuple[dict[str, Any], np.ndarray]:
    """A response body as the server builds it, and its float32 probabilities."""
    probs = rng.random((n, tasks), dtype=np.float32)
    order = np.argsort(-probs[:, 0], kind="stable")
    body = {"request_id": "bench", "tier": "large", "preferred_tier": "large",
            "degraded": False, "degraded_reason": None, "history_source": "inline",
            "tasks": [f"t{i}" for i in range(tasks)],
            "scores": np.asarray(probs, np.float64).round(7).tolist(),
            "ranking": [int(i) for i in order], "top_scores": [float(probs[i, 0]) for i in order],
            "bucket": [1, n], "batch_size": 1,
            "timings": {"queue_ms": 0.1, "compute_ms": 1.0, "total_ms": 1.2}}
    return body, probs


def _answer_thunk(wire: str, body: dict[str, Any], probs: np.ndarray):
    if wire == "json":     # what JSONResponse renders
        return lambda: json.dumps(body, ensure_ascii=False, allow_nan=False,
                                  separators=(",", ":")).encode()
    if wire == "msgpack":
        return lambda: msgpack.packb(body)
    return lambda: encode_response(body, probs)


def _same_batches(batches: dict[str, Any]) -> None:
    ref = batches["json"]
    for wire, b in batches.items():
        for name, want in vars(ref).items():
            got = getattr(b, name)
            if isinstance(want, np.ndarray) and not np.array_equal(got, want):
                raise AssertionError(f"{wire} decodes {name} differently from JSON")


def run_wire_bench(*, tier: str = "large", candidates: tuple[int, ...] = (16, 256, 1024),
                   history: int = 256, repeats: int = 15, seed: int = 0,
                   overrides: tuple[str, ...] = (), out_json: str | Path | None = None
                   ) -> dict[str, Any]:
    """Time encode / decode / answer for every wire format at each candidate count."""
    cfg = load_tier(tier, list(overrides))
    f = cfg.features
    for name, v, lo, hi in (("history", history, 0, f.max_history),
                            ("repeats", repeats, 1, None)):
        if v < lo or (hi is not None and v > hi):
            raise ValueError(f"{name}={v}: must be in [{lo}, {hi}]" if hi is not None
                             else f"{name}={v}: must be >= {lo}")
    for n in candidates:
        if not 1 <= n <= f.max_candidates:
            raise ValueError(f"candidates={n}: must be in [1, {f.max_candidates}] "
                             "(features.max_candidates)")
    rng = np.random.default_rng(seed)
    rows = []
    for n in tqdm(candidates, desc="bench wire", unit="size"):
        payload = random_request(f.__dict__, candidates=n, history=history, rng=rng)
        bodies = {w: encode_payload(payload, w) for w in WIRES}     # (bytes, content type)

        def decode(w: str):
            _, arrays, _ = parse_rank_body(*bodies[w], f, f.max_candidates)
            return pack_batch(arrays, f, f.max_candidates)

        _same_batches({w: decode(w) for w in WIRES})
        answer, probs = _answer(n, len(f.tasks), rng)
        thunks = {}
        for w in WIRES:
            thunks[f"encode/{w}"] = lambda w=w: encode_payload(payload, w)
            thunks[f"decode/{w}"] = lambda w=w: decode(w)
            thunks[f"answer/{w}"] = _answer_thunk(w, answer, probs)
        for fn in thunks.values():      # warm: first calls import and allocate
            fn()
        ms = interleaved_median_ms(thunks, repeats)
        row = {"candidates": n}
        for w in WIRES:
            row[w] = {"bytes": len(bodies[w][0]),
                      **{f"{k}_us": ms[f"{k}/{w}"] * 1e3 for k in ("encode", "decode", "answer")}}
        for k in ("encode", "decode", "answer"):
            row[f"{k}_json_over_arrow"] = row["json"][f"{k}_us"] / row["arrow"][f"{k}_us"]
            row[f"{k}_msgpack_over_arrow"] = row["msgpack"][f"{k}_us"] / row["arrow"][f"{k}_us"]
        rows.append(row)
    res = {"bench": "wire", "machine": machine_info(),
           "config": {"tier": tier, "history": history, "repeats": repeats, "seed": seed,
                      "features": {k: v for k, v in f.__dict__.items() if k != "tasks"}},
           "rows": rows}
    return publish(res, out_json, format_table, plot)


def format_table(res: dict[str, Any]) -> str:
    c = res["config"]
    lines = [f"per request, history {c['history']} events inline, median of {c['repeats']} "
             "(microseconds; KB of body)",
             f"{'N':>6} {'wire':>8} {'KB':>8} {'encode':>9} {'decode':>9} {'answer':>9}"]
    for r in res["rows"]:
        for w in WIRES:
            x = r[w]
            lines.append(f"{r['candidates']:>6} {w:>8} {x['bytes'] / 1e3:>8.1f} "
                         f"{x['encode_us']:>9.0f} {x['decode_us']:>9.0f} {x['answer_us']:>9.0f}")
        lines.append(f"{'':>6} {'json/arrow':>17}  encode {r['encode_json_over_arrow']:.1f}x  "
                     f"decode {r['decode_json_over_arrow']:.1f}x  "
                     f"answer {r['answer_json_over_arrow']:.1f}x   (msgpack/arrow: decode "
                     f"{r['decode_msgpack_over_arrow']:.1f}x)")
    return "\n".join(lines)


def plot(res: dict[str, Any], png: Path) -> Path:
    plt = pyplot()

    rows = res["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    x = np.arange(len(rows))
    width = 0.27
    for ax, key, title in zip(axes, ("encode_us", "decode_us", "bytes"),
                              ("client encode (us)", "server decode + pack (us)", "body bytes")):
        for i, w in enumerate(WIRES):
            ax.bar(x + (i - 1) * width, [r[w][key] for r in rows], width, label=w)
        ax.set_xticks(x, [str(r["candidates"]) for r in rows])
        ax.set_xlabel("candidates")
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"/v1/rank body formats, history {res['config']['history']} events")
    fig.tight_layout()
    return save_png(fig, png)


__all__ = ["run_wire_bench", "format_table"]
