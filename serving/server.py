"""Run the app under uvicorn: in the foreground (`arm-jax serve`) or in a thread (tests, benches).

uvicorn owns the graceful drain: on SIGTERM it stops accepting connections, lets
in-flight requests finish (up to `drain_timeout_s`), then runs the app's lifespan
shutdown, which drains the batchers.
"""

from __future__ import annotations

import copy
import logging
import math
import signal
import socket
import sys
import threading
import time
from typing import Any

import uvicorn
import uvicorn.config
from fastapi import FastAPI

from serving.settings import ServerSettings, SettingsError


def logging_config(level: str) -> dict[str, Any]:
    """uvicorn's logging config, each line stamped with the local time (an operator reading
    a log after an incident needs to know when: `2026-12-06 17:45:01,123 WARNING:  ...`),
    with the server's own `serving.*` loggers written the same way at `level`. Without it
    their records went to the root logger: a bare message, or `WARNING:serving.app:...`
    once some library had configured the root logger (artifact mode did, fake tiers did
    not)."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = "%(asctime)s " + formatter["fmt"]
    config["loggers"]["serving"] = {"handlers": ["default"], "level": level.upper(),
                                    "propagate": False}
    return config


def configure_logging(level: str) -> None:
    """The `serving` logger as `logging_config` sets it, now: the server logs while
    loading, before uvicorn starts. Not through dictConfig, which closes every existing
    handler of the process (uvicorn applies the whole config when the server starts)."""
    import uvicorn.logging

    handler = logging.StreamHandler(sys.stderr)
    default = logging_config(level)["formatters"]["default"]
    handler.setFormatter(uvicorn.logging.DefaultFormatter(default["fmt"]))
    logger = logging.getLogger("serving")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def uvicorn_config(app: FastAPI, settings: ServerSettings,
                   log_config: dict[str, Any] | None = None) -> uvicorn.Config:
    """`log_config`: None keeps uvicorn's (in-process servers leave `serving.*` logging
    to the host application, and to pytest's caplog)."""
    return uvicorn.Config(app, host=settings.host, port=settings.port,
                          log_config=log_config or uvicorn.config.LOGGING_CONFIG,
                          log_level=settings.log_level, access_log=False,
                          timeout_graceful_shutdown=max(1, math.ceil(settings.drain_timeout_s)),
                          lifespan="on", limit_max_requests=None, backlog=2048)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening (uvicorn listens on it).

    Binding here, before any tier loads, turns a taken port into one named error instead of
    a "serving on ..." line followed by uvicorn's exit; port 0 picks a free port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET   # as uvicorn decides
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except socket.gaierror as e:
        sock.close()
        raise SettingsError(f"host={host!r}: cannot be resolved ({e.strerror})") from None
    except OSError as e:
        sock.close()
        raise SettingsError(f"port={port}: cannot listen on {host}:{port} "
                            f"({e.strerror}); pick another --port or --host") from None
    return sock


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose force quit (a second Ctrl-C during the drain) still shuts
    the app down: uvicorn skips the lifespan shutdown then, which left the lifespan task
    to be cancelled at exit (a `CancelledError` traceback in the log) and the batchers and
    the store unclosed. Here the app is told (`app.state.force_exit`) and shut down at
    once: queued requests are refused, no drain is waited for."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets=sockets)
        if self.force_exit and getattr(self, "lifespan", None) is not None:
            state = getattr(self.config.app, "state", None)
            if state is not None:
                state.force_exit = True
            await self.lifespan.shutdown()


def serve_forever(app: FastAPI, settings: ServerSettings,
                  sock: socket.socket | None = None) -> None:
    """Blocking; returns after SIGTERM/SIGINT and a graceful drain. `sock`: from
    `bind_socket`, closed by its caller (default: bound, and closed, here).

    uvicorn re-raises the captured signal once it has drained; with the default SIGTERM
    disposition that would kill the process (exit -15) after a clean shutdown, so a
    handler that does nothing is installed first: a drained SIGTERM exits 0.
    """
    own = sock is None
    sock = bind_socket(settings.host, settings.port) if own else sock
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        DrainingServer(uvicorn_config(app, settings, logging_config(settings.log_level))
                       ).run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        if own:
            sock.close()


class ServerThread:
    """A real uvicorn server on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, app: FastAPI, settings: ServerSettings | None = None, host: str = "127.0.0.1"):
        settings = settings or ServerSettings()
        self.sock = bind_socket(host, 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = DrainingServer(uvicorn_config(app, settings.replace(host=host, port=self.port)))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="uvicorn", daemon=True)

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self.thread.start()
        t_end = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > t_end or not self.thread.is_alive():
                raise RuntimeError(f"server did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
