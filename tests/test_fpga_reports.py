"""The FPGA report parsers (``fpga/parse.py``) and the summary row made from them
(``fpga.flow._fill_from_pnr``) on reports the captured fixtures do not cover: several clocks
(each with its own critical path, an edge-to-edge path among them, paths across domains,
asynchronous paths), several statistics and utilisation blocks (an earlier ``stat``, a
design of several modules with its hierarchy's totals, nextpnr's counts before and after
packing), and memories of every port mix and mapping (DP16KD, PDPW16KD, TRELLIS_DPR16X4,
logic; registered, unregistered and mixed read ports; ROMs; two write ports).

The texts are written here in the formats of Yosys's ``stat`` and ``dump`` and of nextpnr's log
and JSON report, and every expected number is written out by hand.
"""

import pytest

from fpga import parse
from fpga.flow import DEVICES, _fill_from_pnr, _ice40_fit

# -- Yosys: several statistics blocks, several modules -------------------------------------------

# synth_ecp5's own ``stat`` (before the flow's final one) and the flow's final ``stat`` of a
# flattened design: the last block is the one that counts.
TWO_STATS = """\
2.52. Printing statistics.

=== unit ===

        +----------Local Count, excluding submodules.
        | 
     4100 wires
     6100 wire bits
     4100 public wires
     6100 public wire bits
       11 ports
      244 port bits
     2900 cells
      300   CCU2C
        3   DP16KD
     1500   LUT4
        4   MULT18X18D
     1093   TRELLIS_FF

2.53. Executing CHECK pass (checking for obvious problems).
Found and reported 0 problems.

6. Printing statistics.

=== unit ===

        +----------Local Count, excluding submodules.
        | 
     3504 wires
     5108 wire bits
     3504 public wires
     5108 public wire bits
       11 ports
      244 port bits
     2517 cells
        2   $scopeinfo
      235   CCU2C
        3   DP16KD
       68   L6MUX21
     1188   LUT4
        4   MULT18X18D
        2   PDPW16KD
      207   PFUMX
       92   TRELLIS_DPR16X4
      716   TRELLIS_FF

End of script.
"""


def test_the_last_of_several_stat_blocks_counts():
    assert parse.yosys_cells(TWO_STATS) == {
        "CCU2C": 235, "DP16KD": 3, "L6MUX21": 68, "LUT4": 1188, "MULT18X18D": 4,
        "PDPW16KD": 2, "PFUMX": 207, "TRELLIS_DPR16X4": 92, "TRELLIS_FF": 716}


# A design that is not flattened: the wrapper and two instances of the unit. ``stat`` prints
# each module's own cells (the unit first), the wrapper's list of submodules, then the design
# hierarchy: cells per module, and the totals over the whole design.
#   sub_unit: 1 $scopeinfo + 5 SB_CARRY + 6 SB_DFF + 4 SB_DFFE + 30 SB_LUT4 = 46 cells
#   fpga_wrap: 4 SB_DFF + 20 SB_LUT4 + 2 SB_MAC16 + 1 SB_RAM40_4K = 27 cells, 2 sub_units
#   totals: 27 + 2 x 46 = 119 cells
HIERARCHY = """\
9.50. Printing statistics.

=== sub_unit ===

        +----------Local Count, excluding submodules.
        | 
      310 wires
      900 wire bits
       40 public wires
      420 public wire bits
        6 ports
      120 port bits
       46 cells
        1   $scopeinfo
        5   SB_CARRY
        6   SB_DFF
        4   SB_DFFE
       30   SB_LUT4

=== fpga_wrap ===

        +----------Local Count, excluding submodules.
        | 
       60 wires
      140 wire bits
       12 public wires
       70 public wire bits
        4 ports
        4 port bits
       27 cells
        4   SB_DFF
       20   SB_LUT4
        2   SB_MAC16
        1   SB_RAM40_4K
        2 submodules
        2   sub_unit

=== design hierarchy ===

        +----------Count including submodules.
        | 
      119 fpga_wrap
       46 sub_unit

        +----------Count including submodules.
        | 
      680 wires
     1940 wire bits
       92 public wires
      910 public wire bits
        4 ports
        4 port bits
        - memories
        - memory bits
        - processes
      119 cells
        2   $scopeinfo
       10   SB_CARRY
       16   SB_DFF
        8   SB_DFFE
       80   SB_LUT4
        2   SB_MAC16
        1   SB_RAM40_4K
        2 submodules
        2   sub_unit

9.51. Executing CHECK pass (checking for obvious problems).
"""


