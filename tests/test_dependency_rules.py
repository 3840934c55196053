"""The dependency rules of DESIGN.md and the README's Layout, checked by reading imports.

`pallas_kernels` imports nothing of ours; `arm_jax` never imports `serving` (only the CLI,
which dispatches to both, may); `serving` never imports the model-building or training code.
Every import counts, also those inside functions: a lazy import still ties the packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module a file imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def violations(package: str, forbidden: tuple[str, ...], exempt: str | None = None) -> list[str]:
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if exempt and rel.startswith(exempt):
            continue
        out += [f"{rel} imports {name}" for name in sorted(imported_modules(path))
                if any(name == f or name.startswith(f + ".") for f in forbidden)]
    return out


@pytest.mark.parametrize("package, forbidden, exempt", [
    ("pallas_kernels", ("arm_jax", "serving"), None),
    ("arm_jax", ("serving",), "arm_jax/cli/"),
    ("serving", ("arm_jax.model", "arm_jax.train", "pallas_kernels"), None),
])
def test_dependency_rule(package, forbidden, exempt):
    assert violations(package, forbidden, exempt) == []


def test_the_reader_sees_lazy_and_from_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os.path\nfrom . import sibling\n"
                   "def f():\n    from serving.client import RankClient\n")
    assert imported_modules(src) == {"os.path", "serving.client", "serving.client.RankClient"}
