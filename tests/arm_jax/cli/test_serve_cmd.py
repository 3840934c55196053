"""`arm-jax serve --catalog / --history-store`: checked at start-up; a bad file or a missing
store is one line and a non-zero exit."""

from __future__ import annotations

import numpy as np
import pytest

from arm_jax.cli.main import main
from arm_jax.data.catalog import ItemCatalog


def _serve(tiny_overrides, catalog_path) -> list[str]:
    return ["serve", "--fake", "small", "--port", "0", "--catalog", str(catalog_path),
            *tiny_overrides]


@pytest.mark.parametrize("kind,words", [
    ("missing", "no such file"),
    ("garbage", "not a catalogue .npz"),
    ("other_fields", "history_side_fields is [1, 2]"),
])
def test_bad_catalog_is_a_one_line_error(tiny_overrides, tmp_path, capsys, monkeypatch, kind,
                                         words):
    import serving.server

    monkeypatch.setattr(serving.server, "serve_forever",
                        lambda app, settings, sock: pytest.fail("served despite a bad catalogue"))
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
                        lambda app, settings, sock: served.update(app=app, settings=settings))
    path = ItemCatalog(np.arange(10).reshape(5, 2), (1, 2)).save(tmp_path / "catalog.npz")
    assert main(_serve(tiny_overrides, path)) == 0
    app = served["app"]
    assert app.state.catalog.num_items == 5 and app.state.catalog.fields == (1, 2)
    assert served["settings"].catalog == str(path)
    assert "catalogue of 5 items" in capsys.readouterr().err


def _serve_with_store(monkeypatch, tiny_overrides, url) -> tuple[int, dict]:
    import serving.server

    served: dict = {}
    monkeypatch.setattr(serving.server, "serve_forever",
                        lambda app, settings, sock: served.update(app=app, settings=settings))
    rc = main(["serve", "--fake", "small", "--port", "0", "--history-store", url,
               *tiny_overrides])
    return rc, served


def test_missing_lmdb_history_store_is_a_one_line_error(tiny_overrides, tmp_path, capsys,
                                                        monkeypatch):
    path = tmp_path / "mistyped"
    rc, served = _serve_with_store(monkeypatch, tiny_overrides, f"lmdb://{path}")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not served and not path.exists()
    assert err.startswith("arm-jax: error: --history-store: ") and str(path) in err, err
    assert "arm-jax store load" in err and "\n" not in err


def test_history_store_is_checked_and_served(tiny_overrides, tmp_path, capsys, monkeypatch):
    from arm_jax.store.lmdb_store import LmdbStore

    with LmdbStore(tmp_path / "logs", map_size=1 << 24) as s:
        s.append_many([1, 1, 2], [5, 6, 7], [0, 0, 1], [10, 20, 30])
    rc, served = _serve_with_store(monkeypatch, tiny_overrides, f"lmdb://{tmp_path / 'logs'}")
    assert rc == 0 and served["settings"].history_store == f"lmdb://{tmp_path / 'logs'}"
    err = capsys.readouterr().err
    assert f"history store lmdb://{tmp_path / 'logs'}: 2 users" in err, err


def test_unreachable_redis_history_store_only_warns(tiny_overrides, capsys, monkeypatch):
    from arm_jax.ports import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    rc, served = _serve_with_store(monkeypatch, tiny_overrides, url)
    err = capsys.readouterr().err
    assert rc == 0 and served["settings"].history_store == url   # an outage: serve degraded
    assert "arm-jax: warning: --history-store: " in err and "PING" in err, err


