"""The import contracts of ``pyproject.toml`` (import-linter): model/ layered by concern, the
golden model free of evaluation code, the float model free of the golden model, no circles.

The contracts are checked on the tree as it is, and on copies with one upward import planted:
a contract that would pass them guards nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("model", "rtl", "sim", "cosim", "energy", "fpga", "bench")
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_contracts_hold():
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the packages and pyproject.toml (no tests, no build output)."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


@pytest.mark.parametrize("module,line,contract", [
    ("model/golden/layer.py", "from model.evaluate.sqnr import sqnr_db",
     "The golden model does not import evaluation"),
    ("model/reference/lm.py", "import model.golden.fixedpoint",
     "The float model does not import the golden model"),
    ("model/data/corpus.py", "from model.train import loop",
     "model/ is layered"),
    ("model/golden/bounds.py", "from model.golden.quantize import QuantSpec",
     "No import circles"),
    ("model/config.py", "import rtl.packer", "model/ imports no hardware"),
    ("rtl/layer.py", "import cosim.layer", "The project is layered"),
], ids=["golden->evaluate", "reference->golden", "data->train", "bounds<->quantize",
        "model->rtl", "rtl->cosim"])
def test_a_planted_import_breaks_its_contract(tree, module, line, contract):
    path = tree / module
    text = path.read_text()
    # after the module docstring and `from __future__`, where an import would go
    at = text.index("\n", text.index("from __future__ import annotations")) + 1
    path.write_text(text[:at] + line + "\n" + text[at:])
    res = _lint(tree)
    assert res.returncode == 1, res.stdout + res.stderr
    broken = res.stdout[res.stdout.index("Broken contracts"):]
    assert contract in broken, res.stdout


@pytest.mark.parametrize("module,prog", [
    ("model.data", "python -m model.data"), ("model.train", "python -m model.train"),
    ("model.golden", "python -m model.golden"),
    ("model.evaluate", "python -m model.evaluate"),
    ("model.evaluate.layer", "python -m model.evaluate.layer"),
    ("model.generate", "python -m model.generate"),
])
def test_every_model_command_runs_as_a_module(module, prog):
    """`python -m` on each command of the README, from another folder: its help, under the
    name the README gives it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", module, "--help"], cwd="/", env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: {prog} ")
