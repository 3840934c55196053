"""ThrottledWarning: one line per interval, and the next line counts what was held back."""

import logging

from serving.throttled_log import ThrottledWarning


def test_one_line_per_interval_and_the_held_back_are_counted(caplog):
    now = [100.0]
    warn = ThrottledWarning(logging.getLogger("test.throttled"), 10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        assert warn.warn("fetch failed for user %s", 1) is True
        for user in (2, 3, 4):
            now[0] += 3.0                              # 103, 106, 109: inside the interval
            assert warn.warn("fetch failed for user %s", user) is False
        now[0] = 110.0
        assert warn.warn("fetch failed for user %s", 5) is True
        now[0] = 125.0
        assert warn.warn("fetch failed for user %s", 6) is True
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["fetch failed for user 1",
                     "fetch failed for user 5 (3 more like it since the last one, not logged)",
                     "fetch failed for user 6"]
