"""The throwaway redis-server: a port taken between choosing and binding it."""

import socket

import pytest

from arm_jax.store.base import StoreUnavailable
from arm_jax.store.redis_server import RedisServer, find_redis_server

pytestmark = pytest.mark.skipif(find_redis_server() is None,
                                reason="redis-server not installed (bash scripts/setup.sh --test)")


@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_chosen_port_taken_meanwhile_is_retried_on_a_fresh_one(taken_port):
    srv = RedisServer()
    srv.port = taken_port              # what free_port() returned, then someone else bound it
    with srv:
        assert srv.port != taken_port
        with socket.create_connection(("127.0.0.1", srv.port), timeout=2) as c:
            c.sendall(b"PING\r\n")
            assert c.recv(16).startswith(b"+PONG")


def test_a_port_the_caller_named_is_not_replaced(taken_port):
    with pytest.raises(StoreUnavailable, match="Address already in use"):
        RedisServer(port=taken_port).start()
