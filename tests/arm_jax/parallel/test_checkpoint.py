"""Sharded orbax checkpoints: 8 -> 4 -> 1 devices bit-exact, async save, corruption refused."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from arm_jax.checkpoint import CheckpointError
from arm_jax.embeddings.unified import FieldEmbedding, TableLayout
from arm_jax.parallel.checkpoint import (CorruptCheckpointError, ShardedCheckpointer,
                                         abstract_with)
from arm_jax.parallel.mesh import make_mesh
from arm_jax.parallel.sharding import param_shardings, shard_state
from arm_jax.parallel.step import optimizer_shardings


class Tiny(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.emb = FieldEmbedding(TableLayout.build([256, 256]), 8, rngs=rngs)
        self.out = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, ids):
        return self.out(self.emb(ids).sum(axis=1))


TX = optax.adam(1e-2)


def _setup(mesh):
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Tiny(rngs=nnx.Rngs(0))))
    psh = param_shardings(abstract, mesh, min_shard_bytes=0)
    osh = optimizer_shardings(TX, abstract, psh, mesh)
    return graphdef, abstract, psh, osh


def _train_step(graphdef):
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 10**6, (32, 2)), jnp.int32)

    @jax.jit
    def step(p, o):
        g = jax.grad(lambda q: jnp.mean(nnx.merge(graphdef, q)(ids) ** 2))(p)
        u, o = TX.update(g, o, p)
        return optax.apply_updates(p, u), o

    return step


def _host(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _same(got, want_host):
    """Bit-exact, leaf for leaf; a missing tree (None, as a dropped opt_state) or a missing
    leaf is a difference, not an empty zip that passes."""
    got = _host(got)
    return len(got) == len(want_host) > 0 and all(
        a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(got, want_host))


def _equal(a, b):
    return _same(a, _host(b))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Steps 1 and 2 saved asynchronously from the 8-device mesh, with host copies."""
    root = tmp_path_factory.mktemp("ckpt")
    mesh8 = make_mesh(2, 4)
    graphdef, abstract, psh, osh = _setup(mesh8)
    params = shard_state(nnx.split(Tiny(rngs=nnx.Rngs(0)))[1], mesh8, min_shard_bytes=0)
    opt = jax.jit(TX.init, out_shardings=osh)(params)
    step = _train_step(graphdef)
    params, opt = step(params, opt)
    assert params["emb"]["table"][...].sharding.spec == jax.sharding.PartitionSpec("model", None)
    ckpt = ShardedCheckpointer(root)
    host = {}
    for s in (1, 2):
        host[s] = (_host(params), _host(opt))
        ckpt.save(s, params, opt)            # returns before the write finishes
        params, opt = step(params, opt)      # training goes on meanwhile ...
    ckpt.close()
    return root, host


@pytest.mark.parametrize("devices,data", [(4, 1), (4, 2), (1, 1)])
def test_restore_onto_smaller_meshes_is_bit_exact(saved, devices, data):
    root, host = saved
    mesh = make_mesh(data, devices // data, jax.devices()[:devices])
    _, abstract, psh, osh = _setup(mesh)
    opt_abs = jax.eval_shape(TX.init, abstract)
    with ShardedCheckpointer(root, read_only=True) as ck:
        params, opt = ck.restore(2, abstract_with(abstract, psh), abstract_with(opt_abs, osh))
    table = params["emb"]["table"][...]
    assert table.sharding.mesh.devices.size == devices
    if devices > 1:
        assert table.addressable_shards[0].data.shape[0] == 512 // (devices // data)
    assert _same(params, host[2][0])
    assert _same(opt, host[2][1])


def test_async_save_snapshot_survives_donated_buffers(tmp_path):
    """save() returns before the write; deleting the source buffers right after (what
    donation in the next train step does) must not change what lands on disk."""
    mesh = make_mesh(1, 8)
    graphdef, abstract, psh, osh = _setup(mesh)
    params = shard_state(nnx.split(Tiny(rngs=nnx.Rngs(3)))[1], mesh, min_shard_bytes=0)
    want = _host(params)
    ck = ShardedCheckpointer(tmp_path)
    ck.save(7, params)
    for leaf in jax.tree.leaves(params):
        leaf.delete()
    ck.wait()
    restored, _ = ck.restore(7, abstract_with(abstract, psh))
    assert _same(restored, want)
    ck.close()


def _data_files(step_dir):
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size > 64
                  and "params" in p.parts)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_checkpoint_refused_and_previous_restorable(saved, tmp_path, damage):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(saved[0], root)
    victim = _data_files(root / "steps" / "2")[-1]
    data = bytearray(victim.read_bytes())
    if damage == "truncate":
        victim.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    mesh = make_mesh(1, 8)
    _, abstract, psh, osh = _setup(mesh)
    target = abstract_with(abstract, psh)
    with ShardedCheckpointer(root) as ck:
        word = "truncated" if damage == "truncate" else "corrupted"
        with pytest.raises(CorruptCheckpointError, match=f"step 2: file .* is {word}"):
            ck.restore(2, target)
        step, params, _, refused = ck.restore_latest(target)
    assert step == 1 and len(refused) == 1 and "step 2" in refused[0]
    assert _same(params, saved[1][1][0])


