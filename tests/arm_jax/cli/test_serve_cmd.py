"""`arm-jax serve --catalog`: loaded at start-up; a bad file is one line and a non-zero exit."""

from __future__ import annotations

import numpy as np
import pytest

from arm_jax.cli.main import main
from arm_jax.data.catalog import ItemCatalog


def _serve(tiny_overrides, catalog_path) -> list[str]:
    return ["serve", "--fake", "small", "--catalog", str(catalog_path), *tiny_overrides]


@pytest.mark.parametrize("kind,words", [
    ("missing", "no such catalogue file"),
    ("garbage", "not a catalogue .npz"),
    ("other_fields", "history_side_fields is [1, 2]"),
])
def test_bad_catalog_is_a_one_line_error(tiny_overrides, tmp_path, capsys, monkeypatch, kind,
                                         words):
    import serving.server

    monkeypatch.setattr(serving.server, "serve_forever",
                        lambda app, settings: pytest.fail("served despite a bad catalogue"))
    path = tmp_path / "catalog.npz"
    if kind == "garbage":
        path.write_bytes(b"not a zip file")
    elif kind == "other_fields":
        ItemCatalog(np.zeros((4, 1), np.int32), (2,)).save(path)
    assert main(_serve(tiny_overrides, path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("arm-jax: error: ") and words in err, err
    assert str(path) in err and "\n" not in err and "Traceback" not in err


def test_catalog_is_loaded_into_the_app(tiny_overrides, tmp_path, capsys, monkeypatch):
    import serving.server

    served = {}
    monkeypatch.setattr(serving.server, "serve_forever",
                        lambda app, settings: served.update(app=app, settings=settings))
    path = ItemCatalog(np.arange(10).reshape(5, 2), (1, 2)).save(tmp_path / "catalog.npz")
    assert main(_serve(tiny_overrides, path)) == 0
    app = served["app"]
    assert app.state.catalog.num_items == 5 and app.state.catalog.fields == (1, 2)
    assert served["settings"].catalog == str(path)
    assert "catalogue of 5 items" in capsys.readouterr().err
