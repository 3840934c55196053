"""Server settings: validated once, then read-only. Safe defaults (loopback, size limits)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


# uvicorn's log levels, most severe first.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class SettingsError(ValueError):
    """A server setting is out of range."""


@dataclass(frozen=True)
class ServerSettings:
    """Everything the app factory needs besides the executors.

    host / port          where `arm-jax serve` binds (127.0.0.1 unless told otherwise)
    token                if set, every endpoint requires `Authorization: Bearer <token>`
                         (the admin token is accepted there too)
    admin_token          token for /admin/*; defaults to `token`; no token -> admin disabled.
                         Alone, it protects /admin/* only. Tokens: >= 8 printable ASCII
                         characters, no spaces
    max_body_bytes       larger request bodies are refused with 413 before parsing; None ->
                         derived from the schema (`schema.default_body_limit`)
    deadline_ms          default per-request budget; None -> the routed tier's config
    batch_window_ms      how long the batcher waits for more requests to pack together
    max_queue            requests waiting per tier before admission sheds
    policy               routing policy: "rules", "fixed:<tier>" or "learned:<file.json>"
    drain_timeout_s      on SIGTERM, in-flight requests get this long to finish
    body_timeout_s       a request body not all received within this long is a 408 (a
                         client stalled part way held a connection and a handler for good)
    history_store        user-log store URL (lmdb://PATH or redis://HOST:PORT/DB): requests
                         with a user_id and no inline history get theirs fetched from it
                         (opened read-only, on first use)
    history_timeout_ms   budget of that fetch; past it (or on any store error) the request
                         is served history-free on the cheapest tier, flagged as degraded
    catalog              item catalogue (.npz from `ItemCatalog.save`), loaded at start-up:
                         fills the side ids (hist_side) of histories sent without them and of
                         store-fetched ones; None -> UNKNOWN_SIDE ids, and worse scores
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    admin_token: str | None = None
    max_body_bytes: int | None = None
    deadline_ms: float | None = None
    batch_window_ms: float = 2.0
    max_queue: int = 64
    policy: str = "rules"
    drain_timeout_s: float = 30.0
    body_timeout_s: float = 2.0
    log_level: str = "warning"
    history_store: str | None = None
    history_timeout_ms: float = 100.0
    catalog: str | None = None

    def __post_init__(self) -> None:
        checks = [
            ("port", self.port, 0, 65535),
            ("batch_window_ms", self.batch_window_ms, 0.0, 1000.0),
            ("max_queue", self.max_queue, 1, 1 << 20),
            ("drain_timeout_s", self.drain_timeout_s, 0.0, 3600.0),
            ("body_timeout_s", self.body_timeout_s, 0.01, 600.0),
            ("history_timeout_ms", self.history_timeout_ms, 1.0, 60000.0),
        ]
        if self.deadline_ms is not None:
            checks.append(("deadline_ms", self.deadline_ms, 1.0, 600000.0))
        if self.max_body_bytes is not None:
            checks.append(("max_body_bytes", self.max_body_bytes, 1024, 1 << 31))
        for name, value, lo, hi in checks:
            if not lo <= value <= hi:
                raise SettingsError(f"{name}={value!r} is out of range: allowed {lo}..{hi}")
        if not (self.policy in ("rules",) or self.policy.startswith(("fixed:", "learned:"))):
            raise SettingsError(
                f"policy={self.policy!r}: allowed 'rules', 'fixed:<tier>', 'learned:<file>'")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"log_level={self.log_level!r}: allowed {', '.join(LOG_LEVELS)}")
        for name in ("token", "admin_token"):
            value = getattr(self, name)
            if value is None:
                continue
            if len(value) < 8:
                raise SettingsError(f"{name}: must be at least 8 characters")
            if not all(33 <= ord(ch) <= 126 for ch in value):
                raise SettingsError(f"{name}: must be printable ASCII without spaces "
                                    "(an HTTP header carries it)")

    @property
    def effective_admin_token(self) -> str | None:
        return self.admin_token or self.token

    def replace(self, **kw) -> "ServerSettings":
        return dataclasses.replace(self, **kw)
