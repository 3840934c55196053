"""Observed ids from an .npz: a file that is no such archive is one SizingError naming it
and what it should hold."""

from __future__ import annotations

import numpy as np
import pytest

from arm_jax.embeddings.id_data import npz_columns
from arm_jax.embeddings.sizing import SizingError


def _write(path, kind: str) -> None:
    if kind == "lone .npy":
        with path.open("wb") as f:
            np.save(f, np.arange(100))
        return
    if kind == "empty":
        path.write_bytes(b"")
        return
    np.savez(path, item=np.arange(5000), user=np.arange(5000) % 7)
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt member":       # the zip directory intact, a member's bytes not
        i = data.index(b"\x93NUMPY")
        path.write_bytes(data[:i] + b"garbage!" + data[i + 8:])


@pytest.mark.parametrize("kind, words", [
    ("truncated", "not a readable .npz (BadZipFile"),
    ("empty", "not a readable .npz (EOFError"),
    ("lone .npy", "holds one bare array (.npy), not an archive"),
    ("corrupt member", "not a readable .npz"),
])
def test_an_unreadable_id_file_is_a_sizing_error(tmp_path, kind, words):
    """These escaped as BadZipFile / EOFError / TypeError tracebacks (only ValueError and
    OSError were caught, and a lone .npy loads as an array that is no archive)."""
    path = tmp_path / "ids.npz"
    _write(path, kind)
    with pytest.raises(SizingError) as e:
        npz_columns(path)
    msg = str(e.value)
    assert msg.startswith(f"--data {path}: ") and words in msg, msg
    assert msg.endswith("expected an .npz with one int array of ids per feature"), msg


def test_a_good_id_file_reads_every_feature(tmp_path):
    path = tmp_path / "ids.npz"
    _write(path, "good")
    cols = npz_columns(path)
    assert sorted(cols) == ["item", "user"] and cols["item"].size == 5000
