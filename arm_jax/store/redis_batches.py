"""`append_batch` on Redis: each batch id applied exactly once, in parts when large.

A batch of at most `multi_users` users is one MULTI holding its APPENDs and the batch id
(`<prefix>batch:<id>`). A larger one is written as parts of `multi_users` users, each a
MULTI with its own part id, then the batch id; the part size is recorded before the first
part, so a retry with another `multi_users` resumes the same parts. WATCHing each id
makes two loaders racing on one batch write each part once. A mixin of `RedisStore`,
which provides the connection (`_call`, `client`), the APPENDs (`_queue_appends`,
`_check_log_keys`, `_compact_due`) and the settings (`multi_users`, `compress`, `prefix`).
"""

from __future__ import annotations

from typing import Any, Callable

import redis

from arm_jax.store import codec
from arm_jax.store.base import StoreError, check_batch_id, group_by_user


class RedisBatches:
    """The exactly-once batch protocol of `RedisStore` (see the module docstring)."""

    prefix: str
    url: str
    multi_users: int
    compress: bool
    client: redis.Redis
    _call: Callable[..., Any]
    _queue_appends: Callable[..., None]
    _check_log_keys: Callable[[list[int]], None]
    _compact_due: Callable[..., None]

    def append_batch(self, batch_id: str, user_id: object, item: object, action: object,
                     ts: object) -> bool:
        """Exactly once per `batch_id`. A batch of at most `multi_users` users is one MULTI
        holding the APPENDs and the batch id. A larger one is written as parts of
        `multi_users` users, each a MULTI with its own part id, then the batch id: EXEC
        runs alone on the server, so one huge MULTI would stall every other client (serving
        reads included) for as long as it takes. A retry skips the parts already written,
        so readers may see a batch half-applied until it completes, never twice. True when
        this call completed the batch, False when it was complete before. WATCHing
        each id means two loaders racing on one batch write each part once.

        The part size a batch was started with is recorded (`<batch key> parts`) and
        used by every later attempt, whatever its own `multi_users`: parts of another size
        would cover other users, and the users of the parts already written would be
        written again (or the missing ones never)."""
        marker, layout = self.batch_key(batch_id), self._part_key(batch_id, "parts")
        applied, step = self._batch_state(marker, layout)
        if applied:                              # the common re-run: no grouping, no encoding
            return False
        groups = group_by_user(user_id, item, action, ts)
        events = str(sum(g[3].size for g in groups))
        while True:
            if step is not None:
                return self._append_parts(batch_id, groups, step, events)
            if len(groups) <= self.multi_users:
                if self._append_part([marker, layout], groups, events):
                    return True
            elif self._begin_parts(marker, layout):
                return self._append_parts(batch_id, groups, self.multi_users, events)
            # a racing loader completed the batch, or began it in parts: look again
            applied, step = self._batch_state(marker, layout)
            if applied:
                return False

    def _batch_state(self, marker: str, layout: str) -> tuple[bool, int | None]:
        """(whether the batch is complete, users per part if it was begun in parts), in
        one round trip."""
        done, size = self._call(lambda: self.client.mget(marker, layout), "MGET")
        if size is None:
            return done is not None, None
        if not size.isdigit() or int(size) < 1:    # bytes: never int("2.0") mid-load
            raise StoreError(
                f"{self.url}: key {layout!r} holds {size!r}, not a part size (an integer "
                "users per MULTI; an older arm-jax recorded a fractional multi_users "
                "there). If no part of the batch was written (no key "
                f"{marker + ' part0'!r}), delete the key (redis-cli DEL) and load the batch "
                "again; otherwise set it to the part size its parts were written with")
        return done is not None, int(size)

    def _begin_parts(self, marker: str, layout: str) -> bool:
        """Record `multi_users` as the batch's part size, unless the batch is complete or
        a racing loader recorded its own -> whether it did."""
        return self._once([marker, layout], lambda pipe: pipe.set(layout, self.multi_users),
                          "MULTI (batch parts)") is not None

    def _append_parts(self, batch_id: str, groups: list, step: int, events: str) -> bool:
        """Write `groups` as parts of `step` users (each once), then the batch id; False
        when a racing loader completed the batch first."""
        marker, layout = self.batch_key(batch_id), self._part_key(batch_id, "parts")
        parts = [self._part_key(batch_id, f"part{k}") for k in range(-(-len(groups) // step))]
        for k, part in enumerate(parts):
            # the batch id is watched too: a racing loader that completed the batch has
            # deleted the part ids, and a part whose id is gone must not be written again
            if not self._append_part([part, marker], groups[k * step:(k + 1) * step], "1") \
                    and self.batch_applied(batch_id):
                return False

        def finish(pipe: redis.client.Pipeline) -> None:
            pipe.set(marker, events)
            pipe.delete(*parts, layout)
        return self._once([marker], finish, "MULTI (batch id)") is not None

    def _append_part(self, markers: list[str], groups: list, value: str) -> bool:
        """One MULTI: APPEND `groups`' chunks and SET `markers[0]` to `value`, unless one of
        `markers` exists -> whether it wrote."""
        chunks = [(u, codec.encode(it, ac, t, compress=self.compress))
                  for u, it, ac, t in groups]
        self._check_log_keys([u for u, _ in chunks])

        def queue(pipe: redis.client.Pipeline) -> None:
            self._queue_appends(pipe, chunks)
            pipe.set(markers[0], value)
        replies = self._once(markers, queue, "MULTI (batch append)")
        if replies is None:
            return False
        self._compact_due(chunks, replies)
        return True

    def _once(self, markers: list[str], queue, what: str) -> list | None:
        """Run the commands `queue(pipe)` adds in one MULTI unless one of `markers` exists
        (then None). WATCH makes a racing writer of a marker abort ours: we look again."""
        def run() -> list | None:
            with self.client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(*markers)
                        if pipe.exists(*markers):
                            pipe.unwatch()
                            return None
                        pipe.multi()
                        queue(pipe)
                        return pipe.execute()
                    except redis.WatchError:   # another loader wrote an id: look again
                        continue
        return self._call(run, what)

    def batch_applied(self, batch_id: str) -> bool:
        marker = self.batch_key(batch_id)
        return bool(self._call(lambda: self.client.exists(marker), "EXISTS"))

    def batch_key(self, batch_id: str) -> str:
        return f"{self.prefix}batch:{check_batch_id(batch_id)}"

    def _part_key(self, batch_id: str, name: str) -> str:
        """A key of a batch written in parts (its part size, its part ids): the batch key,
        a space, `name` (no batch id holds a space, so none is another batch's key)."""
        return f"{self.batch_key(batch_id)} {name}"