def test_a_design_of_several_modules_counts_its_hierarchy_totals():
    """Not the first module's own cells (the unit's), not the wrapper's own, and no module
    instance taken for a cell."""
    cells = parse.yosys_cells(HIERARCHY)
    assert cells == {"SB_CARRY": 10, "SB_DFF": 16, "SB_DFFE": 8, "SB_LUT4": 80, "SB_MAC16": 2,
                     "SB_RAM40_4K": 1}
    # The iCE40 fit check reads these totals: 24 flip-flops, 80 LUTs; 2 DSPs, 1 block RAM.
    assert _ice40_fit(cells, DEVICES["ice40-up5k"]) == ""
    many = {**cells, "SB_MAC16": 9, "SB_RAM40_4K": 31, "SB_LUT4": 5281}
    assert _ice40_fit(many, DEVICES["ice40-up5k"]) == (
        "31 of 30 block RAMs, 9 of 8 DSPs, at least 5281 of 5280 logic cells")
    ffs = {"SB_DFF": 3000, "SB_DFFE": 2281, "SB_LUT4": 10}  # flip-flops bound the cells too
    assert _ice40_fit(ffs, DEVICES["ice40-up5k"]) == "at least 5281 of 5280 logic cells"
    assert _ice40_fit({**ffs, "SB_DFFE": 2280}, DEVICES["ice40-up5k"]) == ""


def test_a_partially_selected_module_is_still_a_module():
    text = HIERARCHY.replace("=== sub_unit ===", "=== sub_unit (partially selected) ===")
    assert parse.yosys_cells(text) == {"SB_CARRY": 10, "SB_DFF": 16, "SB_DFFE": 8,
                                       "SB_LUT4": 80, "SB_MAC16": 2, "SB_RAM40_4K": 1}


# -- Yosys: memories of every port mix and mapping ------------------------------------------------

MIXED_LOG = """\
4.27. Executing MEMORY_LIBMAP pass (mapping memories to cells).
mapping memory unit.wmem via $__DP16KD_
mapping memory unit.amem via $__PDPW16KD_
mapping memory unit.hfifo.storage via $__TRELLIS_DPR16X4_
Extracted data FF from read port 0 of unit.hfifo.storage: $\\hfifo.storage$rdreg[0]
mapping memory unit.tdp via $__DP16KD_
4.28. Executing MEMORY_MAP pass (converting memories to logic and flip-flops).
Mapping memory \\exp_rom in module \\unit:
Mapping memory \\dual.tab in module \\unit:
"""


def _mem(name: str, size: int, width: int, rd: int, rd_clk: str, wr: int) -> str:
    """A ``$mem_v2`` cell as ``dump`` writes it (the parameters in Yosys's order, some
    connections)."""
    wr_bits = f"{wr}'{'1' * wr}" if wr else "0'"
    return f"""\
  attribute \\src "unit.v:{size}.3-{size}.9"
  cell $mem_v2 \\{name}
    parameter \\ABITS {max(1, (size - 1).bit_length())}
    parameter \\INIT {size * width}'x
    parameter \\MEMID "\\\\{name}"
    parameter \\OFFSET 0
    parameter \\RD_ARST_VALUE {rd * width}'x
    parameter \\RD_CE_OVER_SRST {rd}'{'0' * rd}
    parameter \\RD_CLK_ENABLE {rd_clk}
    parameter \\RD_CLK_POLARITY {rd}'{'1' * rd}
    parameter \\RD_PORTS {rd}
    parameter \\RD_WIDE_CONTINUATION {rd}'{'0' * rd}
    parameter \\SIZE {size}
    parameter \\WIDTH {width}
    parameter \\WR_CLK_ENABLE {wr_bits}
    parameter \\WR_PORTS {wr}
    parameter \\WR_WIDE_CONTINUATION {wr_bits.replace('1', '0')}
    connect \\RD_ADDR \\raddr
    connect \\RD_CLK {rd}'{'0' * rd}
  end
"""


