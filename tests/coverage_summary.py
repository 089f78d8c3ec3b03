"""Line coverage per package from ``make coverage``'s data (build/coverage): each package's
share of its statements run by the suite, and every module under 80 %.

``python tests/coverage_summary.py PACKAGE...``
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parents[1]
FLOOR = 0.80


def main(packages: list[str]) -> int:
    cov = coverage.Coverage(config_file=str(ROOT / "pyproject.toml"))
    cov.combine()
    cov.load()
    total: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    low = []
    # Every module of the packages, imported by the suite or not (a module never imported
    # counts with all its lines missed).
    for f in sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py")):
        rel = f.relative_to(ROOT)
        pkg = rel.parts[0]
        _, statements, _, missing, _ = cov.analysis2(str(f))
        run = len(statements) - len(missing)
        total[pkg][0] += run
        total[pkg][1] += len(statements)
        if statements and run / len(statements) < FLOOR:
            low.append((str(rel), run, len(statements)))
    print("package  lines run / statements")
    for pkg in packages:
        run, n = total[pkg]
        print(f"{pkg:8} {run:6} / {n:6}  {run / n:6.1%}" if n else f"{pkg:8} (not measured)")
    print(f"\nmodules under {FLOOR:.0%}:")
    for rel, run, n in sorted(low, key=lambda r: r[1] / r[2]):
        print(f"  {rel:50} {run:5} / {n:5}  {run / n:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
