"""Platforms as data: the machine an estimate is made for, each figure with its source.

``energy/platforms.json`` holds each platform's clock, memory (bandwidth, energy per bit,
capacity), static power and resources. An FPGA's clock is not a number in that file: it names
a whole-engine build of ``fpga/engines.json``, and the clock is the Fmax that ``make fpga``
measured for it (``clock_source = "measured"``). An ASIC's clock names the timing record of
``make asic-timing`` (``"asic_timing"``): the clock the engine's 45 nm netlist and its SRAM
macros allow, to the MHz below it (:data:`energy.estimator.CLOCK_HZ`), also ``"measured"``; a
clock typed in Hz is an assumption and says so (``"assumed"``).

:func:`platform_arch` puts a platform's clock, bandwidth, DRAM energy and static power into an
:class:`~energy.estimator.Arch`; :func:`platform_view` says whether the design point of a
report fits the platform and what it achieves there. What "fits" checks:

* **logic, flip-flops, DSPs, block RAMs** (FPGAs, :func:`engine_area`): the whole layer
  engine's fit (``fpga/area.json``, measured on whole engines at several sizes and checked on
  engines held out of it) at the design point, its RAMs (state, buffers, FIFOs) counted in
  block RAMs at the model's own shape; ``area_basis`` says so.
  Counts of the ECP5 fit are taken as upper bounds on another FPGA's cells (a LUT6 holds any
  LUT4; a DSP48E2 any 18 x 18 product; an 18 Kb block RAM half any DP16KD).
* **on-chip state** (FPGAs, ``state_on_chip``): the SSM state of every layer in the block RAM
  and URAM bits the engine leaves free.
* **off-chip memory**: the model's weights (and its state, when it lives in DRAM) within the
  memory's capacity.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["engine_area", "CLOCK_SOURCES", "PLATFORMS_PATH", "ENGINES_PATH", "Platform", "load_engines",
           "load_platforms", "platform_arch", "platform_view", "PLATFORM_FIELDS",
           "custom_platform"]

PLATFORMS_PATH = Path(__file__).with_name("platforms.json")
ENGINES_PATH = Path(__file__).resolve().parents[1] / "fpga" / "engines.json"
CLOCK_SOURCES = ("measured", "fitted", "assumed")
KINDS = ("fpga", "asic")
RESOURCES = ("lut4", "ff", "dsp", "bram")
BRAM_BITS = 18 * 1024  # one DP16KD (ECP5) or one half of a BRAM36 (UltraScale+)
# The Arch fields a platform sets (--set and --arch may not set them beside --platform).
PLATFORM_FIELDS = ("clock_hz", "dram_bytes_per_s", "dram_pj_per_bit", "dram_efficiency",
                   "dram_latency_ns", "dram_background_w", "static_w", "static_fp16_w")
# A platform memory's behaviour: from the dram.json technology it names ("technology"), or
# given in the platform with a status and a source each.
_BEHAVIOUR = ("efficiency", "latency_ns", "background_w")


@dataclass(frozen=True)
class Platform:
    """One platform of ``energy/platforms.json``, its clock resolved."""

    name: str
    kind: str  # "fpga" or "asic"
    summary: str
    clock_hz: float
    clock_source: str  # one of CLOCK_SOURCES
    clock_note: str
    clock_build: dict | None  # the fpga/engines.json row the clock was measured on
    bytes_per_s: float
    pj_per_bit: float
    capacity_bytes: int
    efficiency: float  # share of the peak bandwidth sustained
    latency_ns: float  # a row miss
    background_w: float  # the memory's standby and refresh power
    static_w: float
    resources: dict | None  # lut4, ff, dsp, bram, bram_bits, uram_bits (FPGAs)
    fpga_device: str | None  # the fpga/area.json device whose fit applies directly
    sources: dict  # every figure's source, as the file gives it


def _fail(where: str, msg: str) -> ValueError:
    return ValueError(f"{where}: {msg}")


def load_engines(path: Path = ENGINES_PATH) -> dict[tuple[str, str], dict]:
    """The whole-engine builds of ``fpga/engines.json`` by build name and device (a build
    placed on two speed grades of a part is two rows)."""
    try:
        rows = json.loads(Path(path).read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _fail(str(path), f"expected a JSON object with a 'rows' list ({e})") from None
    out = {}
    for i, r in enumerate(rows):
        for k in ("build", "device", "lut4", "ff", "bram", "dsp", "fmax_mhz", "params",
                  "measured"):
            if k not in r:
                raise _fail(str(path), f"row {i}: missing {k!r}")
        if not (isinstance(r["fmax_mhz"], (int, float)) and 1 <= r["fmax_mhz"] <= 2000):
            raise _fail(str(path), f"row {r['build']}: fmax_mhz must be a number of MHz in "
                                   f"[1, 2000], not {r['fmax_mhz']!r}")
        if "seeds" in r:
            # A seed sweep's row is its fastest implementation (fpga.flow.run_build): a clock
            # taken from it is the seed the row names, and that seed is the sweep's best.
            sweep = r["seeds"]
            ok = (isinstance(sweep, list) and len(sweep) >= 2
                  and all(isinstance(e, dict) and isinstance(e.get("seed"), int)
                          and isinstance(e.get("fmax_mhz"), (int, float)) for e in sweep))
            mine = [e for e in sweep if e.get("seed") == r.get("seed")] if ok else []
            if (len(mine) != 1 or round(mine[0]["fmax_mhz"], 1) != r["fmax_mhz"]
                    or mine[0]["fmax_mhz"] != max(e["fmax_mhz"] for e in sweep)):
                raise _fail(str(path), f"row {r['build']}: a seed sweep's row must name (seed) "
                                       f"the seed of its highest Fmax and give that Fmax to "
                                       f"0.1 MHz (seeds {sweep!r}, seed {r.get('seed')!r}, "
                                       f"fmax_mhz {r['fmax_mhz']!r})")
        key = (r["build"], r["device"])
        if key in out:
            raise _fail(str(path), f"row {i}: build {r['build']!r} on {r['device']!r} is "
                                   f"given twice")
        out[key] = r
    return out


def _positive(where: str, name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise _fail(where, f"{name} must be a positive finite number, not {v!r}")
    return float(v)


def _asic_clock_hz(where: str, record: object) -> float:
    """The clock of a timing record of :mod:`energy.asic_timing` (a path from the repository
    root), to the MHz below it, as :data:`energy.estimator.CLOCK_HZ` takes it."""
    from energy.asic_timing import ROOT, asic_clock, mhz_below

    if not isinstance(record, str) or not (ROOT / record).is_file():
        raise _fail(where, f"clock.asic_timing must name a timing record of make asic-timing "
                           f"(a file from the repository root, e.g. "
                           f"bench/results/timing/asic_45nm.json), not {record!r}")
    return mhz_below(asic_clock(ROOT / record)["clock_hz"])


def _platform(entry: dict, engines: dict[tuple[str, str], dict], path: Path) -> Platform:
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(str(path), f"a platform without a name: {entry!r:.80}")
    where = f"{path}: platform {name!r}"
    kind = entry.get("kind")
    if kind not in KINDS:
        raise _fail(where, f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    clock = entry.get("clock") or {}
    build = None
    if "build" in clock:
        # The device the build was placed on: the clock's own, or the platform's FPGA (an FPGA
        # the flow cannot place, such as the U55C, names the ECP5 row it borrows).
        device = clock.get("device", entry.get("fpga_device"))
        if (clock["build"], device) not in engines:
            rows = ", ".join(f"{b} on {d}" for b, d in engines) or "none"
            raise _fail(where, f"clock build {clock['build']!r} on device {device!r} is not a "
                               f"row of {ENGINES_PATH} (rows: {rows})")
        build = engines[clock["build"], device]
        clock_hz, source = build["fmax_mhz"] * 1e6, "measured"
    elif "asic_timing" in clock:
        if kind != "asic":
            raise _fail(where, "only an ASIC's clock comes from the 45 nm timing record "
                               "(an FPGA's names its build in fpga/engines.json)")
        clock_hz, source = _asic_clock_hz(where, clock["asic_timing"]), "measured"
    elif "hz" in clock:
        if clock.get("status") != "assumption":
            raise _fail(where, "a clock given in Hz must be marked \"status\": \"assumption\" "
                               "(a measured clock names its build in fpga/engines.json or "
                               "its timing record)")
        if kind == "fpga":
            raise _fail(where, "an FPGA's clock must name the build of fpga/engines.json it "
                               "was measured on, not a number")
        clock_hz, source = _positive(where, "clock.hz", clock["hz"]), "assumed"
    else:
        raise _fail(where, "clock must name a build of fpga/engines.json (build), a timing "
                           "record (asic_timing) or give hz")
    mem = entry.get("memory") or {}
    for k in ("bytes_per_s", "pj_per_bit", "capacity_bytes"):
        if k not in mem:
            raise _fail(where, f"memory lacks {k!r}")
    res = entry.get("resources")
    if kind == "fpga":
        if not isinstance(res, dict) or any(k not in res for k in (*RESOURCES, "bram_bits",
                                                                    "uram_bits")):
            raise _fail(where, f"an FPGA needs resources {', '.join(RESOURCES)}, bram_bits "
                               f"and uram_bits")
    static = entry.get("static_w")
    if static == "leakage":  # the default engine's leakage (energy/leakage.py)
        from energy.estimator import STATIC_W

        static = STATIC_W
        if entry.get("static_status") != "derived":
            raise _fail(where, "a static_w taken from the leakage record must be marked "
                               "\"static_status\": \"derived\"")
    _positive(where, "static_w", static)
    sources = {k: v for k, v in entry.items() if k.endswith(("_source", "_status"))}
    sources.update({f"memory.{k}": v for k, v in mem.items()
                    if k.endswith(("_source", "_status"))})
    behaviour = _memory_behaviour(where, mem, sources)
    return Platform(
        name=name, kind=kind, summary=entry.get("summary", ""), clock_hz=clock_hz,
        clock_source=source, clock_note=clock.get("note", ""), clock_build=build,
        bytes_per_s=_positive(where, "memory.bytes_per_s", mem["bytes_per_s"]),
        pj_per_bit=_positive(where, "memory.pj_per_bit", mem["pj_per_bit"]),
        capacity_bytes=int(_positive(where, "memory.capacity_bytes", mem["capacity_bytes"])),
        **behaviour, static_w=float(static), resources=res,
        fpga_device=entry.get("fpga_device"), sources=sources)


def _memory_behaviour(where: str, mem: dict, sources: dict) -> dict[str, float]:
    """The memory's efficiency, latency and background power: from the technology of
    ``energy/references/dram.json`` that ``mem`` names, or (each) from ``mem`` itself with a
    status and a source; the sources go into ``sources``."""
    from energy.sources import behaviour_stem, check_behaviour, load_memories

    tech = mem.get("technology")
    out = {}
    if tech is not None:
        memories = load_memories()
        if tech not in memories:
            raise _fail(where, f"memory.technology must be one of {', '.join(memories)}, "
                               f"not {tech!r}")
        m = memories[tech]
    for k in _BEHAVIOUR:
        stem = behaviour_stem(k)
        if k in mem:
            try:
                out[k] = check_behaviour(f"memory.{k}", k, mem[k])
            except ValueError as e:
                raise _fail(where, str(e)) from None
            for t in ("status", "source"):
                if not isinstance(mem.get(f"{stem}_{t}"), str) or not mem[f"{stem}_{t}"]:
                    raise _fail(where, f"memory.{k} needs memory.{stem}_{t}")
        elif tech is not None:
            out[k] = getattr(m, k)
            for t in ("status", "source"):
                sources[f"memory.{stem}_{t}"] = m.behaviour_sources[f"{stem}_{t}"]
            sources[f"memory.{stem}_source"] = (f"{tech} (energy/references/dram.json): "
                                                f"{sources[f'memory.{stem}_source']}")
        else:
            raise _fail(where, f"memory lacks {k!r} (or a 'technology' of "
                               f"energy/references/dram.json to take it from)")
    return out


def load_platforms(path: Path = PLATFORMS_PATH,
                   engines_path: Path = ENGINES_PATH) -> dict[str, Platform]:
    """Every platform of ``path`` by name, each checked (errors name the file, the platform
    and the field)."""
    try:
        doc = json.loads(Path(path).read_text())
        entries = doc["platforms"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _fail(str(path), f"expected a JSON object with a 'platforms' list ({e})") from None
    engines = load_engines(engines_path)
    out: dict[str, Platform] = {}
    for e in entries:
        p = _platform(e, engines, Path(path))
        if p.name in out:
            raise _fail(str(path), f"platform {p.name!r} is named twice")
        out[p.name] = p
    return out


def custom_platform(arch, cfg=None) -> Platform:
    """The platform an :class:`~energy.estimator.Arch` describes when no ``--platform`` is
    named: its own clock and memory, every figure the user's or the default's. The clock is
    measured where it is the default (:data:`energy.estimator.CLOCK_HZ`) and the engine sized
    for ``cfg`` has no more array columns than the timed one (the columns set the depth of
    its popcount trees: :data:`energy.asic_timing.TIMED`); any other is an assumption."""
    from energy.asic_timing import TIMED
    from energy.estimator import CLOCK_HZ, dram_pj_per_bit, layer_config

    simd = None if cfg is None else layer_config(cfg, arch).simd
    if arch.clock_hz != CLOCK_HZ:
        source, note = "assumed", "Arch.clock_hz as set (--set / --arch)"
    elif simd is not None and simd > TIMED["simd"]:
        source, note = "assumed", (f"the 45 nm netlist's clock (energy/asic_timing.py), timed "
                                   f"with {TIMED['simd']} array columns; this engine has "
                                   f"{simd}: deeper popcount trees, not timed")
    else:
        source, note = "measured", _DEFAULT_CLOCK_NOTE
    return Platform(
        name="custom", kind="asic", summary="the architecture parameters as given (no "
        "--platform)", clock_hz=arch.clock_hz, clock_source=source, clock_note=note,
        clock_build=None, bytes_per_s=arch.dram_bytes_per_s, pj_per_bit=dram_pj_per_bit(arch),
        capacity_bytes=0, efficiency=arch.dram_efficiency, latency_ns=arch.dram_latency_ns,
        background_w=arch.dram_background_w, static_w=arch.static_w, resources=None,
        fpga_device=None, sources=_custom_static_sources(arch))


_DEFAULT_CLOCK_NOTE = ("Arch.clock_hz's default: the clock the engine's 45 nm netlist allows, "
                       "to the MHz below it (energy/asic_timing.py, "
                       "bench/results/timing/asic_45nm.json: NanGate X1 cells, pre-layout)")


def _custom_static_sources(arch) -> dict[str, str]:
    from energy.estimator import STATIC_W

    if arch.static_w == STATIC_W:
        return {"static_status": "derived",
                "static_source": "the leakage of the default engine's netlist (sized at the "
                                 "default clock), 45 nm cells and SRAM (energy/leakage.py, "
                                 "bench/results/leakage/)"}
    return {"static_status": "given", "static_source": "static_w as set (--set / --arch)"}


def platform_arch(p: Platform, arch):
    """``arch`` with ``p``'s clock, memory (bandwidth, energy per bit, efficiency, latency,
    background power) and static power (the same static power for every design on the
    platform)."""
    return replace(arch, clock_hz=p.clock_hz, dram_bytes_per_s=p.bytes_per_s,
                   dram_pj_per_bit=p.pj_per_bit, dram_efficiency=p.efficiency,
                   dram_latency_ns=p.latency_ns, dram_background_w=p.background_w,
                   static_w=p.static_w, static_fp16_w=p.static_w)


def engine_area(cfg, spec, simd: int, pe: int, lanes: int, state_on_chip: bool = False
                ) -> tuple[dict[str, int], str, bool]:
    """FPGA resources of a whole layer engine at (``simd``, ``pe``, ``lanes``) for model
    shape ``cfg`` and widths ``spec``: :func:`fpga.area.engine_estimate` (the whole-engine fit
    of ``fpga/area.json`` with the RAMs counted at ``cfg``'s shape); the basis in words;
    whether the fit extrapolates. The state RAM holds the layer being computed (the state
    port); with ``state_on_chip`` it is left out here, and :func:`platform_view` checks every
    layer's state against the block RAM and URAM the engine leaves free."""
    from fpga.area import engine_estimate, load_area

    est = engine_estimate(cfg, spec, simd, pe, lanes)
    parts = dict(est["bram_parts"])
    if state_on_chip:
        parts["state"] = 0
    need = {k: est[k] for k in ("lut4", "ff", "dsp")}
    need["bram"] = sum(parts.values())
    eng = load_area()["layer_engine"]
    worst = max(abs(e) for p in eng["held_out"] for e in p["rel_error"].values())
    worst_fit = max(abs(e) for p in eng["checks"] for e in p["rel_error"].values())
    basis = (f"fpga/area.json's whole-engine fit (every unit of the layer, measured at "
             f"{len(eng['points'])} sizes of the {eng['measured_on']['preset']} shape; worst "
             f"error on them {worst_fit:.1%}, on the engines held out {worst:.1%}) at "
             f"({simd}, {pe}, {lanes} lanes); block RAMs: {parts['tables']} for the tables, "
             + (f"{parts['state']} for the state of the layer being computed "
                f"({est['state_bits'] / 2**20:.1f} Mbit), " if not state_on_chip else
                "the state apart (on chip), ")
             + f"{parts['buffers']} for the buffers and FIFOs at the model's shape"
             + ("; extrapolated beyond the measured sizes" if est["extrapolated"] else ""))
    return need, basis, est["extrapolated"]


def platform_view(p: Platform, report: dict, arch, cfg) -> dict:
    """Whether the design point of ``report`` (a preset report made on ``arch`` for model
    shape ``cfg``) fits ``p``, with the need and the capacity of each resource, and what it
    achieves there."""
    d = report["design_point"]
    need: dict[str, dict] = {}
    basis = None
    if p.kind == "fpga":
        area, basis, _ = engine_area(cfg, arch.spec, d["simd"], d["pe"], d["lanes"],
                                     arch.state_on_chip)
        for k in RESOURCES:
            need[k] = {"need": area[k], "have": p.resources[k]}
        on_chip = report["state_bytes"] * 8 if arch.state_on_chip else 0
        free = (p.resources["bram"] - need["bram"]["need"]) * BRAM_BITS + p.resources["uram_bits"]
        need["state_bits_on_chip"] = {"need": on_chip, "have": max(free, 0)}
    # The 1-bit design keeps 8-bit head/embedding weights: its footprint is the packed weights
    # plus the head at head_bits, and the state when it lives in DRAM.
    off_chip = (report["weights_bimamba_bytes"]
                + report["embedding_bytes"] * arch.head_bits // 16
                + (0 if arch.state_on_chip else report["state_bytes"]))
    if p.capacity_bytes:
        need["memory_bytes"] = {"need": off_chip, "have": p.capacity_bytes}
    short = [k for k, v in need.items() if v["need"] > v["have"]]
    return {
        "name": p.name, "kind": p.kind, "summary": p.summary,
        "clock_hz": p.clock_hz, "clock_source": p.clock_source, "clock_note": p.clock_note,
        "clock_measured_on": (None if p.clock_build is None else
                              {k: p.clock_build[k] for k in ("build", "device", "config",
                                                             "fmax_mhz", "measured")
                               if k in p.clock_build}),
        "bandwidth_bytes_per_s": p.bytes_per_s, "memory_pj_per_bit": p.pj_per_bit,
        "memory_efficiency": p.efficiency, "memory_latency_ns": p.latency_ns,
        "memory_background_w": p.background_w,
        "memory_capacity_bytes": p.capacity_bytes or None, "static_w": p.static_w,
        "fits": not short, "short_of": short, "resources": need, "area_basis": basis,
        "tokens_per_s": report["tokens_per_s"],
        "energy_per_token_j": report["energy_per_token_j"],
        "roofline_fraction": report["roofline_fraction"],
        "sources": p.sources,
    }
