"""The README's library example runs as written (so the front page cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.slow
def test_the_shared_vs_per_pair_example_runs_and_agrees():
    block = next(b for b in _python_blocks() if "Ranker(" in b)
    scope: dict = {}
    exec(compile(block, f"{README}:ranker-example", "exec"), scope)
    logits, same = np.asarray(scope["logits"]), np.asarray(scope["same"])
    assert logits.shape == (2, 64, len(scope["tier"].features.tasks))
    np.testing.assert_allclose(logits, same, rtol=1e-5, atol=1e-5)
