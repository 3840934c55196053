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
