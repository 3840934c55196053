"""`arm-jax bench embeddings`: sharded vs single-device lookups, planner vs XLA, pruning.

Runs on `devices` host CPU devices (`--xla_force_host_platform_device_count`), set in a
child process before JAX starts (flags cannot change once a backend exists). Figures:

- lookups/s of one [rows, dim] f32 table, one batch of ids: single device vs the same
  table row-sharded on the mesh, three algorithms (plain jit, masked shard_map,
  all_to_all routing) on data=1 x model=K and data=2 x model=K/2. `parity` = best
  sharded / single device (the layout used is named); every layout's figure is in the
  JSON. Every output is checked bit-equal to the single-device result.
- `planner_error`: the planner against XLA's memory_analysis() of the compiled sharded
  serve and train steps (argument + output - alias + temp bytes per device), the worse
  of the two, on a data=2 x model=K/2 mesh; `planner_error_worst` adds data=1 x model=K.
- pruning: the candidate-field table of the small tier, rows never hit by the synthetic
  training requests dropped; rows / bytes saved and the share of held-out lookups that
  fall on a pruned row.
- async checkpoint: how long `save()` blocks vs the full write (medians of 3 saves
  after an untimed one; the table is on the devices before the clock starts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from arm_jax.bench.figures import pyplot, save_png
from arm_jax.bench.timing import machine_info, write_json

_CHILD_ENV = "ARM_JAX_BENCH_EMBEDDINGS_CHILD"


def check_sizes(devices: int, rows: int, lookups: int) -> None:
    """Raise ValueError naming the field unless the sizes shard evenly.

    The layouts put the table's rows over `model` = devices (and devices / 2 on the
    headline data=2 mesh) and the all-to-all splits the ids over every device.
    """
    if devices < 2 or devices % 2:
        raise ValueError(f"devices={devices}: must be an even number >= 2 (the headline "
                         f"mesh is data=2 x model=devices/2)")
    for name, v in (("rows", rows), ("lookups", lookups)):
        if v % devices:
            raise ValueError(f"{name}={v}: must be a multiple of devices={devices} (rows are "
                             f"sharded over the devices, ids split over them); try "
                             f"{name}={max(devices, v // devices * devices)}")


def run_in_subprocess(*, devices: int, rows: int, dim: int, lookups: int, repeats: int,
                      out_json: str) -> int:
    """Re-run this benchmark in a child process that has `devices` host devices."""
    check_sizes(devices, rows, lookups)
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env.setdefault("JAX_PLATFORMS", "cpu")
    env[_CHILD_ENV] = "1"
    cmd = [sys.executable, "-m", "arm_jax.bench.embeddings", str(devices), str(rows), str(dim),
           str(lookups), str(repeats), out_json]
    return subprocess.call(cmd, env=env)


def _lookup_figures(devices: int, rows: int, dim: int, lookups: int, repeats: int
                    ) -> dict[str, Any]:
    from arm_jax.parallel.lookup import all_to_all_lookup, lookup, shard_map_lookup
    from arm_jax.parallel.mesh import make_mesh
    from jax.sharding import NamedSharding, PartitionSpec as P

    r = np.random.default_rng(0)
    table = r.normal(size=(rows, dim)).astype(np.float32)
    ids = r.integers(0, rows, size=(lookups,)).astype(np.int32)
    dev0 = jax.devices()[0]
    single = jax.jit(lookup)
    calls = {"single device": (single, jax.device_put(table, dev0), jax.device_put(ids, dev0))}
    want = np.asarray(single(*calls["single device"][1:]))
    exact: dict[str, bool] = {}
    for kind in ("jit", "shard_map", "all_to_all"):
        for data in (1, 2):
            mesh = make_mesh(data, devices // data)
            ids_spec = P(("data", "model")) if kind == "all_to_all" else P("data")
            fn = {"jit": jax.jit(lookup),
                  "shard_map": jax.jit(lambda a, b, m=mesh: shard_map_lookup(a, b, m)),
                  "all_to_all": jax.jit(lambda a, b, m=mesh: all_to_all_lookup(a, b, m))}[kind]
            name = f"{kind} data={data} x model={devices // data}"
            calls[name] = (fn, jax.device_put(table, NamedSharding(mesh, P("model", None))),
                           jax.device_put(ids, NamedSharding(mesh, ids_spec)))
            exact[name] = bool(np.array_equal(np.asarray(fn(*calls[name][1:])), want))
    # Interleaved rounds: each round times every variant once, so load from other
    # processes on this shared machine hits all variants alike; medians per variant.
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in tqdm(range(repeats + 2), desc="lookup rounds", unit="round"):
        for name, (fn, a, b) in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(a, b))
            times[name].append(time.perf_counter() - t0)
    ms = {k: float(np.median(v[2:]) * 1e3) for k, v in times.items()}
    out: dict[str, Any] = {"single_device_ms": ms["single device"],
                           "single_device_lookups_per_s": lookups / (ms["single device"] * 1e-3),
                           "layouts": {}}
    for name in exact:
        out["layouts"][name] = {"ms": ms[name], "lookups_per_s": lookups / (ms[name] * 1e-3),
                                "exact": exact[name]}
    best = max(out["layouts"], key=lambda k: out["layouts"][k]["lookups_per_s"])
    out["sharded_layout"] = best
    out["sharded_lookups_per_s"] = out["layouts"][best]["lookups_per_s"]
    out["parity"] = out["sharded_lookups_per_s"] / out["single_device_lookups_per_s"]
    out["all_exact"] = all(v["exact"] for v in out["layouts"].values())
    return out


PLANNER_TIER = ("model.d_model=16", "model.history_len=12", "model.encoder_heads=2",
                "model.target_heads=2", "model.mlp_hidden=32", "model.head_hidden=16",
                "model.fm_tokens=4", "model.lcb_tokens=4", "model.fm_rank=4",
                "model.summary_tokens=2", "features.req_sparse_fields=3",
                "features.req_dense_features=4", "features.cand_sparse_fields=3",
                "features.cand_dense_features=2", "features.sparse_hash_size=32768",
                "features.item_hash_size=32768", "train.batch_size=16", "train.candidates=16")


def _planner_figures(devices: int) -> dict[str, Any]:
    """Headline: the data=2 x model=K/2 mesh. Also checked: pure model parallelism
    (data=1 x model=K); the worse of the two is `planner_error_worst` in the JSON."""
    from arm_jax.config import load_tier
    from arm_jax.parallel.plan_check import compare_with_xla

    tier = load_tier("small", PLANNER_TIER)
    data = 2 if devices % 2 == 0 and devices > 1 else 1
    meshes = [(data, devices // data)] + ([(1, devices)] if data != 1 else [])
    runs = []
    for d, m in meshes:
        _, checks = compare_with_xla(tier, data=d, model=m, batch=4, candidates=32,
                                     min_shard_bytes=0)
        runs.append({"mesh": [d, m], "checks": [c.to_dict() for c in checks],
                     "error": max(c.error for c in checks)})
    return {"tier": "small + " + " ".join(PLANNER_TIER),
            "compared": "argument + output - alias + temp bytes per device",
            "mesh": runs[0]["mesh"], "checks": runs[0]["checks"],
            "planner_error": runs[0]["error"], "other_meshes": runs[1:],
            "planner_error_worst": max(r["error"] for r in runs)}


def _pruning_figures() -> dict[str, Any]:
    from flax import nnx

    from arm_jax.config import load_tier
    from arm_jax.data.synthetic import SyntheticSpec, SyntheticWorld
    from arm_jax.embeddings.pruning import prune, row_counts
    from arm_jax.model.embeddings import HashedEmbedding

    tier = load_tier("small")
    f = tier.features
    world = SyntheticWorld.generate(SyntheticSpec(num_users=2000, seed=0), f)
    train = world.sample_examples(4000, 16, seed=1)
    test = world.sample_examples(1000, 16, seed=2)
    emb = HashedEmbedding(f.cand_sparse_fields, f.sparse_hash_size, tier.model.d_model,
                          salt_base=1 << 10, rngs=nnx.Rngs(0))
    counts = row_counts(emb, train.cand_sparse[train.cand_mask])
    pruned, rep = prune(emb, counts, min_count=1)
    test_ids = jnp.asarray(test.cand_sparse[test.cand_mask], jnp.int32)
    test_rows = np.asarray(emb.rows(test_ids))
    miss = float((counts[test_rows] == 0).mean())
    kept = counts[test_rows] > 0
    same = bool(np.array_equal(np.asarray(pruned(test_ids))[kept], np.asarray(emb(test_ids))[kept]))
    return {"table": f"cand_sparse {f.cand_sparse_fields} fields x {f.sparse_hash_size} rows "
                     f"x {tier.model.d_model}",
            **rep.to_dict(), "heldout_lookups_on_pruned_rows": miss,
            "kept_rows_exact": same}


def _checkpoint_figures(devices: int, rows: int = 1 << 20, repeats: int = 3
                        ) -> dict[str, Any]:
    """How long `save()` blocks and the whole write take: medians of `repeats` saves after
    one untimed save (orbax's first save starts its threads and imports its handlers)."""
    from arm_jax.parallel.checkpoint import ShardedCheckpointer
    from arm_jax.parallel.mesh import make_mesh
    from jax.sharding import NamedSharding, PartitionSpec as P

    mesh = make_mesh(1, devices)
    rows = max(devices, rows // devices * devices)
    table = jax.device_put(np.random.default_rng(0).normal(size=(rows, 32)).astype(np.float32),
                           NamedSharding(mesh, P("model", None)))
    # device_put returns before the copy is done: unfinished, save() would wait for it and
    # be charged for a transfer that is no part of checkpointing
    jax.block_until_ready(table)
    blocked, total = [], []
    for i in range(repeats + 1):
        with tempfile.TemporaryDirectory() as d:  # a fresh root each: no old step to delete
            ck = ShardedCheckpointer(d)
            t0 = time.perf_counter()
            ck.save(1, {"table": table})
            t_save = time.perf_counter()
            ck.wait()
            t_done = time.perf_counter()
            ck.close()
        if i:       # the first save warms orbax up
            blocked.append(t_save - t0)
            total.append(t_done - t0)
    return {"bytes": int(table.nbytes), "repeats": repeats,
            "save_call_ms": float(np.median(blocked) * 1e3),
            "save_total_ms": float(np.median(total) * 1e3)}


def run_embeddings_bench(devices: int = 8, rows: int = 1 << 18, dim: int = 64,
                         lookups: int = 1 << 16, repeats: int = 20,
                         out_json: str | Path | None = None) -> dict[str, Any]:
    """Sharded vs single-device lookups, the planner against XLA's memory analysis, pruning,
    and how long an async save blocks (see the module docstring); needs `devices` devices in
    this process (the CLI starts a child with them). Prints the table, writes JSON and a PNG."""
    check_sizes(devices, rows, lookups)
    if jax.device_count() < devices:
        raise ValueError(f"bench embeddings needs {devices} devices, this process has "
                         f"{jax.device_count()} (run it through `arm-jax bench embeddings`)")
    steps = tqdm(total=4, desc="bench embeddings", unit="part")
    look = _lookup_figures(devices, rows, dim, lookups, repeats)
    steps.update()
    plan = _planner_figures(devices)
    steps.update()
    pruning = _pruning_figures()
    steps.update()
    ckpt = _checkpoint_figures(devices)
    steps.update()
    steps.close()
    result = {
        "benchmark": "embeddings", "machine": machine_info(),
        "config": {"devices": devices, "rows": rows, "dim": dim, "lookups": lookups,
                   "repeats": repeats},
        "devices": devices,
        "single_device_lookups_per_s": look["single_device_lookups_per_s"],
        "single_device_ms": look["single_device_ms"],
        "sharded_lookups_per_s": look["sharded_lookups_per_s"],
        "sharded_layout": look["sharded_layout"],
        "parity": look["parity"], "parity_target": 0.8,
        "load_average_1m": os.getloadavg()[0],
        "parity_note": ("host 'devices' are threads sharing this machine's cores and their "
                        "collectives are in-process copies; the single-device gather uses the "
                        "same cores alone, so parity here mostly measures collective overhead "
                        "and the load other processes put on the machine"),
        "lookups_exact": look["all_exact"], "lookup_layouts": look["layouts"],
        "planner_error": plan["planner_error"], "planner_error_target": 0.10,
        "planner_error_worst": plan["planner_error_worst"], "planner": plan,
        "pruning_rows_saved": pruning["rows_saved"],
        "pruning_bytes_saved": pruning["bytes_saved"], "pruning": pruning,
        "async_checkpoint": ckpt,
    }
    print(format_table(result))
    if out_json:
        p = write_json(out_json, result)
        plot_embeddings(result, Path(p).with_suffix(".png"))
        print(f"wrote {p} and {Path(p).with_suffix('.png')}")
    return result


def format_table(res: dict[str, Any]) -> str:
    lines = [f"{'lookups (' + str(res['config']['lookups']) + ' ids)':<34}{'ms':>10}"
             f"{'lookups/s':>16}{'exact':>7}",
             f"{'single device':<34}{res['single_device_ms']:>10.3f}"
             f"{res['single_device_lookups_per_s']:>16,.0f}{'-':>7}"]
    for name, v in res["lookup_layouts"].items():
        lines.append(f"{name:<34}{v['ms']:>10.3f}{v['lookups_per_s']:>16,.0f}"
                     f"{str(v['exact']):>7}")
    lines.append(f"parity (best sharded / single) {res['parity']:.2f}  (target >= 0.8; "
                 f"{res['sharded_layout']}; 1-min load average {res['load_average_1m']:.1f})")
    runs = [{"mesh": res["planner"]["mesh"], "checks": res["planner"]["checks"]}]
    for run in runs + res["planner"]["other_meshes"]:
        d, m = run["mesh"]
        for c in run["checks"]:
            lines.append(f"planner data={d} x model={m} {c['scenario']:<16} predicted "
                         f"{c['predicted']:>12,} B  XLA {c['measured']:>12,} B  "
                         f"error {c['error']:.3f}")
    lines.append(f"planner_error {res['planner_error']:.3f} (target <= 0.10; mesh "
                 f"{res['planner']['mesh']}); worst over meshes {res['planner_error_worst']:.3f}")
    pr = res["pruning"]
    lines.append(f"pruning {pr['table']}: rows {pr['rows_before']:,} -> {pr['rows_after']:,} "
                 f"(saved {pr['rows_saved']:,}), bytes saved {pr['bytes_saved']:,}; held-out "
                 f"lookups on pruned rows {pr['heldout_lookups_on_pruned_rows']:.3%}")
    ck = res["async_checkpoint"]
    lines.append(f"async checkpoint of {ck['bytes']:,} B: save() blocks {ck['save_call_ms']:.1f} "
                 f"ms of {ck['save_total_ms']:.1f} ms total (medians of {ck['repeats']} saves)")
    return "\n".join(lines)


def plot_embeddings(res: dict[str, Any], png: Path) -> Path:
    plt = pyplot()

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["single device"] + list(res["lookup_layouts"])
    vals = [res["single_device_lookups_per_s"]] + [v["lookups_per_s"]
                                                   for v in res["lookup_layouts"].values()]
    a.barh(names, [v / 1e6 for v in vals], color=["grey"] + ["tab:blue"] * (len(names) - 1))
    a.set_xlabel("million lookups / s")
    a.set_title(f"table lookups, {res['devices']} host devices (parity {res['parity']:.2f})")
    checks = res["planner"]["checks"]
    x = np.arange(len(checks))
    b.bar(x - 0.2, [c["predicted"] / 2**20 for c in checks], 0.4, label="planner")
    b.bar(x + 0.2, [c["measured"] / 2**20 for c in checks], 0.4, label="XLA memory_analysis")
    b.set_xticks(x, [c["scenario"] for c in checks])
    b.set_ylabel("MiB per device")
    b.set_title(f"planner vs XLA (max error {res['planner_error']:.3f})")
    b.legend()
    fig.tight_layout()
    return save_png(fig, png)


if __name__ == "__main__":
    dev, rws, dm, lk, rep, out = sys.argv[1:7]
    run_embeddings_bench(int(dev), int(rws), int(dm), int(lk), int(rep), out)