MIXED_IL = "module \\unit\n" + "".join([
    _mem("wmem", 1024, 16, 1, "1'1", 1),            # one registered read port: DP16KD
    _mem("amem", 64, 72, 1, "1'1", 1),              # wide: PDPW16KD
    _mem("hfifo.storage", 13, 160, 1, "1'0", 1),    # unregistered read: LUT RAM
    _mem("tdp", 512, 18, 2, "2'11", 2),             # true dual port, both registered
    _mem("exp_rom", 129, 17, 2, "2'00", 0),         # a ROM read twice, unregistered: logic
    _mem("dual.tab", 32, 8, 2, "2'01", 1),          # one read port registered, one not
]) + "end\n"


def test_memories_of_every_port_mix_and_mapping():
    mems = {m.name: m for m in parse.memories(MIXED_IL, MIXED_LOG)}
    assert list(mems) == sorted(mems)  # sorted by name
    got = {n: (m.depth, m.width, m.read_ports, m.write_ports, m.sync_read, m.rom, m.cell, m.kind,
               m.bits) for n, m in mems.items()}
    assert got == {
        "wmem": (1024, 16, 1, 1, True, False, "$__DP16KD_", "block RAM", 16384),
        "amem": (64, 72, 1, 1, True, False, "$__PDPW16KD_", "block RAM", 4608),
        "hfifo.storage": (13, 160, 1, 1, False, False, "$__TRELLIS_DPR16X4_", "LUT RAM", 2080),
        "tdp": (512, 18, 2, 2, True, False, "$__DP16KD_", "block RAM", 9216),
        "exp_rom": (129, 17, 2, 0, False, True, "logic", "logic", 2193),
        "dual.tab": (32, 8, 2, 1, False, False, "logic", "logic", 256),
    }


def test_memory_mapping_names_without_the_top_module():
    assert parse.yosys_memory_mapping(MIXED_LOG) == {
        "wmem": "$__DP16KD_", "amem": "$__PDPW16KD_", "hfifo.storage": "$__TRELLIS_DPR16X4_",
        "tdp": "$__DP16KD_", "exp_rom": "logic", "dual.tab": "logic"}
    # Inside the iCE40 wrapper, the unit's memories keep its instance name.
    assert parse.yosys_memory_mapping(
        "mapping memory fpga_wrap.u.bmem via $__ICE40_RAM4K_\n"
        "Mapping memory \\u.rom in module \\fpga_wrap:\n") == {
            "u.bmem": "$__ICE40_RAM4K_", "u.rom": "logic"}


def test_a_memory_the_log_does_not_map_is_named():
    with pytest.raises(ValueError, match="memory 'tdp' has no mapping in the Yosys log"):
        parse.memories(MIXED_IL, MIXED_LOG.replace("mapping memory unit.tdp via $__DP16KD_\n", ""))


@pytest.mark.parametrize("cell, kind", [
    ("$__ICE40_SPRAM_", "block RAM"), ("$__ECP5_PDPW16KD_", "block RAM"),
    ("$__ECP5_DP16KD_", "block RAM"), ("$__TRELLIS_DPR16X4_", "LUT RAM")])
def test_memory_kind_of_other_spellings(cell, kind):
    assert parse.memory_kind(cell) == kind


# -- nextpnr: several utilisation blocks ----------------------------------------------------------

