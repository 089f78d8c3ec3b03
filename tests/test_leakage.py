"""The die's static power from the engine's netlist (energy/leakage.py): the cell table against
its quotes, the mapping of Yosys's cells, pricing by hand, a small design counted by Yosys, and
the record tied to the estimator's default engine and to what the docs say."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from energy.estimator import STATIC_W, Arch, estimate
from energy.leakage import (
    GATE_CELLS, LEAKAGE_TABLE, RECORD, fast_macros, ff_cells, group_of, load_leakage_table,
    price, sram_nw_per_bit,
)
from energy.netlist import yosys_counts
from model.config import PRESETS

ROOT = Path(__file__).resolve().parent.parent
TABLE = json.loads(LEAKAGE_TABLE.read_text())

# The NanGate figures as the Liberty text gives them (nW), typed here, not read from the table.
DFF, DFFR, INV, AND2, OR2, XOR2, MUX2 = (79.112308, 86.212780, 14.353185, 25.066064, 22.694975,
                                         36.163718, 35.928390)


def test_every_figure_is_its_quote():
    for name, e in TABLE["cells"]["entries"].items():
        (num,) = re.findall(r"cell_leakage_power : ([0-9.]+);", e["quote"])
        assert float(num) == e["value"], name
    for m in TABLE["sram"]["macros"]:
        (num,) = re.findall(r'value : ([0-9.]+);', m["quote"])
        assert float(num) == m["value"], m
    t = load_leakage_table()
    assert (t.cells["DFF_X1"], t.cells["DFFR_X1"], t.cells["INV_X1"], t.cells["MUX2_X1"]) == (
        DFF, DFFR, INV, MUX2)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["cells"]["entries"].pop("MUX2_X1"), "cells.entries has no MUX2_X1"),
    (lambda d: d["cells"]["entries"]["XOR2_X1"].update(value=-1.0),
     "cells.entries.XOR2_X1 must have a positive value and a quote"),
    (lambda d: d["cells"]["entries"]["INV_X1"].pop("quote"),
     "cells.entries.INV_X1 must have a positive value and a quote"),
    (lambda d: d["sram"].update(unit="uW"), "sram.unit must be 'mW', not 'uW'"),
    (lambda d: d["sram"]["macros"][0].pop("quote"), "every sram macro needs"),
    (lambda d: d["sram"].update(macros=[]), "sram.macros is empty"),
])
def test_a_bad_table_is_refused(tmp_path, edit, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_leakage_table(_edited(LEAKAGE_TABLE, edit, tmp_path))


def _edited(table: Path, edit, tmp_path: Path) -> Path:
    """A copy of the JSON ``table`` with ``edit`` applied, in ``tmp_path``."""
    d = json.loads(table.read_text())
    edit(d)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("ctype,cells", [
    ("$_DFF_P_", ("DFF_X1",)),
    ("$_DFF_PP0_", ("DFFR_X1",)),
    ("$_DFFE_PP_", ("DFF_X1", "MUX2_X1")),
    ("$_DFFE_PP0P_", ("DFFR_X1", "MUX2_X1")),
    ("$_SDFF_PP0_", ("DFF_X1", "AND2_X1")),
    ("$_SDFF_PP1_", ("DFF_X1", "OR2_X1")),
    ("$_SDFFE_PP0P_", ("DFF_X1", "MUX2_X1", "AND2_X1")),
    ("$_SDFFCE_PN1P_", ("DFF_X1", "MUX2_X1", "OR2_X1")),
])
def test_flip_flops_as_nangate_cells(ctype, cells):
    assert ff_cells(ctype) == cells


@pytest.mark.parametrize("ctype", ["$_DLATCH_P_", "$_DFFSR_PPP_", "$_ALDFF_PP_", "$_FOO_"])
def test_an_unknown_cell_is_refused(ctype):
    with pytest.raises(ValueError, match=re.escape(f"no NanGate cells for the Yosys cell "
                                                   f"{ctype!r}")):
        ff_cells(ctype)


def test_sram_a_bit_from_the_smallest_macro_that_holds_it():
    t = load_leakage_table()
    assert sram_nw_per_bit(t.macros, 2048) == pytest.approx(11168.618 / 2048, rel=1e-12)
    assert sram_nw_per_bit(t.macros, 2049) == pytest.approx(40298.101 / 8192, rel=1e-12)
    assert sram_nw_per_bit(t.macros, 40000) == pytest.approx(301841.15 / 65536, rel=1e-12)
    assert sram_nw_per_bit(t.macros, 10 << 20) == pytest.approx(560846.48 / 131072, rel=1e-12)


# Minimum periods (ns) of the OpenRAM macros, typed from energy/references/timing_45nm.json's
# quotes: 256 x 8 1.055; 256, 512, 1024, 2048 x 32 2.109, 2.188, 2.188, 2.344; 1024 x 64
# 3.594; 1024 x 128 5.938.
@pytest.mark.parametrize("mhz, shapes", [
    (100, ["256 x 8", "256 x 32", "512 x 32", "1024 x 32", "2048 x 32", "1024 x 64",
           "1024 x 128"]),
    (1e3 / 5.938, ["256 x 8", "256 x 32", "512 x 32", "1024 x 32", "2048 x 32", "1024 x 64",
                   "1024 x 128"]),
    (1e3 / 5.9, ["256 x 8", "256 x 32", "512 x 32", "1024 x 32", "2048 x 32", "1024 x 64"]),
    (1e3 / 2.2, ["256 x 8", "256 x 32", "512 x 32", "1024 x 32"]),
    (1e3 / 2.188, ["256 x 8", "256 x 32", "512 x 32", "1024 x 32"]),
    (1e3 / 2.15, ["256 x 8", "256 x 32"]),
    (500, ["256 x 8"]), (1e3 / 1.055, ["256 x 8"])])
def test_the_macros_fast_enough_for_the_clock(mhz, shapes):
    got = fast_macros(load_leakage_table(), mhz * 1e6)
    assert sorted(f"{w} x {b}" for *_, (w, b) in got) == sorted(shapes)


@pytest.mark.parametrize("mhz", [1e3 / 1.05, 947.9, 1000, 2000])
def test_a_clock_no_macro_reaches_is_refused(mhz):
    # 1 / 1.055 ns = 947.87 MHz: the message names the 0.1 MHz at or below it.
    with pytest.raises(ValueError, match=r"no SRAM macro runs at .*256 x 8, needs 1.055 ns; "
                                         r"clock_hz must be at most 947\.8 MHz"):
        fast_macros(load_leakage_table(), mhz * 1e6)
    fast_macros(load_leakage_table(), 947.8e6)  # what it names runs
    with pytest.raises(ValueError, match="no SRAM macro runs at"):
        price({"engine": {"clock_hz": mhz * 1e6}, "modules": []})


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["sram"]["macros"][0].update(minimum_period_ns=0),
     "sram macro 256 x 8 needs a positive minimum_period_ns, not 0"),
    (lambda d: d["sram"]["macros"].pop(), "sram macros 1024 x 128 have no minimum period"),
])
def test_a_bad_timing_table_is_refused(tmp_path, edit, message):
    from energy.leakage import TIMING_TABLE

    with pytest.raises(ValueError, match=re.escape(message)):
        fast_macros(load_leakage_table(), 1e8, _edited(TIMING_TABLE, edit, tmp_path))


@pytest.mark.parametrize("clock", [None, 0, -1e8, "5e8", True])
def test_a_record_without_its_clock_is_refused(clock):
    eng = {} if clock is None else {"clock_hz": clock}
    with pytest.raises(ValueError, match="needs its clock_hz"):
        price({"engine": eng, "modules": []})


@pytest.mark.parametrize("clock_hz", [1e8, 5e8])
def test_pricing_by_hand(clock_hz):
    rec = {"engine": {"clock_hz": clock_hz}, "modules": [
        {"name": "bimamba_lm", "instances": 1,
         "cells": {"$_AND_": 10, "$_DFF_P_": 4, "$_NOT_": 3, "$mem_v2": 2},
         "memories": [{"width": 8, "size": 256}, {"width": 1, "size": 4}]},
        {"name": "bimamba_lm.layer.scan", "instances": 2,
         "cells": {"$_SDFFE_PP0P_": 3, "$_XOR_": 5, "$_ORNOT_": 1},
         "memories": [{"width": 128, "size": 1024}]},
    ]}
    p = price(rec)
    nw = 1e-9
    ctl, scan = p["by_group"]["buffers and control"], p["by_group"]["scan"]
    assert ctl["logic"] == pytest.approx((10 * AND2 + 3 * INV) * nw, rel=1e-12)
    assert ctl["registers"] == pytest.approx(4 * DFF * nw, rel=1e-12)
    assert ctl["register_files"] == pytest.approx(4 * DFF * nw, rel=1e-12)
    assert ctl["sram"] == pytest.approx(0.011168618e-3, rel=1e-12)  # one 256 x 8 macro, in W
    assert scan["logic"] == pytest.approx(2 * (5 * XOR2 + OR2 + INV) * nw, rel=1e-12)
    assert scan["registers"] == pytest.approx(2 * 3 * (DFF + MUX2 + AND2) * nw, rel=1e-12)
    if clock_hz == 1e8:  # every macro runs at 100 MHz: two 1024 x 128
        assert scan["sram"] == pytest.approx(2 * 0.56084648e-3, rel=1e-12)
    else:  # at 500 MHz only the 256 x 8 (1.055 ns): 64 of them a RAM
        assert scan["sram"] == pytest.approx(2 * 64 * 0.011168618e-3, rel=1e-12)
    assert p["total_w"] == pytest.approx(sum(ctl.values()) + sum(scan.values()), rel=1e-12)
    assert p["by_group"]["projections"] == dict.fromkeys(ctl, 0.0)


def test_every_generic_gate_is_a_cell_of_the_table():
    t = load_leakage_table()
    for cells in GATE_CELLS.values():
        assert all(c in t.cells for c in cells)


SMALL = """
module top(input clk, input rst, input [7:0] a, input en, input we, input [7:0] wa,
           input [7:0] ra, input [3:0] ri, output [7:0] y0, output [7:0] y1,
           output reg [7:0] r, output reg [3:0] t);
  leaf u0(.clk(clk), .rst(rst), .a(a), .en(en), .y(y0));
  leaf u1(.clk(clk), .rst(rst), .a(~a), .en(en), .y(y1));
  reg [7:0] mem [0:255];
  always @(posedge clk) begin
    if (we) mem[wa] <= a;
    r <= mem[ra];
  end
  reg [3:0] rom [0:15];
  integer i;
  initial for (i = 0; i < 16; i = i + 1) rom[i] = (i * 7 + 3) % 16;
  always @(posedge clk) t <= rom[ri];
