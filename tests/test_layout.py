"""The layout of DESIGN.md §3, checked from the code itself.

Arrows point one way: each package may import only the packages listed for it here, read
from the import statements of every module (not from a list kept by hand elsewhere). The
numpy-only packages are imported in a fresh interpreter to show they pull in no heavy
framework. Modules stay small enough to read in one sitting.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The project's packages and the project packages each may import.
ALLOWED: dict[str, set[str]] = {
    "system": set(),
    "envs": {"system"},
    "agents": {"envs", "system", "runtime"},      # agents write the bundles runtime reads
    "runtime": {"system"},
    "profiling": {"system"},
    "execution": {"system", "profiling", "runtime"},  # the one quantizer; bundles as deciders
    "service": {"runtime", "system"},
    "leaderboard": {"agents", "runtime", "system"},
}
#: Frameworks a numpy-only package must not load.
HEAVY = ("torch", "gymnasium", "gym", "stable_baselines3", "sb3_contrib")
MAX_MODULE_LINES = 400


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imported_packages(path: Path) -> set[str]:
    """Top-level names of every import in a module, including imports inside functions."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def _project_py_files() -> list[Path]:
    skip = {"tests", ".venv", "runs", "out", ".git"}
    return sorted(p for p in ROOT.rglob("*.py")
                  if not skip.intersection(p.relative_to(ROOT).parts))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_the_arrows(package: str) -> None:
    if not (ROOT / package).is_dir():
        pytest.skip(f"{package}/ is not in this tree")
    forbidden = set(ALLOWED) - ALLOWED[package] - {package}
    bad = {f"{p.relative_to(ROOT)} imports {name}"
           for p in _modules(package) for name in _imported_packages(p) & forbidden}
    assert not bad, sorted(bad)


def test_the_arrow_test_sees_a_wrong_import(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from runtime.dispatcher import Dispatcher\n    import agents.x\n")
    assert _imported_packages(f) == {"runtime", "agents"}


@pytest.mark.parametrize("package", ["system", "runtime"])
def test_numpy_only_package_loads_no_framework(package: str) -> None:
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts) for p in _modules(package)]
    names = [n.removesuffix(".__init__") for n in names]
    code = ("import importlib, json, sys\n"
            f"for n in {names!r}:\n"
            "    importlib.import_module(n)\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_no_module_over_the_size_limit() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _project_py_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, long


def test_evaluate_is_a_thin_command_line() -> None:
    assert len((ROOT / "evaluate.py").read_text(encoding="utf-8").splitlines()) <= 150