# nextpnr-ecp5's log: the LUT4 split before packing (the only block with it), then the cells
# after packing, then one Fmax line per clock. 3900 logic + 620 carry + 400 RAM + 200 RAMW LUTs.
NEXTPNR_LOG = """\
Info: Logic utilisation before packing:
Info:     Total LUT4s:      5120/83640     6%
Info:         logic LUTs:   3900/83640     4%
Info:         carry LUTs:    620/83640     0%
Info:           RAM LUTs:    400/10455     3%
Info:          RAMW LUTs:    200/20910     0%

Info:      Total DFFs:      4410/83640     5%

Info: Packing IOs..
Info: Packing LUTs...
Info: Checksum: 0x0badcafe

Info: Device utilisation:
Info: 	          TRELLIS_IO:       0/    365     0%
Info: 	              DP16KD:       7/    208     3%
Info: 	          MULT18X18D:      12/    156     7%
Info: 	              ALU54B:       3/     78     3%
Info: 	          TRELLIS_FF:    4410/  83640     5%
Info: 	        TRELLIS_COMB:    5316/  83640     6%
Info: 	        TRELLIS_RAMW:     100/  10455     0%

Info: Placed 9846 cells based on constraints.
Info: Device utilisation:
Info: 	              DP16KD:       7/    208     3%
Info: 	        TRELLIS_COMB:    5316/  83640     6%
Info: Max frequency for clock     'clk': 142.30 MHz (PASS at 125.00 MHz)
Info: Max frequency for clock  'clk_io': 61.73 MHz (PASS at 50.00 MHz)
Info: Max frequency for clock 'clk_mem': 96.50 MHz (FAIL at 100.00 MHz)
"""


def test_lut_breakdown_from_the_block_before_packing_only():
    assert parse.nextpnr_lut_breakdown(NEXTPNR_LOG) == {
        "total": 5120, "logic": 3900, "carry": 620, "ram": 400, "ramw": 200, "dff": 4410}


# -- nextpnr: several clocks ----------------------------------------------------------------------

def _path(start: str, end: str, segments: list[tuple[str, float]]) -> list[dict]:
    """A path as nextpnr's report writes it, from ``start`` (a cell) to ``end``, through
    ``segments`` of (type, delay); the cells in between are named after the segment."""
    cells = [start] + [f"n{i}_TRELLIS_COMB" for i in range(len(segments) - 1)] + [end]
    out = []
    for i, (kind, delay) in enumerate(segments):
        seg = {"delay": delay, "type": kind,
               "from": {"cell": cells[i], "port": "Q", "loc": [i, 1]},
               "to": {"cell": cells[i + 1], "port": "D", "loc": [i + 1, 1]}}
        if kind == "routing":
            seg.update(net=f"net{i}", sources=[])
        out.append(seg)
    return out


def _report(paths: list[tuple[str, str, list[dict]]], fmax: dict) -> dict:
    return {
        "critical_paths": [{"from": a, "to": b, "path": p} for a, b, p in paths],
        "fmax": {c: {"achieved": a, "constraint": t} for c, (a, t) in fmax.items()},
        "utilization": {
            "ALU54B": {"available": 78, "used": 3}, "DP16KD": {"available": 208, "used": 7},
            "MULT18X18D": {"available": 156, "used": 12},
            "TRELLIS_COMB": {"available": 83640, "used": 5316},
            "TRELLIS_FF": {"available": 83640, "used": 4410},
            "TRELLIS_IO": {"available": 365, "used": 0},
            "TRELLIS_RAMW": {"available": 10455, "used": 100}},
    }


# Three clocks. clk_io is the slowest (61.73 MHz): its critical path runs from a rising edge to
# a falling one (half a period: 500 / 8.1 ns). A path across domains (clk -> clk_mem, 14.2 ns)
# and an asynchronous one (20 ns) are longer than any clock's own.
CLK_OWN = _path("acc[3]_TRELLIS_FF_Q", "sum[7]_TRELLIS_FF_Q",
                [("clk-to-q", 0.5), ("routing", 2.0), ("logic", 0.45), ("routing", 3.5),
                 ("setup", 0.55)])  # 7.0 ns
IO_OWN = _path("shift[0]_TRELLIS_FF_Q", "\\$pad_reg$12[1]_TRELLIS_FF_Q",
               [("clk-to-q", 0.525), ("routing", 1.1), ("logic", 0.447), ("routing", 2.3),
                ("logic", 0.447), ("routing", 2.781), ("setup", 0.5)])  # 8.1 ns
MEM_OWN = _path("state.0.1_DP16KD_DOB0", "beta_s0[17]_TRELLIS_FF_Q",
                [("clk-to-q", 4.26), ("routing", 3.0), ("logic", 0.6), ("routing", 2.0),
                 ("setup", 0.5)])  # 10.36 ns
