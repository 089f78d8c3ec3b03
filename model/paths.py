"""Where the repository keeps the shipped checkpoints and where ``make data`` writes the corpus.

Every path is resolved from this package, never from the current folder, so the defaults of
the command lines and of the library (``load_split("train")``, ``load_lm_model(SHIPPED /
"student.safetensors")``) work from any folder::

    from model.paths import SHIPPED, DATA_ROOT
    SHIPPED / "student.safetensors"     # the shipped Bi-Mamba student
    DATA_ROOT / "shakespeare"           # train.bin, val.bin, test.bin and split.json

(The project is installed editable, so the package is the one in the repository.)
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["REPO_ROOT", "CHECKPOINTS", "SHIPPED", "DATA_ROOT"]

# The repository: the folder above the ``model`` package.
REPO_ROOT = Path(__file__).resolve().parents[1]

# The checkpoints kept in the repository, and the Shakespeare teacher and student among them
# (docs/real_model.md).
CHECKPOINTS = REPO_ROOT / "checkpoints"
SHIPPED = CHECKPOINTS / "shakespeare"

# The data root of ``make data`` (``python -m model.data --root build/data`` from the
# repository): the split goes to ``DATA_ROOT / "shakespeare"``.
DATA_ROOT = REPO_ROOT / "build" / "data"
