"""Output paths are refused, naming them, before the work that would fill them."""

from __future__ import annotations

import pytest

from arm_jax.data.outputs import check_output_dir, check_output_file, replaced_when_written


@pytest.mark.parametrize("check, kind", [(check_output_file, "file"),
                                         (check_output_dir, "directory")])
def test_an_empty_path_names_nothing_and_is_refused(check, kind):
    """Path("") is "." (the current directory): `--out ''` would write there."""
    for empty in ("", "  "):
        with pytest.raises(ValueError, match=f"--out {empty!r}: names no {kind}"):
            check(empty, "--out")


def test_a_directory_or_a_path_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a directory"):
        check_output_file(tmp_path, "--out")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        check_output_file(tmp_path / "f" / "x.json", "--out")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        check_output_dir(tmp_path / "f", "--out")
    assert check_output_file(tmp_path / "new" / "x.json", "--out").name == "x.json"
    assert check_output_dir(tmp_path / "new", "--out") == tmp_path / "new"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError])
def test_a_file_replaced_when_written_is_whole_or_the_old_one(tmp_path, interrupt):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old, whole")
    with pytest.raises(interrupt):
        with replaced_when_written(target) as tmp:
            tmp.write_bytes(b"new, cut o")
            raise interrupt("cut off")
    assert target.read_bytes() == b"old, whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]     # no temporary left
    with replaced_when_written(target) as tmp:
        tmp.write_bytes(b"new, whole")
    assert target.read_bytes() == b"new, whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
