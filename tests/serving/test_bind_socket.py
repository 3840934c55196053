"""`bind_socket`: the serving port is taken before any tier loads, with a named error."""

from __future__ import annotations

import socket

import pytest

from serving.server import bind_socket
from serving.settings import SettingsError


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
