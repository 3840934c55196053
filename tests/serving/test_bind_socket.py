"""`bind_socket`: the serving port is taken before any tier loads, with a named error;
uvicorn's graceful shutdown gets the whole drain timeout."""

from __future__ import annotations

import re
import socket

import pytest

from serving.server import bind_socket, uvicorn_config
from serving.settings import ServerSettings, SettingsError


def test_port_zero_binds_a_free_port_and_localhost_is_ipv4():
    sock = bind_socket("localhost", 0)
    try:
        host, port = sock.getsockname()[:2]
        assert host == "127.0.0.1" and port > 0
    finally:
        sock.close()


def test_a_taken_port_names_the_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError, match=f"port={port}: cannot listen on 127.0.0.1:{port}"):
            bind_socket("127.0.0.1", port)


def test_an_unresolvable_host_names_the_host():
    with pytest.raises(SettingsError, match="host='no-such-host.invalid': cannot be resolved"):
        bind_socket("no-such-host.invalid", 0)


@pytest.mark.parametrize("drain, want", [(2.5, 3), (30.0, 30), (0.0, 1)])
def test_drain_timeout_is_rounded_up_not_cut(drain, want):
    # 2.5 s used to become 2: in-flight requests were cancelled half a second early
    cfg = uvicorn_config(None, ServerSettings(drain_timeout_s=drain))
    assert cfg.timeout_graceful_shutdown == want


def test_the_servers_own_warnings_are_written_like_uvicorns(capsys):
    """`arm-jax serve` printed `no item catalogue: ...` bare with fake tiers and
    `WARNING:serving.app:...` from artifacts (a library had set up the root logger)."""
    import logging

    from serving.server import configure_logging

    root = logging.getLogger()
    saved = list(root.handlers)
    try:
        logging.basicConfig()            # as some import in artifact mode did
        configure_logging("warning")
        logging.getLogger("serving.app").warning("no item catalogue: hello")
        logging.getLogger("serving.app").info("hidden at --log-level warning")
    finally:
        root.handlers[:] = saved
    err = capsys.readouterr().err
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING:  no item catalogue: "
                        r"hello\n", err), err


def test_every_server_log_line_is_stamped_with_the_time():
    """uvicorn's lines too (`Started server process`, the access log): a log read after an
    incident said what happened, never when."""
    from serving.server import logging_config

    config = logging_config("info")
    assert all(f["fmt"].startswith("%(asctime)s ") for f in config["formatters"].values())
    assert config["loggers"]["serving"]["level"] == "INFO"
