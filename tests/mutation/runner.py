"""The loop of the mutation scripts: each one-line mutant applied alone, the tests run, the file
restored (also when the run fails), CAUGHT or MISSED printed, then the count."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_mutants(mutants: list[tuple[str, str, str, str]], pytest_args: list[str],
                only: list[str]) -> int:
    """Apply each ``(name, path, old, new)`` whose name contains one of ``only`` (all when
    empty), run ``pytest -q -x -p no:cacheprovider`` with ``pytest_args``; 0 when every one
    is caught."""
    results = []
    for name, path, old, new in mutants:
        if only and not any(o in name for o in only):
            continue
        f = ROOT / path
        src = f.read_text()
        assert src.count(old) == 1, (name, src.count(old))
        try:
            f.write_text(src.replace(old, new))
            r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p",
                                "no:cacheprovider", *pytest_args], cwd=ROOT,
                               capture_output=True, text=True, timeout=1200)
            caught = r.returncode != 0
            line = [s for s in r.stdout.splitlines() if s.startswith("FAILED")][:1]
        finally:
            f.write_text(src)
        results.append((name, caught))
        print(("CAUGHT " if caught else "MISSED ") + name, "|", line[0] if line else "",
              flush=True)
    caught = sum(c for _, c in results)
    rate = f" ({100 * caught / len(results):.0f} %)" if results else ""
    print(f"{caught} / {len(results)} caught{rate}")
    return 0 if caught == len(results) else 1
