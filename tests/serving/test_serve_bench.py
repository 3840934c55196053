"""`bench serve` without a server: its input checks, its start-up failure and its plot.
(The whole bench against real tiny artifacts runs in tests/serving/test_real_artifacts.py.)"""

from __future__ import annotations

import subprocess
import sys
import tempfile

import httpx
import pytest

from serving.serve_bench import (ServeBenchError, _rank_alone, _wait_for_server,
                                 plot, run_serve_bench)
from arm_jax.cli.main import main
from arm_jax.ports import free_port


@pytest.mark.parametrize("kwargs, field", [
    ({"candidates": 0}, "candidates=0"), ({"repeats": 0}, "repeats=0"),
    ({"history": -1}, "history=-1"), ({"duration": 0.0}, "duration=0.0"),
    ({"batch_window_ms": -1.0}, "batch_window_ms=-1.0"), ({"wire": "xml"}, "wire='xml'"),
])
def test_bad_settings_name_the_field(tmp_path, kwargs, field):
    with pytest.raises(ValueError, match=field):
        run_serve_bench(tmp_path, **kwargs)


def test_missing_artifacts_is_one_cli_line(tmp_path, capsys):
    assert main(["bench", "serve", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a directory" in err and "artifacts=" in err


def _never_ready():
    """A client of a port nothing listens on: /readyz never answers."""
    from serving.client import RankClient

    return RankClient(f"http://127.0.0.1:{free_port()}", timeout=1.0)


def test_a_server_that_exits_raises_with_its_stderr():
    script = "import sys; print('boom: no artifacts here', file=sys.stderr); sys.exit(3)"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-c", script], stderr=log)
        with pytest.raises(ServeBenchError, match="code 3.*boom: no artifacts here"):
            _wait_for_server(_never_ready(), proc, log, timeout=60)


def test_a_server_never_ready_times_out():
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                                stderr=log)
        try:
            with pytest.raises(ServeBenchError, match="not ready after 0.3 s"):
                _wait_for_server(_never_ready(), proc, log, timeout=0.3)
        finally:
            proc.kill()
            proc.wait()


def test_plot_draws_both_panels(tmp_path):
    res = {"config": {"tier": "large", "candidates": 256}, "compute_ms": 50.0,
           "p50_ms": 55.0, "p99_ms": 70.0, "overhead_ratio": 1.1,
           "latency_ms_samples": [52.0, 55.0, 54.0, 70.0, 56.0],
           "compute_ms_samples": [49.0, 50.0, 51.0],
           "overload_2x": {"rate": 14.3, "admitted": 140, "rejected_503": 3, "errors_5xx": 0,
                           "admitted_p50_ms": 120.0, "admitted_p95_ms": 200.0,
                           "admitted_p99_ms": 240.0, "admitted_max_ms": None,
                           "deadline_ms": 500.0}}
    png = plot(res, tmp_path / "sub" / "serve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


class _Refusing:
    def rank_raw(self, body, wire="json"):
        return httpx.Response(503, json={"detail": "deadline: 100 ms budget exhausted"})


def test_a_refused_lone_request_is_the_benchs_error_with_its_status():
    with pytest.raises(ServeBenchError, match="HTTP 503.*budget exhausted"):
        _rank_alone(_Refusing(), {})
