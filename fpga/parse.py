"""Parsers of what Yosys and nextpnr write: pure Python, no tool needed to run them.

Inputs are the texts the flow keeps per build (``build/fpga/<device>/<build>/``):

* the Yosys log (``yosys.log``), for the cell counts of the final ``stat`` and for how each
  memory was mapped (``memory_libmap``'s ``mapping memory T.m via $__CELL_`` lines, and
  ``memory_map``'s ``Mapping memory \\m in module \\T:`` for memories turned into logic);
* the ``$mem_v2`` cells dumped just before memory mapping (``memories.il``), for each memory's
  depth, width and ports;
* nextpnr's log (``nextpnr.log``), for the LUT4 breakdown that nextpnr-ecp5 prints before
  packing (logic, carry, RAM and RAMW LUTs); nextpnr's JSON report has no such split;
* nextpnr's JSON report (``--report``), for the achieved frequency, the cell utilisation and
  the critical path; with ``--detailed-timing-report``, for the arrival time at every timing
  endpoint (:func:`late_endpoints`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MemoryInfo", "CriticalPath", "yosys_cells", "yosys_memory_mapping", "memories",
           "nextpnr_lut_breakdown", "report_fmax", "report_utilisation", "critical_path",
           "signal_name", "memory_kind", "LateEndpoints", "late_endpoints", "unit_of"]

_STAT_LINE = re.compile(r"^\s+(\d+)\s+(\S+)\s*$")
_LIBMAP = re.compile(r"^mapping memory (\S+) via (\S+)\s*$")
_MEMMAP = re.compile(r"^Mapping memory \\(\S+) in module \\(\S+):\s*$")
_MODULE_HEAD = re.compile(r"^=== (.+?)(?: \(partially selected\))? ===\s*$")
_LUT_LINE = re.compile(r"^Info:\s+(Total LUT4s|logic LUTs|carry LUTs|RAM LUTs|RAMW LUTs|"
                       r"Total DFFs):\s+(\d+)/\s*(\d+)")
# Suffixes Yosys and nextpnr append to a signal's name when they make a cell of it: the cell
# name is cut at the first of these to recover the register or memory it came from.
_CELL_SUFFIX = re.compile(r"(_TRELLIS_|_DP16KD|_PDPW16KD|_MULT18X18D|_ALU54B|_LUT4|_CCU2C|"
                          r"_PFUMX|_L6MUX21|_SB_|_ICESTORM|_RDATA|\$)")


@dataclass(frozen=True)
class MemoryInfo:
    """One memory of a unit as Yosys saw it before mapping, and what it was mapped to.

    Members
    -------
    name : str
        Hierarchical name in the flattened design (``hfifo.storage``).
    depth, width : int
        Words and bits per word.
    read_ports, write_ports : int
        Port counts.
    sync_read : bool
        Whether every read port is registered (a block RAM needs that).
    rom : bool
        No write port: a table with initial contents.
    cell : str
        Yosys's mapping: ``$__DP16KD_``, ``$__PDPW16KD_``, ``$__TRELLIS_DPR16X4_``,
        ``$__ICE40_RAM4K_``..., or ``logic`` when ``memory_map`` turned it into LUTs and FFs.
    """

    name: str
    depth: int
    width: int
    read_ports: int
    write_ports: int
    sync_read: bool
    rom: bool
    cell: str

    @property
    def kind(self) -> str:
        """``block RAM``, ``LUT RAM`` or ``logic`` (:func:`memory_kind` of :attr:`cell`)."""
        return memory_kind(self.cell)

    @property
    def bits(self) -> int:
        return self.depth * self.width


@dataclass(frozen=True)
class CriticalPath:
    """The worst register-to-register path of nextpnr's report.

    Members
    -------
    start, end : str
        Signal names the start and end cells were made from (:func:`signal_name`).
    start_cell, end_cell : str
        The cell names as nextpnr reports them.
    delay_ns : float
        Sum of the path's delays (clock-to-out, logic, routing, setup).
    logic_levels : int
        Cells the path passes through (its ``logic`` segments).
    routing_ns : float
        The routing share of ``delay_ns``.
    """

    start: str
    end: str
    start_cell: str
    end_cell: str
    delay_ns: float
    logic_levels: int
    routing_ns: float


def memory_kind(cell: str) -> str:
    """What a Yosys memory mapping means on the device: block RAM, LUT RAM or logic.

    >>> memory_kind("$__DP16KD_"), memory_kind("$__TRELLIS_DPR16X4_"), memory_kind("logic")
    ('block RAM', 'LUT RAM', 'logic')
    """
    if cell == "logic":
        return "logic"
    if "DPR16X4" in cell:
        return "LUT RAM"
    if any(k in cell for k in ("DP16KD", "PDPW16KD", "RAM4K", "RAM40", "SPRAM")):
        return "block RAM"
    raise ValueError(f"unknown memory cell {cell!r}: expected a DP16KD, PDPW16KD, "
                     f"TRELLIS_DPR16X4, ICE40_RAM4K or SPRAM mapping, or 'logic'")


def yosys_cells(log: str) -> dict[str, int]:
    """Cell counts of the last ``stat`` in a Yosys log (the top module's, after synthesis).

    Yosys-internal cells (``$scopeinfo``) are left out. Of a design of several modules,
    ``stat`` prints each module's own cells and then the design hierarchy's totals (every
    cell of the top and of the modules under it): the totals are taken, without the
    ``submodules`` list (module instances, not cells).

    Raises
    ------
    ValueError
        If the log has no statistics block.
    """
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines)
              if re.match(r"^\d+(\.\d+)*\. Printing statistics", line)]
    if not starts:
        raise ValueError("no 'Printing statistics' block in the Yosys log")
    block = lines[starts[-1]:]
    modules = {m.group(1) for m in map(_MODULE_HEAD.match, block) if m}
    hierarchy = [i for i, line in enumerate(block) if line.startswith("=== design hierarchy ===")]
    if hierarchy:
        block = block[hierarchy[-1]:]
    cells: dict[str, int] = {}
    in_cells = False
    for line in block:
        if re.match(r"^\s+\d+ cells\s*$", line):
            in_cells = True
            continue
        if in_cells:
            m = _STAT_LINE.match(line)
            if not m:
                break
            name = m.group(2)
            if not name.startswith("$") and name != "submodules" and name not in modules:
                cells[name] = int(m.group(1))
    if not in_cells:
        raise ValueError("the Yosys statistics block has no cell list")
    return cells


def yosys_memory_mapping(log: str) -> dict[str, str]:
    """Memory name (flattened, without the top module) -> mapped cell, or ``logic``."""
    out: dict[str, str] = {}
    for line in log.splitlines():
        m = _LIBMAP.match(line)
        if m:
            out[m.group(1).split(".", 1)[1]] = m.group(2)
            continue
        m = _MEMMAP.match(line)
        if m:
            out[m.group(1)] = "logic"
    return out


def _il_param(block: str, name: str) -> str | None:
    m = re.search(rf"^\s*parameter \\{name} (.+?)\s*$", block, re.M)
    return m.group(1) if m else None


def memories(il: str, log: str) -> list[MemoryInfo]:
    """Each ``$mem_v2`` cell of an RTLIL dump (``memories.il``) with its mapping from ``log``.

    Raises
    ------
    ValueError
        If a memory in the dump has no mapping in the log.
    """
    mapping = yosys_memory_mapping(log)
    out = []
    for block in re.split(r"^\s*cell \$mem_v2 ", il, flags=re.M)[1:]:
        memid = _il_param(block, "MEMID")
        if memid is None:
            continue
        name = memid.strip('"').lstrip("\\")
        depth = int(_il_param(block, "SIZE"))
        width = int(_il_param(block, "WIDTH"))
        rd = int(_il_param(block, "RD_PORTS"))
        wr = int(_il_param(block, "WR_PORTS"))
        clk_en = _il_param(block, "RD_CLK_ENABLE") or "0"
        bits = clk_en.split("'", 1)[1] if "'" in clk_en else bin(int(clk_en))[2:]
        if name not in mapping:
            raise ValueError(f"memory {name!r} has no mapping in the Yosys log")
        out.append(MemoryInfo(name, depth, width, rd, wr, sync_read=rd > 0 and set(bits) == {"1"},
                              rom=wr == 0, cell=mapping[name]))
    return sorted(out, key=lambda m: m.name)


def nextpnr_lut_breakdown(log: str) -> dict[str, int]:
    """nextpnr-ecp5's LUT4 split before packing: ``total``, ``logic``, ``carry``, ``ram``,
    ``ramw`` and ``dff`` (empty for nextpnr-ice40, which prints no such block).

    ``total`` is the sum of the others but ``dff``; ``ram`` + ``ramw`` are the LUT4s a LUT RAM
    takes (a TRELLIS_DPR16X4 takes 4 RAM LUTs for its 64 bits and 2 for its write port).
    """
    keys = {"Total LUT4s": "total", "logic LUTs": "logic", "carry LUTs": "carry",
            "RAM LUTs": "ram", "RAMW LUTs": "ramw", "Total DFFs": "dff"}
    out: dict[str, int] = {}
    for line in log.splitlines():
        m = _LUT_LINE.match(line)
        if m and keys[m.group(1)] not in out:
            out[keys[m.group(1)]] = int(m.group(2))
    return out


def report_fmax(report: dict) -> tuple[float, float]:
    """(achieved, constraint) in MHz of the slowest clock in nextpnr's JSON report.

    Raises
    ------
    ValueError
        If the report has no clock.
    """
    fmax = report.get("fmax") or {}
    if not fmax:
        raise ValueError("nextpnr's report has no clock in 'fmax' (is the unit clocked?)")
    clk = min(fmax.values(), key=lambda v: v["achieved"])
    return float(clk["achieved"]), float(clk["constraint"])


def report_utilisation(report: dict) -> dict[str, tuple[int, int]]:
    """Cell type -> (used, available) from nextpnr's JSON report."""
    return {k: (int(v["used"]), int(v["available"])) for k, v in report["utilization"].items()}


def signal_name(cell: str) -> str:
    """The signal a cell was made from: its name cut before the first primitive suffix.

    >>> signal_name("prod3[50]_TRELLIS_FF_Q")
    'prod3[50]'
    >>> signal_name("state.0.0_DP16KD_DOB0")
    'state.0.0'

    A Yosys-internal name (``$...``, escaped as ``\\$...``) keeps its first part:

    >>> signal_name("\\$signature__addr$50[2]_TRELLIS_FF_Q")
    '$signature__addr'
    """
    if cell.startswith("\\$"):
        cell = cell[1:]
    m = _CELL_SUFFIX.search(cell, 1 if cell.startswith("$") else 0)
    return cell[:m.start()] if m and m.start() > 0 else cell


def _clock(event: str | None) -> str | None:
    """The clock of a nextpnr clock event: ``posedge clk`` or ``negedge clk`` -> ``clk``."""
    if event and event.startswith(("posedge ", "negedge ")):
        return event.split(" ", 1)[1]
    return event


def critical_path(report: dict) -> CriticalPath:
    """The longest path of nextpnr's JSON report (one per clock pair is reported).

    Raises
    ------
    ValueError
        If the report lists no critical path.
    """
    paths = [p for p in report.get("critical_paths", [])
             if p.get("path") and "<async>" not in (p.get("from"), p.get("to"))]
    if not paths:
        raise ValueError("nextpnr's report lists no register-to-register critical path")
    # The slowest clock's own path sets Fmax (launched and captured by that clock, on either
    # edge: a posedge-to-negedge path is its own too); nextpnr also lists paths between clock
    # domains (on the iCE40, DSPs get a domain of their own), used only if it has none.
    fmax = report.get("fmax") or {}
    if fmax:
        clk = min(fmax, key=lambda c: fmax[c]["achieved"])
        own = [p for p in paths if _clock(p.get("from")) == _clock(p.get("to")) == clk]
        paths = own or paths
    path = max(paths, key=lambda p: sum(s["delay"] for s in p["path"]))["path"]
    start_cell = path[0]["from"]["cell"]
    end_cell = path[-1]["to"]["cell"]
    return CriticalPath(
        start=signal_name(start_cell), end=signal_name(end_cell), start_cell=start_cell,
        end_cell=end_cell, delay_ns=round(sum(s["delay"] for s in path), 3),
        logic_levels=sum(1 for s in path if s["type"] == "logic"),
        routing_ns=round(sum(s["delay"] for s in path if s["type"] == "routing"), 3))


@dataclass(frozen=True)
class LateEndpoints:
    """The timing endpoints (inputs of flip-flops, RAMs, multipliers) whose data arrives after
    the clock period, from nextpnr's detailed timing report: where a design misses its target,
    not only its one worst path.

    Members
    -------
    period_ns : float
        The period the arrivals are held against (setup times are not included: nextpnr's
        detailed report gives arrival times only).
    endpoints : int
        Endpoints in the report.
    late : int
        Endpoints whose latest arrival is after ``period_ns``.
    excess_ns : float
        Sum over the late endpoints of arrival minus period (a total negative slack).
    by_unit : dict
        Late endpoints per unit (the hierarchy of the endpoint's signal, :func:`unit_of`),
        most first.
    by_net : list of (str, int, float)
        The nets driving late endpoints: (net, late endpoints, latest arrival in ns), most
        first.
    """

    period_ns: float
    endpoints: int
    late: int
    excess_ns: float
    by_unit: dict
    by_net: list


def unit_of(cell: str, strip: str = "") -> str:
    """The unit a cell belongs to: the hierarchy of its signal (:func:`signal_name`) without
    the signal itself, ``(top)`` for the top module's own signals.

    >>> unit_of("layer.conv.w1[3]_TRELLIS_FF_Q")
    'layer.conv'
    >>> unit_of("sec_beat[4]_TRELLIS_FF_Q")
    '(top)'
    >>> unit_of("layer.scan.xfifo.storage.0.5")
    'layer.scan.xfifo'
    """
    name = signal_name(cell).removeprefix(strip)
    parts = name.split("[", 1)[0].split(".")
    while len(parts) > 1 and parts[-1].isdigit():  # a memory's blocks: storage.0.5
        parts.pop()
    return ".".join(parts[:-1]) or "(top)"


def late_endpoints(report: dict, period_ns: float, strip: str = "") -> LateEndpoints:
    """The endpoints of nextpnr's detailed timing report that arrive after ``period_ns``.

    ``strip`` is a prefix taken off cell names first (the wrapper's ``u.``).

    Raises
    ------
    ValueError
        If the report has no ``detailed_net_timings`` (nextpnr ran without
        ``--detailed-timing-report``) or the period is not positive.
    """
    if not period_ns > 0:
        raise ValueError(f"period_ns must be > 0, not {period_ns!r}")
    nets = report.get("detailed_net_timings")
    if nets is None:
        raise ValueError("nextpnr's report has no detailed_net_timings: run nextpnr with "
                         "--detailed-timing-report")
    count, late, excess = 0, 0, 0.0
    units: dict[str, int] = {}
    by_net: dict[str, list] = {}
    for net in nets:
        for ep in net.get("endpoints", []):
            count += 1
            arrival = float(max(ep["delay"]))
            if arrival <= period_ns:
                continue
            late += 1
            excess += arrival - period_ns
            u = unit_of(ep["cell"], strip)
            units[u] = units.get(u, 0) + 1
            entry = by_net.setdefault(net["net"].removeprefix(strip), [0, 0.0])
            entry[0] += 1
            entry[1] = max(entry[1], arrival)
    return LateEndpoints(
        period_ns=period_ns, endpoints=count, late=late, excess_ns=round(excess, 3),
        by_unit=dict(sorted(units.items(), key=lambda kv: (-kv[1], kv[0]))),
        by_net=[(n, c, round(a, 3)) for n, (c, a) in
                sorted(by_net.items(), key=lambda kv: (-kv[1][0], kv[0]))])