endmodule

module leaf(input clk, input rst, input [7:0] a, input en, output reg [7:0] y);
  always @(posedge clk)
    if (rst) y <= 8'd0;
    else if (en) y <= y ^ a;
endmodule
"""


@pytest.mark.parametrize("clock", ["1e9", "9.479e8"])
def test_netlist_refuses_a_clock_no_macro_reaches_before_counting(tmp_path, capsys, clock,
                                                                  monkeypatch):
    """No engine is emitted or counted, and no record written, for a clock whose SRAM no
    macro can price (the record would make the estimator's default static power unreadable)."""
    import energy.netlist
    from energy.netlist import main as netlist_main

    def count(*args):
        raise AssertionError("the engine was counted at a clock no SRAM macro reaches")

    monkeypatch.setattr(energy.netlist, "measure", count)
    rec = tmp_path / "r.json"
    with pytest.raises(SystemExit) as e:
        netlist_main(["--clock-hz", clock, "--record", str(rec), "--workdir", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --clock-hz: no SRAM macro runs at" in err and "947.8 MHz" in err
    assert not rec.exists() and not (tmp_path / "engine.v").exists()


def test_yosys_counts_a_small_design(tmp_path):
    v = tmp_path / "small.v"
    v.write_text(SMALL)
    mods = {m["name"]: m for m in yosys_counts(v, "top", tmp_path / "work")}
    assert set(mods) == {"top", "leaf"}
    leaf, top = mods["leaf"], mods["top"]
    assert (leaf["instances"], top["instances"]) == (2, 1)
    # 8 bits with an enable and a synchronous clear, each XORed with a
    assert leaf["cells"] == {"$_SDFFE_PP0P_": 8, "$_XOR_": 8}
    assert leaf["memories"] == []
    # the RAM stays whole (its read register folded into its port); the table became logic
    assert [(m["width"], m["size"], m["rd_ports"], m["wr_ports"]) for m in top["memories"]] == [
        (8, 256, 1, 1)]
    assert top["cells"].get("$mem_v2") == 1
    with pytest.raises(ValueError, match="top must be a module of"):
        yosys_counts(v, "nope", tmp_path / "work2")


# -- the record ------------------------------------------------------------------------------

REC = json.loads(RECORD.read_text())


def test_the_record_is_the_estimators_default_engine():
    e = REC["engine"]
    lc = estimate(PRESETS[e["preset"]], Arch()).layer
    assert e["preset"] == "2.7B" and e["state"] == "memory"
    assert (e["simd"], e["pe"], e["lanes"]) == (lc.simd, lc.pe, lc.lanes)
    names = [m["name"] for m in REC["modules"]]
    assert len(names) == len(set(names)) and "bimamba_lm" in names
    assert all(m["instances"] >= 1 for m in REC["modules"])
    for m in REC["modules"]:
        group_of(m["name"])  # every module is in a group


def test_the_scan_state_ram_holds_one_layer():
    """With the state port the scan's RAM holds the layer in flight: H * P * N values of
    state_bits (Mamba-2 2.7B: 80 heads of 64, d_state 128, 16 bits: 10.5 Mbit)."""
    (scan,) = [m for m in REC["modules"] if m["name"] == "bimamba_lm.layer.scan"]
    (state,) = [m for m in scan["memories"] if m["name"] == "state"]
    assert state["width"] * state["size"] == 80 * 64 * 128 * 16


def test_the_estimators_static_power_is_the_records():
    assert STATIC_W == round(price(REC)["total_w"], 3)
    assert Arch().static_w == Arch().static_fp16_w == STATIC_W


def test_the_docs_table_and_figures_are_the_records():
    """docs/estimator.md's table by unit, its counts and the README's figure, against the
    record priced here (a re-measured record must be copied into both)."""
    docs = (ROOT / "docs" / "estimator.md").read_text()
    section = docs[docs.index("## Static power"):docs.index("## Logic energy from switching")]
    p = price(REC)
    rows = {**p["by_group"], "total": p["by_part"]}
    for name, r in rows.items():
        cells = [f"{r[k] * 1e3:.1f}" for k in ("logic", "registers", "register_files", "sram")]
        line = f"| {name} | " + " | ".join(cells) + f" | {sum(r.values()) * 1e3:.1f} |"
        assert line in section, line
    gates = flops = 0
    for m in REC["modules"]:
        for ctype, n in m["cells"].items():
            if ctype in GATE_CELLS:
                gates += n * m["instances"]
            elif ctype != "$mem_v2":
                flops += n * m["instances"]
    assert f"{gates / 1e6:.2f} million generic gates and {flops:,} flip-flops" in section
    assert f"**{STATIC_W:.3f} W each" in section
    readme = (ROOT / "README.md").read_text()
    assert f"{STATIC_W:.3f} W of die static power per design" in readme
