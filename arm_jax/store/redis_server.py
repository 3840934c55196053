"""Start a throwaway `redis-server` on 127.0.0.1 (tests, `arm-jax bench store`).

No persistence, a free port, its files in a temporary directory; stopped (and waited for)
on exit. `find_redis_server()` is None when the binary is absent, so callers can skip
with a clear message.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from arm_jax.ports import free_port
from arm_jax.store.base import StoreUnavailable


class _PortTaken(Exception):
    """redis-server exited because its port was bound meanwhile."""


def find_redis_server() -> str | None:
    """Path of the redis-server binary, or None (install: `bash scripts/setup.sh --test`)."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)


class RedisServer:
    """`with RedisServer() as srv: srv.url` -> redis://127.0.0.1:<port>/0."""

    def __init__(self, binary: str | None = None, port: int | None = None,
                 start_timeout_s: float = 10.0) -> None:
        self.binary = binary or find_redis_server()
        if self.binary is None:
            raise StoreUnavailable("redis-server not found (install it: `bash "
                                   "scripts/setup.sh --test` or apt-get install redis-server)")
        self.port = port or free_port()
        self._port_attempts = 1 if port else 3
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        """Start and wait for PING. A free port can be taken by another process between
        `free_port()` and the bind (parallel test workers): then, unless the port was given,
        retry on a fresh one."""
        for attempt in range(self._port_attempts):
            try:
                return self._start_once()
            except _PortTaken:
                if attempt + 1 == self._port_attempts:
                    raise StoreUnavailable(f"redis-server could not bind a free port in "
                                           f"{self._port_attempts} attempts") from None
                self.port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self) -> "RedisServer":
        self._tmp = tempfile.TemporaryDirectory(prefix="armjax-redis-")
        log = Path(self._tmp.name) / "redis.log"
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self._tmp.name,
                "--protected-mode", "yes", "--loglevel", "warning", "--logfile", str(log)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = (self.proc.stderr.read() if self.proc.stderr else b"").decode()
                err = ((log.read_text(errors="replace") if log.exists() else "") + err)[-300:]
                code = self.proc.returncode
                self.stop()
                if "in use" in err and self._port_attempts > 1:
                    raise _PortTaken(err)
                raise StoreUnavailable(f"redis-server exited with {code}: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise StoreUnavailable(f"redis-server did not answer on port {self.port} within "
                               f"{self.start_timeout_s} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["RedisServer", "find_redis_server"]
