"""Benches refuse sizes that cannot fit in memory before any work."""

from __future__ import annotations

import pytest

from arm_jax.bench.memory import check_fits_in_memory, physical_memory_bytes
from arm_jax.cli.main import main


def test_physical_memory_is_known_here():
    total = physical_memory_bytes()
    assert total is not None and total > 1 << 28


def test_the_check_names_the_sizes_and_both_amounts():
    check_fits_in_memory(1 << 30, "rows=1", available_bytes=1 << 31)
    with pytest.raises(ValueError, match=r"rows=9: needs at least 3\.0 GiB of memory, "
                                         r"more than this machine's 2\.0 GiB"):
        check_fits_in_memory(3 << 30, "rows=9", available_bytes=2 << 30)


@pytest.mark.parametrize("argv, words", [
    (["store", "--history-median", "1e13"], "users=1000, history_median=1e+13"),
    (["store", "--users", "100000000", "--requests-per-user", "1000000"],
     "requests_per_user=1000000"),
    (["broadcast", "--history", "1000000000"], "history=1000000000"),
])
def test_benches_refuse_sizes_beyond_memory_in_one_line(tmp_path, capsys, argv, words):
    """These allocated for minutes and ended in a MemoryError (or the OOM killer)."""
    assert main(["bench", *argv, "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("arm-jax: error: ") and err.count("\n") == 1, err
    assert words in err and "GiB of memory, more than this machine's" in err, err
    assert not (tmp_path / "r.json").exists()
