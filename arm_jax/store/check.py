"""Check every log of a store: what `arm-jax store check` runs before training or serving.

Reads decode and crc-check a value only when a join or a request reaches its user, so a
damaged log, or one loaded for a tier with fewer action types, otherwise shows up as a
training run that stops at the first batch holding that user, or as a server answering
that user history-free (`store_corrupt`). `check_store` reads every user once, in batches,
and lists each problem with its user instead of stopping at the first:

- `corrupt`: the value fails the codec's checks (magic, version, truncation, crc,
  inflation), or a Redis key under the prefix holds another type (`CorruptValue`);
- `action_out_of_range`: an action >= the tier's `features.num_action_types` (when given);
- `unsorted`: times not ascending after decoding (reads cut with a binary search, which
  would then let later events through the point-in-time cut), and `item_out_of_range`: an
  item id outside [0, 2^31). The codec's writer never produces either; a value written
  by another program with a valid crc can.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from arm_jax.store.base import (ActionOutOfRange, CorruptValue, Events, UserLogStore,
                                check_stored_actions, check_user_ids, redact_url)

PROBLEM_KINDS = ("corrupt", "action_out_of_range", "unsorted", "item_out_of_range")


@dataclass(frozen=True)
class Problem:
    """One user's log that a join or a request would refuse or misread."""

    user: int
    kind: str          # one of PROBLEM_KINDS
    message: str


@dataclass
class StoreReport:
    """What `check_store` found: counts over the readable logs and every problem."""

    url: str
    users: int = 0                    # users checked: every one listed, or those asked for
    events: int = 0                   # events of the logs that decoded
    without_log: int = 0              # users asked for that have no stored event
    max_events: int = 0               # longest log, in events
    first_ts: int | None = None       # earliest and latest event over every log
    last_ts: int | None = None
    num_action_types: int | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Problems per kind (every kind, zeros included)."""
        return {k: sum(p.kind == k for p in self.problems) for k in PROBLEM_KINDS}

    def summary(self) -> str:
        """"2 problems (1 corrupt, 1 action_out_of_range)"."""
        n = len(self.problems)
        counts = ", ".join(f"{c} {kind}" for kind, c in self.counts().items() if c)
        return f"{n} problem{'s' if n != 1 else ''} ({counts})"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        out["problem_counts"] = self.counts()
        return out


def refuse_problems(report: StoreReport, whose: str, hint: str) -> None:
    """Raise unless `report` is ok: one line with the counts and the first problem, as
    `ActionOutOfRange` when every problem is an action beyond the tier's, else
    `CorruptValue`. `whose` names the users checked ("the training examples' users"),
    `hint` how to see every problem."""
    if report.ok:
        return
    only_actions = all(p.kind == "action_out_of_range" for p in report.problems)
    error = ActionOutOfRange if only_actions else CorruptValue
    problems, _, counts = report.summary().partition(" (")
    raise error(f"{report.url}: {problems} in the logs of {whose} ({counts}; the first: "
                f"{report.problems[0].message}; {hint}")


def _log_problems(url: str, user: int, ev: Events, num_action_types: int | None
                  ) -> list[Problem]:
    """The problems of one decoded log (empty when a join would read it as stored)."""
    found = []
    if len(ev) > 1 and np.any(ev.ts[1:] < ev.ts[:-1]):
        at = int(np.argmax(ev.ts[1:] < ev.ts[:-1])) + 1
        found.append(Problem(user, "unsorted", f"user {user}: event {at} at ts "
                             f"{int(ev.ts[at])} is earlier than event {at - 1} at "
                             f"{int(ev.ts[at - 1])}"))
    if len(ev) and int(ev.item.min()) < 0:
        found.append(Problem(user, "item_out_of_range", f"user {user}: an item id outside "
                             "[0, 2^31) (read back as negative)"))
    if num_action_types is not None:
        try:
            check_stored_actions(url, user, ev.action, num_action_types)
        except ActionOutOfRange as e:
            found.append(Problem(user, "action_out_of_range", str(e)))
    return found


def _read_each(store: UserLogStore, users: Sequence[int]
               ) -> list[tuple[int, Events | None, Problem | None]]:
    """`read_many(users)`; when a value in the batch is damaged, each user on their own,
    so every damaged user is named, not just the first the batch read met."""
    try:
        return [(u, ev, None) for u, ev in zip(users, store.read_many(users))]
    except CorruptValue:
        pass
    out: list[tuple[int, Events | None, Problem | None]] = []
    for u in users:
        try:
            out.append((u, store.read(u), None))
        except CorruptValue as e:
            out.append((u, None, Problem(u, "corrupt", str(e))))
    return out


def check_store(store: UserLogStore, *, num_action_types: int | None = None,
                users: Sequence[int] | np.ndarray | None = None, users_per_read: int = 1000,
                progress: Callable[[int], None] | None = None) -> StoreReport:
    """Read every user's log once and report what a join or a request would trip on.

    `num_action_types` (a tier's `features.num_action_types`) also checks every stored
    action against it. `users` checks only those users (each once; e.g. the users of a
    training set, before its first step) and counts the ones without a log; by default
    every user the store lists. Users are read `users_per_read` at a time; `progress(n)`
    is called with the number read. An unreachable store raises StoreUnavailable; a
    damaged value is a problem in the report, never an exception.
    """
    if users_per_read < 1:
        raise ValueError(f"users_per_read={users_per_read}: must be >= 1")
    if num_action_types is not None and num_action_types < 1:
        raise ValueError(f"num_action_types={num_action_types}: must be >= 1")
    report = StoreReport(url=redact_url(store.url), num_action_types=num_action_types)
    todo = (list(store.user_ids()) if users is None else
            np.unique(check_user_ids(np.asarray(users).reshape(-1))).tolist())
    report.users = len(todo)
    for lo in range(0, len(todo), users_per_read):
        batch = todo[lo:lo + users_per_read]
        for user, ev, problem in _read_each(store, batch):
            if problem is not None:
                report.problems.append(problem)
                continue
            assert ev is not None
            report.problems.extend(_log_problems(report.url, user, ev, num_action_types))
            if not len(ev):
                report.without_log += 1
                continue
            report.events += len(ev)
            report.max_events = max(report.max_events, len(ev))
            lo_ts, hi_ts = int(ev.ts.min()), int(ev.ts.max())
            report.first_ts = lo_ts if report.first_ts is None else min(report.first_ts, lo_ts)
            report.last_ts = hi_ts if report.last_ts is None else max(report.last_ts, hi_ts)
        if progress is not None:
            progress(len(batch))
    return report


__all__ = ["check_store", "refuse_problems", "StoreReport", "Problem", "PROBLEM_KINDS"]
