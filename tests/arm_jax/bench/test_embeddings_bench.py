"""`bench embeddings` refuses sizes that do not shard evenly, before it starts a child."""

import pytest

from arm_jax.bench.embeddings import check_sizes, run_in_subprocess


@pytest.mark.parametrize("devices, rows, lookups, field", [
    (3, 1 << 18, 1 << 16, "devices=3"),
    (1, 1 << 18, 1 << 16, "devices=1"),
    (6, 1 << 18, 1 << 16, "rows=262144"),
    (4, 1000, 10, "lookups=10"),
])
def test_uneven_sizes_are_refused_by_name(devices, rows, lookups, field):
    with pytest.raises(ValueError, match=field):
        check_sizes(devices, rows, lookups)


def test_even_sizes_pass():
    check_sizes(6, 6000, 600)


def test_the_child_is_not_started_for_uneven_sizes(tmp_path):
    # A child that started would fail with a JAX IndivisibleError traceback.
    with pytest.raises(ValueError, match="rows=262144: must be a multiple of devices=6"):
        run_in_subprocess(devices=6, rows=1 << 18, dim=8, lookups=600, repeats=1,
                          out_json=str(tmp_path / "e.json"))
    assert not (tmp_path / "e.json").exists()


def test_checkpoint_timing_starts_with_the_table_on_the_devices_and_skips_the_first_save(
        monkeypatch):
    """save() was timed once, while the table's device_put was still copying and with
    orbax's first-call start-up in it: both charged to `save_call_ms`."""
    import time

    import jax

    from arm_jax.bench import embeddings
    from arm_jax.parallel import checkpoint

    pending: set[int] = set()
    saves: list[bool] = []

    class Jax:       # `jax`, with device_put results pending until blocked on
        def __getattr__(self, name):
            return getattr(jax, name)

        def device_put(self, *a, **k):
            out = jax.device_put(*a, **k)
            pending.add(id(out))
            return out

        def block_until_ready(self, x):
            pending.discard(id(x))
            return jax.block_until_ready(x)

    class FakeCheckpointer:
        def __init__(self, directory):
            pass

        def save(self, step, tree):
            saves.append(id(tree["table"]) in pending)
            if len(saves) == 1:
                time.sleep(0.2)         # orbax's first save: threads, imports

        def wait(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(embeddings, "jax", Jax())
    monkeypatch.setattr(checkpoint, "ShardedCheckpointer", FakeCheckpointer)
    out = embeddings._checkpoint_figures(8, rows=64, repeats=3)
    assert saves == [False] * 4          # never timed against an unfinished copy
    assert out["repeats"] == 3 and out["bytes"] == 64 * 32 * 4
    assert out["save_call_ms"] < 100 and out["save_total_ms"] < 100   # the first save untimed