def test_unfinished_save_has_no_digest_and_is_refused(saved, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(saved[0], root)
    (root / "digests" / "2.json").unlink()
    _, abstract, psh, _ = _setup(make_mesh(1, 8))
    with ShardedCheckpointer(root) as ck:
        with pytest.raises(CorruptCheckpointError, match="save never completed"):
            ck.restore(2, abstract_with(abstract, psh))


def test_poll_commits_a_finished_save_without_blocking(tmp_path):
    """A crash skips close(): poll(), called each training step, writes the digest as soon
    as orbax is done, so the newest finished save is restorable without it."""
    import time

    mesh = make_mesh(1, 8)
    _, abstract, psh, _ = _setup(mesh)
    params = shard_state(nnx.split(Tiny(rngs=nnx.Rngs(4)))[1], mesh, min_shard_bytes=0)
    ck = ShardedCheckpointer(tmp_path)
    assert ck.poll()                                   # nothing pending
    ck.save(3, params)
    deadline = time.monotonic() + 60
    while not ck.poll():                               # never blocks: spin until written
        assert time.monotonic() < deadline, "save never finished"
        time.sleep(0.01)
    assert (tmp_path / "digests" / "3.json").exists()
    # a fresh process (no close of the writer) restores it
    restored, _ = ShardedCheckpointer(tmp_path).restore(3, abstract_with(abstract, psh))
    assert _same(restored, _host(params))
    ck.close()


def test_listing_steps_during_a_save_keeps_max_to_keep_and_digests(tmp_path):
    """steps() while a save is in flight (the training loop lists them to prune its own
    files) must not make orbax forget that save: old steps still go, digests stay."""
    ck = ShardedCheckpointer(tmp_path, max_to_keep=2)
    for step in (3, 6, 9):
        ck.save(step, {"w": jnp.full(4, float(step))})
        assert step in ck.steps()
    ck.close()
    assert sorted(p.name for p in (tmp_path / "steps").iterdir()) == ["6", "9"]
    assert sorted(p.name for p in (tmp_path / "digests").iterdir()) == ["6.json", "9.json"]


def test_a_step_orbax_will_not_save_is_an_error_and_discard_frees_it(tmp_path):
    """orbax skips a save at or below its newest step and returns False; taking that for a
    save once wrote a fresh digest over the old (possibly damaged) files."""
    from arm_jax.checkpoint import CheckpointError

    ck = ShardedCheckpointer(tmp_path)
    ck.save(1, {"w": jnp.full(4, 1.0)})
    ck.save(2, {"w": jnp.full(4, 2.0)})
    ck.wait()
    digest = (tmp_path / "digests" / "2.json").read_text()
    with pytest.raises(CheckpointError, match="step 2 was not saved"):
        ck.save(2, {"w": jnp.full(4, 7.0)})
    assert (tmp_path / "digests" / "2.json").read_text() == digest
    ck.discard(2)
    assert ck.steps() == [1] and not (tmp_path / "digests" / "2.json").exists()
    ck.save(2, {"w": jnp.full(4, 7.0)})
    ck.close()
    restored, _ = ShardedCheckpointer(tmp_path).restore(
        2, {"w": jax.ShapeDtypeStruct((4,), jnp.float32)})
    assert np.array_equal(np.asarray(restored["w"]), np.full(4, 7.0, np.float32))


@pytest.mark.parametrize("leaf,saved_dtype,target_dtype", [
    ("params/embed/table", "float32", "bfloat16"),    # orbax cast it: lossy bf16 values
    ("params/step", "int32", "float32"),
    ("opt_state/0/count", "int32", "float32"),        # the optimizer state is checked too
])
def test_a_target_of_another_dtype_is_refused_not_cast(tmp_path, leaf, saved_dtype,
                                                       target_dtype):
    """restore read float32 into a bfloat16 target (and int32 into float32) without a word:
    a restore is bit-exact or a CheckpointError naming the leaf and both dtypes."""
    from arm_jax.checkpoint import CheckpointError
    from arm_jax.compile.weights import flat_key

    params = {"embed": {"table": jnp.full((4, 2), 1.0001, jnp.float32)},
              "step": jnp.arange(3, dtype=jnp.int32)}
    opt = TX.init(params)
    with ShardedCheckpointer(tmp_path) as ck:
        ck.save(1, params, opt)
    p_abs, o_abs = jax.eval_shape(lambda: params), jax.eval_shape(lambda: opt)
    item, path = leaf.split("/", 1)

    def retyped(tree):
        return jax.tree_util.tree_map_with_path(
            lambda k, a: jax.ShapeDtypeStruct(a.shape, jnp.dtype(target_dtype))
            if flat_key(k) == path else a, tree)

    bad_p = retyped(p_abs) if item == "params" else p_abs
    bad_o = retyped(o_abs) if item == "opt_state" else o_abs
    with ShardedCheckpointer(tmp_path) as ck:
        with pytest.raises(CheckpointError,
                           match=rf"step 1: parameter '{leaf}' has shape \[[\d, ]*\] {saved_dtype}, "
                                 rf"the restore target asks for \[[\d, ]*\] {target_dtype}$"):
            ck.restore(1, bad_p, bad_o)
        with pytest.raises(CheckpointError, match=leaf):   # not taken for a damaged step
            ck.restore_latest(bad_p, bad_o)
        got_p, got_o = ck.restore(1, p_abs, o_abs)          # the same dtypes: bit-exact
    assert _equal(got_p, params) and _equal(got_o, opt)
    assert all(a.dtype == b.dtype for a, b in zip(jax.tree.leaves(got_p),
                                                  jax.tree.leaves(params)))


@pytest.mark.parametrize("record", [b"\xff\xfe", b"[]", b'{"files": null}', b'{"files": []}'])
def test_a_damaged_digest_record_is_a_corrupt_step_and_the_previous_restores(saved, tmp_path,
                                                                            record):
    """A digest file that is not UTF-8, or JSON of another shape, was a UnicodeDecodeError
    or a TypeError traceback from --resume, not a refusal of that step."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(saved[0], root)
    (root / "digests" / "2.json").write_bytes(record)
    mesh = make_mesh(1, 8)
    _, abstract, psh, _ = _setup(mesh)
    target = abstract_with(abstract, psh)
    with ShardedCheckpointer(root) as ck:
        with pytest.raises(CorruptCheckpointError, match="step 2: "):
            ck.restore(2, target)
        step, params, _, refused = ck.restore_latest(target)
    assert step == 1 and len(refused) == 1 and "step 2" in refused[0]
    assert _same(params, saved[1][1][0])


def test_read_only_creates_nothing_and_refuses_writes(saved, tmp_path):
    """A mistyped root for a restore used to become a new, empty checkpoint directory."""
    missing = tmp_path / "ckpt-typo"
    with pytest.raises(CheckpointError, match=r"ckpt-typo: no sharded checkpoint there"):
        ShardedCheckpointer(missing, read_only=True)
    assert not missing.exists()
    root, _ = saved
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with ShardedCheckpointer(root, read_only=True) as ck:
        assert ck.steps() == [1, 2]
        with pytest.raises(CheckpointError, match="opened read_only, cannot save step 3"):
            ck.save(3, {"w": jnp.zeros(2)})
        with pytest.raises(CheckpointError, match="opened read_only, cannot discard step 1"):
            ck.discard(1)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_save_that_fails_in_the_background_leaves_the_previous_step_and_retries(tmp_path):
    """A tree orbax cannot write (here a string array) fails in the background write: the
    error surfaces once, at wait(); the failed step gets no digest and is no step, the one
    before it restores bit-exact, and the same step saved again (or a later save, close)
    is not blocked by the failed one."""
    target = {"w": jax.ShapeDtypeStruct((4,), jnp.float32)}
    ck = ShardedCheckpointer(tmp_path)
    ck.save(1, {"w": jnp.full(4, 1.0)})
    ck.save(2, {"w": np.array(["not", "a", "weight", "!"])})
    with pytest.raises(CheckpointError, match=r"step 2 was not saved: .*str"):
        ck.wait()
    assert ck.steps() == [1]
    assert sorted(p.name for p in (tmp_path / "digests").iterdir()) == ["1.json"]
    step, restored, _, refused = ck.restore_latest(target)
    assert step == 1 and refused == [] and np.array_equal(np.asarray(restored["w"]),
                                                          np.full(4, 1.0, np.float32))
    ck.save(2, {"w": jnp.full(4, 2.0)})
    ck.close()
    again = ShardedCheckpointer(tmp_path, read_only=True)
    assert again.steps() == [1, 2]
    restored, _ = again.restore(2, target)
    assert np.array_equal(np.asarray(restored["w"]), np.full(4, 2.0, np.float32))


def test_close_after_a_failed_background_save_stops_orbax_threads(tmp_path):
    """close() raised the failed save's error before closing orbax's manager, whose
    non-daemon threads then outlived the checkpointer."""
    import threading

    before = set(threading.enumerate())
    ck = ShardedCheckpointer(tmp_path)
    ck.save(1, {"w": np.array(["not", "a", "weight"])})
    with pytest.raises(CheckpointError, match="step 1 was not saved"):
        ck.close()
    left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()
            and not t.daemon]
    assert left == [], left


@pytest.mark.parametrize("step", [np.int64(3), jnp.int32(3)], ids=["numpy", "jax"])
def test_a_numpy_or_jax_integer_step_is_saved_and_restored(tmp_path, step):
    """A step counter from numpy or jax (the usual case in a training loop) was written,
    then wait() raised a bare TypeError from json.dumps of its digest: the step never got
    one and stayed on disk, never restorable. max_to_keep may be a numpy integer too."""
    params = {"w": jnp.ones((4, 2)), "b": jnp.zeros(2)}
    target = jax.eval_shape(lambda: params)
    with ShardedCheckpointer(tmp_path / "ck", max_to_keep=np.int64(1)) as ck:
        ck.save(step - 1, params)
        ck.save(step, params)
        ck.wait()
        assert ck.steps() == [3]
        got, restored, _, refused = ck.restore_latest(target)
    assert got == 3 and type(got) is int and refused == []
    assert sorted(p.name for p in (tmp_path / "ck" / "digests").iterdir()) == ["3.json"]
    assert _equal(restored, params)


@pytest.mark.parametrize("max_to_keep", [0, -1, 1.5, True])
def test_max_to_keep_below_one_is_refused_before_anything_is_created(tmp_path, max_to_keep):
    """max_to_keep=0 was accepted, and orbax then deleted every step it saved: each
    checkpoint silently lost."""
    with pytest.raises(CheckpointError, match=rf"max_to_keep={max_to_keep!r}: must be None "
                                              r"\(keep every step\) or an integer >= 1"):
        ShardedCheckpointer(tmp_path / "ck", max_to_keep=max_to_keep)
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("step", [-1, 2.5, np.float32(2), "3", True])
def test_a_step_that_is_no_integer_from_zero_is_refused(tmp_path, step):
    """save(-1) was written but invisible to steps() and restore_latest; save(2.5) returned
    normally and was never restorable: the save was silently lost."""
    with ShardedCheckpointer(tmp_path / "ck") as ck:
        with pytest.raises(CheckpointError, match=rf"step={re.escape(repr(step))}: must be an "
                                                  r"integer >= 0"):
            ck.save(step, {"w": jnp.ones(2)})
        assert ck.steps() == []
    assert sorted(p.name for p in (tmp_path / "ck" / "steps").iterdir()) == []


_SAVE_AFTER_CLOSE = """
import os, sys
import jax.numpy as jnp
from arm_jax.checkpoint import CheckpointError
from arm_jax.parallel.checkpoint import ShardedCheckpointer
ck = ShardedCheckpointer(sys.argv[1])
ck.save(1, {"w": jnp.ones(2)})
ck.close()
ck.close()               # closing again does nothing
for call in (lambda: ck.save(2, {"w": jnp.ones(2)}), lambda: ck.discard(1),
             lambda: ck.restore(1, {"w": jnp.ones(2)}),
             lambda: ck.restore_latest({"w": jnp.ones(2)})):
    try:
        call()
    except CheckpointError as e:
        print("REFUSED", e)
    else:
        print("ACCEPTED", flush=True)
        os._exit(3)      # orbax's orphaned threads would hold a normal exit for ~300 s
print("STEPS", ck.steps())
"""


def test_save_discard_and_restore_after_close_are_refused(tmp_path):
    """A save after close() returned normally, left steps/2.orbax-checkpoint-tmp behind, its
    failure surfaced at the next call, and the orbax threads it started held the
    interpreter's exit for ~5 minutes. Run in a subprocess: such a hang must fail here
    (timeout) and never stall the test process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", _SAVE_AFTER_CLOSE, str(tmp_path / "ck")],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 0, (out.stdout[-500:], out.stderr[-500:])
    lines = out.stdout.splitlines()
    assert [line.split(": ", 1)[1] for line in lines[:4]] == [
        "closed, cannot save step 2", "closed, cannot discard step 1",
        "closed, cannot restore step 1", "closed, cannot restore"], lines
    assert lines[4:] == ["STEPS [1]"], lines
    assert sorted(p.name for p in (tmp_path / "ck" / "steps").iterdir()) == ["1"]


@pytest.mark.parametrize("read_only", [False, True])
def test_an_empty_root_is_refused_not_the_current_directory(tmp_path, monkeypatch, read_only):
    """ShardedCheckpointer('') made Path('') (the current directory) the checkpoint root
    and created digests/ and steps/ in it."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint root '': names no directory"):
        ShardedCheckpointer("", read_only=read_only)
    assert list(tmp_path.iterdir()) == []


def test_a_root_at_or_under_a_file_or_uncreatable_is_a_checkpoint_error(tmp_path):
    """A root under a file raised a bare NotADirectoryError from mkdir (FileNotFoundError
    where no directory can be made), naming no checkpoint."""
    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(CheckpointError, match=f"checkpoint root {afile / 'ck'}: {afile} is a "
                                              "file, not a directory"):
        ShardedCheckpointer(afile / "ck")
    with pytest.raises(CheckpointError, match=f"checkpoint root {afile}: exists and is not a "
                                              "directory"):
        ShardedCheckpointer(afile)
    if os.path.isdir("/proc"):
        with pytest.raises(CheckpointError, match="checkpoint root /proc/arm_jax_test/ck: "
                                                  "cannot create it"):
            ShardedCheckpointer("/proc/arm_jax_test/ck")


def test_params_holding_nan_or_inf_are_refused_unless_allowed(tmp_path):
    """A NaN or inf in the params was saved without a word (a resume then restored a
    diverged state). Refused now naming the leaf and the count; allow_nonfinite saves."""
    mesh = make_mesh(2, 1, devices=jax.devices()[:2])
    w = jax.device_put(jnp.ones((4, 2)).at[1].set(jnp.nan).at[3, 0].set(jnp.inf),
                       jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
    params = {"ok": jnp.zeros(3, jnp.int32), "layer": {"w": w}}
    with ShardedCheckpointer(tmp_path / "ck", async_save=False) as ck:
        with pytest.raises(CheckpointError, match=r"step 0: params: parameter 'layer/w' holds "
                                                  r"3 non-finite values \(NaN or inf\) of 8"):
            ck.save(0, params)
        assert ck.steps() == []
        ck.save(0, params, allow_nonfinite=True)
        ck.wait()
        assert ck.steps() == [0]


def test_abstract_with_shardings_of_another_tree_is_a_checkpoint_error():
    """jax.tree.map raised a multi-line 'pytree structure error' ValueError."""
    s = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    tree = {"a": jnp.ones(2), "b": {"c": jnp.ones(3)}}
    with pytest.raises(CheckpointError, match=r"abstract_with: shardings: the tree does not "
                                              r"match .*missing \['b/c'\], unexpected \['b'\]"):
        abstract_with(tree, {"a": s, "b": s})
    assert abstract_with(tree, {"a": s, "b": {"c": s}})["b"]["c"].sharding == s
