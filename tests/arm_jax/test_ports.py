"""free_port: a port a server can bind on 127.0.0.1 right after."""

import socket

from arm_jax.ports import free_port


def test_free_port_can_be_bound():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert s.getsockname()[1] == port