def test_store_is_closed_when_the_tiers_fail_to_load(tmp_path, capsys, monkeypatch):
    import arm_jax.cli.serve_cmd as serve_cmd
    from arm_jax.store.lmdb_store import LmdbStore

    with LmdbStore(tmp_path / "logs", map_size=1 << 24) as s:
        s.append_many([1], [5], [0], [10])
    opened = []
    real_open = serve_cmd._open_history_store
    monkeypatch.setattr(serve_cmd, "_open_history_store",
                        lambda url: opened.append(real_open(url)) or opened[-1])
    rc = main(["serve", str(tmp_path / "no-artifacts"), "--port", "0", "--history-store",
               f"lmdb://{tmp_path / 'logs'}"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc != 0 and err.startswith("arm-jax: error: ") and "no-artifacts" in err, err
    assert len(opened) == 1 and opened[0]._env is None      # closed, not left to the exit


def test_a_history_store_url_with_an_unknown_scheme_is_one_line_without_a_load_hint(capsys):
    rc = main(["serve", "--fake", "small", "--history-store", "lmbd:///data/logs"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1, err
    assert err[0].startswith("arm-jax: error: --history-store: store URL 'lmbd:///data/logs': "
                             "unknown scheme 'lmbd'") and "store load" not in err[0], err


def test_loadgen_without_a_server_is_one_line(capsys):
    rc = main(["loadgen", "--url", "localhost:8000", "--rate", "5", "--duration", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == ("arm-jax: error: --url 'localhost:8000': expected an http:// or "
                           "https:// URL")


def test_loadgen_arrow_without_pyarrow_is_one_line_before_any_request(capsys, monkeypatch):
    from serving import arrow_wire

    def missing():
        raise arrow_wire.ArrowUnavailable("Arrow IPC bodies need pyarrow: "
                                          + arrow_wire.INSTALL_HINT)

    monkeypatch.setattr(arrow_wire, "_pa", missing)
    rc = main(["loadgen", "--url", "http://127.0.0.1:9", "--rate", "5", "--duration", "1",
               "--wire", "arrow"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == ("arm-jax: error: Arrow IPC bodies need pyarrow: pip install "
                           "'arm-jax[arrow]' (or pyarrow)")


def test_a_taken_port_is_one_line_before_any_tier_loads(tiny_overrides, capsys, monkeypatch):
    import socket

    import arm_jax.cli.serve_cmd as serve_cmd

    monkeypatch.setattr(serve_cmd, "_load_executors",
                        lambda args: pytest.fail("loaded tiers despite a taken port"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc = main(["serve", "--fake", "small", "--port", str(port), *tiny_overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith(f"arm-jax: error: --port {port}: cannot listen on "
                                          f"127.0.0.1:{port} (Address already in use)"), err
    assert not any("serving" in line for line in err), err


def test_port_zero_serves_on_a_free_port_and_says_which(tiny_overrides, capsys, monkeypatch):
    import serving.server

    served: dict = {}
    monkeypatch.setattr(serving.server, "serve_forever",
                        lambda app, settings, sock: served.update(port=sock.getsockname()[1]))
    assert main(["serve", "--fake", "small", "--port", "0", *tiny_overrides]) == 0
    assert served["port"] > 0
    assert f"on http://127.0.0.1:{served['port']} " in capsys.readouterr().err


def test_overrides_without_fake_are_refused_not_ignored(tmp_path, capsys):
    rc = main(["serve", str(tmp_path), "model.d_model=64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("arm-jax: error: key=value overrides (model.d_model=64) apply to "
                             "--fake tiers only"), err


@pytest.mark.parametrize("kind", ["under a file", "a directory"])
def test_loadgen_out_is_checked_before_the_load(tmp_path, capsys, monkeypatch, kind):
    """The whole load ran (up to an hour), then writing --out was a FileExistsError or
    IsADirectoryError traceback."""
    import serving.loadgen

    monkeypatch.setattr(serving.loadgen, "run_load",
                        lambda *a, **k: pytest.fail("loaded before checking --out"))
    if kind == "under a file":
        (tmp_path / "afile").write_text("x")
        out, words = tmp_path / "afile" / "x.json", f"{tmp_path / 'afile'} is a file"
    else:
        out, words = tmp_path, "is a directory (expected a file name)"
    rc = main(["loadgen", "--url", "http://127.0.0.1:9", "--rate", "5", "--duration", "1",
               "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"arm-jax: error: --out {out}: ") and words in err, err
    assert "\n" not in err


def test_sigterm_while_the_tiers_load_exits_143_and_closes_the_store(tiny_overrides, tmp_path,
                                                                     capsys, monkeypatch):
    """SIGTERM before uvicorn takes the signals over (while tiers load: seconds to minutes
    for big artifacts) killed the process with -15; now the store and the socket are closed
    and the exit is 143 with one line."""
    import os
    import signal
    import time

    import arm_jax.cli.serve_cmd as serve_cmd
    from arm_jax.store.lmdb_store import LmdbStore

    with LmdbStore(tmp_path / "logs", map_size=1 << 24) as s:
        s.append_many([1], [5], [0], [10])
    opened, socks = [], []
    real_open = serve_cmd._open_history_store
    monkeypatch.setattr(serve_cmd, "_open_history_store",
                        lambda url: opened.append(real_open(url)) or opened[-1])
    import serving.server
    real_bind = serving.server.bind_socket
    monkeypatch.setattr(serving.server, "bind_socket",
                        lambda host, port: socks.append(real_bind(host, port)) or socks[-1])

    def terminated_while_loading(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not stop the load")

    monkeypatch.setattr(serve_cmd, "_load_executors", terminated_while_loading)
    rc = main(["serve", "--fake", "small", "--port", "0", "--history-store",
               f"lmdb://{tmp_path / 'logs'}", *tiny_overrides])
    assert rc == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == "arm-jax: terminated"
    assert len(opened) == 1 and opened[0]._env is None
    assert len(socks) == 1 and socks[0].fileno() == -1       # closed
