"""A warning that repeats on every request (a store outage) logged at most once per interval."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable


class ThrottledWarning:
    """`warn(msg, *args)` logs at most once every `every_s` seconds; the next line that gets
    through says how many were held back since the last one. Counting them all is the
    metrics' job: this only keeps an outage from writing one line per request."""

    def __init__(self, logger: logging.Logger, every_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.every_s, self.clock = logger, every_s, clock
        self._next = float("-inf")
        self._held = 0
        self._lock = threading.Lock()

    def warn(self, msg: str, *args: object) -> bool:
        """Log now (True) or hold the line back (False)."""
        with self._lock:
            now = self.clock()
            if now < self._next:
                self._held += 1
                return False
            held, self._held, self._next = self._held, 0, now + self.every_s
        if held:
            msg += f" ({held} more like it since the last one, not logged)"
        self.logger.warning(msg, *args)
        return True


__all__ = ["ThrottledWarning"]