CROSS = _path("ctl[1]_TRELLIS_FF_Q", "wq[2]_DP16KD_DIA2",
              [("clk-to-q", 0.5), ("routing", 13.0), ("setup", 0.7)])  # 14.2 ns
ASYNC = _path("rst$TRELLIS_IO_IN", "acc[3]_TRELLIS_FF_Q", [("routing", 19.5), ("setup", 0.5)])

THREE_CLOCKS = _report(
    [("posedge clk", "posedge clk", CLK_OWN), ("posedge clk_io", "negedge clk_io", IO_OWN),
     ("posedge clk_mem", "posedge clk_mem", MEM_OWN), ("posedge clk", "posedge clk_mem", CROSS),
     ("<async>", "posedge clk", ASYNC)],
    {"clk": (142.3, 125), "clk_io": (61.73, 50), "clk_mem": (96.5, 100)})


def test_fmax_of_the_slowest_of_several_clocks():
    assert parse.report_fmax(THREE_CLOCKS) == (61.73, 50.0)


def test_critical_path_is_the_slowest_clocks_own_even_across_edges():
    cp = parse.critical_path(THREE_CLOCKS)
    assert (cp.start, cp.end) == ("shift[0]", "$pad_reg")
    assert (cp.start_cell, cp.end_cell) == ("shift[0]_TRELLIS_FF_Q",
                                            "\\$pad_reg$12[1]_TRELLIS_FF_Q")
    assert cp.delay_ns == 8.1 and cp.logic_levels == 2 and cp.routing_ns == 6.181


def test_critical_path_of_another_slowest_clock():
    """The same paths, clk_mem now the slowest: its own path, not the longer one across
    domains that ends on it, nor the asynchronous one."""
    r = {**THREE_CLOCKS, "fmax": {**THREE_CLOCKS["fmax"],
                                  "clk_io": {"achieved": 123.0, "constraint": 50}}}
    assert parse.report_fmax(r) == (96.5, 100.0)
    cp = parse.critical_path(r)
    assert (cp.start, cp.end, cp.delay_ns) == ("state.0.1", "beta_s0[17]", 10.36)
    assert (cp.logic_levels, cp.routing_ns) == (1, 5.0)


def test_a_slowest_clock_without_a_path_of_its_own_takes_the_longest_synchronous_one():
    """As on the iCE40, where the DSPs have a domain of their own that appears only across
    domains: the longest path that is not asynchronous."""
    r = _report([("posedge clk", "posedge clk", CLK_OWN),
                 ("posedge clk", "posedge clk_mem", CROSS), ("<async>", "posedge clk", ASYNC),
                 ("posedge clk", "<async>", ASYNC)],
                {"clk": (142.3, 125), "clk_mem": (70.4, 100)})
    cp = parse.critical_path(r)
    assert (cp.start, cp.end, cp.delay_ns, cp.logic_levels, cp.routing_ns) == \
        ("ctl[1]", "wq[2]", 14.2, 0, 13.0)


def test_utilisation_of_every_cell_type():
    assert parse.report_utilisation(THREE_CLOCKS) == {
        "ALU54B": (3, 78), "DP16KD": (7, 208), "MULT18X18D": (12, 156),
        "TRELLIS_COMB": (5316, 83640), "TRELLIS_FF": (4410, 83640), "TRELLIS_IO": (0, 365),
        "TRELLIS_RAMW": (100, 10455)}


def _row(device: str) -> dict:
    return {"target_mhz": DEVICES[device].freq_mhz, "fit_note": ""}


def test_ecp5_row_from_several_clocks_and_blocks():
    """The summary row: the LUT4s of the split before packing (not TRELLIS_COMB, which counts
    LUT pairs after packing), DSPs as multipliers plus ALUs, the slowest clock's figures."""
    row = _row("ecp5-85k")
    _fill_from_pnr(row, DEVICES["ecp5-85k"], THREE_CLOCKS, NEXTPNR_LOG, {})
    assert row == {"target_mhz": 125.0, "fit_note": "", "fmax_mhz": 61.73,
                   "crit_start": "shift[0]", "crit_end": "$pad_reg", "crit_delay_ns": 8.1,
                   "crit_logic_levels": 2, "lut4": 5120, "ff": 4410, "bram": 7, "dsp": 15,
                   "lutram_lut4": 600}
    # Without the split (a log cut short), the packed LUT count stands in.
    row = _row("ecp5-85k")
    _fill_from_pnr(row, DEVICES["ecp5-85k"], THREE_CLOCKS, "", {})
    assert (row["lut4"], row["lutram_lut4"]) == (5316, 0)


def test_ice40_row_from_the_hierarchy_totals():
    """The iCE40's LUTs and flip-flops come from Yosys's totals; its block RAMs, DSPs and logic
    cells from nextpnr's report; the wrapper's ``u.`` prefix is taken off the path's ends."""
    report = {
        "critical_paths": [
            {"from": "posedge clk$glb", "to": "posedge clk$glb",
             "path": _path("u.amem.0.1_RDATA_14_SB_DFFE_Q_1_D_SB_LUT4_O_LC",
                           "u.beta_s0_1[17]_SB_DFFESR_Q_D_SB_LUT4_O_LC",
                           [("clk-to-q", 0.8), ("routing", 3.2), ("logic", 0.9),
                            ("setup", 0.3)])},
            {"from": "posedge $PACKER_GND_NET_$glb_clk", "to": "posedge clk$glb",
             "path": _path("u.p_SB_MAC16_O_DSP", "u.q_SB_LUT4_O_LC", [("routing", 30.0)])}],
        "fmax": {"clk$glb": {"achieved": 24.5, "constraint": 25}},
        "utilization": {"ICESTORM_DSP": {"available": 8, "used": 2},
                        "ICESTORM_LC": {"available": 5280, "used": 131},
                        "ICESTORM_RAM": {"available": 30, "used": 1}}}
    row = _row("ice40-up5k")
    _fill_from_pnr(row, DEVICES["ice40-up5k"], report, "", parse.yosys_cells(HIERARCHY))
    assert row == {
        "target_mhz": 25.0, "fmax_mhz": 24.5, "crit_start": "amem.0.1", "crit_end": "beta_s0_1[17]",
        "crit_delay_ns": 5.2, "crit_logic_levels": 1, "lut4": 80, "ff": 24, "bram": 1, "dsp": 2,
        "lc": 131, "fit_note": "fits: 131 of 5280 logic cells, 1 of 30 block RAMs, 2 of 8 DSPs; "
                               "misses 25 MHz"}
    report["fmax"]["clk$glb"]["achieved"] = 25.0
    row = _row("ice40-up5k")
    _fill_from_pnr(row, DEVICES["ice40-up5k"], report, "", parse.yosys_cells(HIERARCHY))
    assert row["fit_note"].endswith("; meets 25 MHz")


def test_ecp5_row_packed_only():
    """``--pack-only``: a packer's report (no clock, no path) gives the resources and no
    Fmax; cells over the device are named, a count rather than a placement."""
    from fpga.flow import PACK_ONLY_NOTE

    packed = {"critical_paths": [], "fmax": {}, "utilization": THREE_CLOCKS["utilization"]}
    row = _row("ecp5-85k")
    _fill_from_pnr(row, DEVICES["ecp5-85k"], packed, NEXTPNR_LOG, {}, pack_only=True)
    assert row == {"target_mhz": 125.0, "fit_note": PACK_ONLY_NOTE, "fits": True,
                   "lut4": 5120, "ff": 4410, "bram": 7, "dsp": 15, "lutram_lut4": 600}
    over = {k: dict(v) for k, v in THREE_CLOCKS["utilization"].items()}
    over["MULT18X18D"]["used"] = 157
    over["TRELLIS_FF"]["used"] = 83641
    row = _row("ecp5-85k")
    _fill_from_pnr(row, DEVICES["ecp5-85k"], {**packed, "utilization": over}, NEXTPNR_LOG, {},
                   pack_only=True)
    assert row["fits"] is False
    assert row["fit_note"] == ("does not fit: 83641 of 83640 TRELLIS_FF, 157 of 156 "
                               "MULT18X18D (packed)")
    with pytest.raises(ValueError, match="no clock"):
        _fill_from_pnr(_row("ecp5-85k"), DEVICES["ecp5-85k"], packed, NEXTPNR_LOG, {})
