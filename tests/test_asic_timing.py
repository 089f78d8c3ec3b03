"""The 45 nm clock (:mod:`energy.asic_timing`): the quoted cell and macro timing, the longest
path of a small netlist worked by hand, the refusals, and the clock the estimator takes."""

import json
import re

import pytest

from energy import asic_timing as at
from energy.estimator import Arch
from energy.leakage import LEAKAGE_TABLE
from energy.report import main as report_main

TABLE = at.load_timing_table()
CELLS = TABLE["cells"]["entries"]


def _line(cell):
    (c0, d0), (c1, d1) = CELLS[cell]["delay_ns_at_load_ff"]
    return lambda load: d0 + (d1 - d0) / (c1 - c0) * (load - c0)


def test_every_cell_figure_is_its_quote():
    """The two delay points are the worst of the quoted rows at their loads; clock-to-Q is
    DFF_X1's first point; setup is the worse quoted constraint; each macro's period is its
    quote."""
    for name, c in CELLS.items():
        vals = {}
        for q in c["quotes"]:
            idx = [float(v) for v in re.search(r'index_2 \("([^"]+)"\)', q).group(1).split(",")]
            row = [float(v) for v in re.search(r'row 3: \("([^"]+)"\)', q).group(1).split(",")]
            for li in (1, 3):
                vals.setdefault(idx[li], []).append(row[li])
        for load, delay in c["delay_ns_at_load_ff"]:
            assert delay == max(vals[load]), (name, load)
        assert c["input_cap_ff"] == max(v for k, v in c["input_pins"].items() if k != "CK")
    dff = CELLS["DFF_X1"]
    assert dff["clk_to_q_ns"] == dff["delay_ns_at_load_ff"][0][1]
    setups = [float(re.search(r'\("([^"]+)"\)$', q).group(1).split(",")[0])
              for q in dff["setup_quote"]]
    assert dff["setup_ns"] == max(setups)
    for m in TABLE["sram"]["macros"]:
        assert m["quote"].endswith(f'values("{m["minimum_period_ns"]:g}");') or \
            f'"{m["minimum_period_ns"]}"' in m["quote"]


def test_bad_tables_are_refused(tmp_path):
    d = json.loads(at.TIMING_TABLE.read_text())
    d["cells"]["entries"]["XOR2_X1"]["delay_ns_at_load_ff"] = [[3.0, 0.06], [1.0, 0.05]]
    p = tmp_path / "t.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="cell XOR2_X1 needs delay_ns_at_load_ff"):
        at.load_timing_table(p)
    d = json.loads(at.TIMING_TABLE.read_text())
    d["sram"]["macros"][0]["minimum_period_ns"] = 0
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"sram macro 256 x 8 needs a positive"):
        at.load_timing_table(p)


def _net(cells, ports):
    return {"modules": {"top": {"cells": cells, "ports": ports, "netnames": {}}}}


def _ff(t, d, q, extra=None):
    return {"type": t, "connections": {"D": [d], "Q": [q], "C": [99], **(extra or {})}}


def test_longest_path_by_hand():
    """Two registers, then XOR -> NAND -> MUX into a register with an enable and a sync reset;
    a short path beside it. Loads are the input capacitances each net drives."""
    cells = {
        "r1": _ff("$_DFF_P_", 100, 2),
        "r2": _ff("$_DFF_P_", 101, 3),
        "x": {"type": "$_XOR_", "connections": {"A": [2], "B": [3], "Y": [4]}},
        "n": {"type": "$_NAND_", "connections": {"A": [2], "B": [4], "Y": [5]}},
        "m": {"type": "$_MUX_", "connections": {"A": [5], "B": [3], "S": [4], "Y": [6]}},
        "r3": _ff("$_SDFFE_PP0P_", 6, 7, {"E": [2], "R": [3]}),
        "i": {"type": "$_NOT_", "connections": {"A": [3], "Y": [8]}},
        "r4": _ff("$_DFF_P_", 8, 9),
    }
    ports = {"clk": {"direction": "input", "bits": [99]}}
    got = at.longest_path(_net(cells, ports), "top", TABLE)
    cq, su = CELLS["DFF_X1"]["clk_to_q_ns"], CELLS["DFF_X1"]["setup_ns"]
    cap = {c: CELLS[c]["input_cap_ff"] for c in CELLS}
    # net 4 (XOR out) drives the NAND and the MUX's select; net 5 the MUX; net 6 the
    # enable MUX in front of r3's DFF (its D pin is a MUX2 input).
    t4 = cq + _line("XOR2_X1")(cap["NAND2_X1"] + cap["MUX2_X1"])
    t5 = t4 + _line("NAND2_X1")(cap["MUX2_X1"])
    t6 = max(t5, t4) + _line("MUX2_X1")(cap["MUX2_X1"])
    end = t6 + _line("MUX2_X1")(CELLS["DFF_X1"]["input_cap_ff"]) \
        + _line("AND2_X1")(CELLS["DFF_X1"]["input_cap_ff"]) + su
    assert got["delay_ns"] == round(end, 4)
    assert got["cells"] == ["XOR2_X1", "NAND2_X1", "MUX2_X1"] and got["gates"] == 3
    assert got["end"] == "r3" and got["start_is_register"]
    assert got["gate_count"] == 4 and got["flip_flops"] == 4


def test_longest_path_refuses_other_cells_and_loops():
    cells = {"a": {"type": "$_AOI3_", "connections": {"A": [2], "B": [3], "C": [4], "Y": [5]}}}
    with pytest.raises(ValueError, match=r"cell a of type \$_AOI3_ is neither a gate"):
        at.longest_path(_net(cells, {}), "top", TABLE)
    loop = {"a": {"type": "$_NOT_", "connections": {"A": [3], "Y": [2]}},
            "b": {"type": "$_NOT_", "connections": {"A": [2], "Y": [3]}}}
    with pytest.raises(ValueError, match="2 gates on a combinational loop"):
        at.longest_path(_net(loop, {}), "top", TABLE)
    with pytest.raises(ValueError, match="not a flip-flop type"):
        at.ff_cost("$_AND_")


def test_clock_is_the_slower_bound():
    rec = json.loads(at.RECORD.read_text())
    clk = at.asic_clock()
    fastest = min(m["minimum_period_ns"] for m in TABLE["sram"]["macros"])
    period = max(rec["path"]["delay_ns"], fastest)
    assert clk["period_ns"] == period and clk["clock_hz"] == 1e9 / period
    assert clk["set_by"] == ("sram" if fastest >= rec["path"]["delay_ns"] else "logic")
    assert rec["engine"] == at.TIMED and rec["command"] == "python -m energy.asic_timing"


def test_the_macro_is_the_least_leaky_one_fast_enough():
    """Of the macros whose minimum period (typed here from the quotes) is within the clock's
    period, the one of least leakage a bit (energy/references/leakage_45nm.json)."""
    period = {(256, 8): 1.055, (256, 32): 2.109, (512, 32): 2.188, (1024, 32): 2.188,
              (2048, 32): 2.344, (1024, 64): 3.594, (1024, 128): 5.938}
    assert {(m["words"], m["bits"]): m["minimum_period_ns"]
            for m in TABLE["sram"]["macros"]} == period
    leak = {(m["words"], m["bits"]): m["value"] * 1e6 / (m["words"] * m["bits"])
            for m in json.loads(LEAKAGE_TABLE.read_text())["sram"]["macros"]}
    clk = at.asic_clock()
    fast = [k for k, v in period.items() if v <= clk["period_ns"]]
    want = min(fast, key=lambda k: leak[k])
    assert (clk["macro"]["words"], clk["macro"]["bits"]) == want
    assert clk["macro"]["nw_per_bit"] == leak[want]


def test_a_slower_logic_allows_larger_macros(tmp_path):
    """With a 3 ns logic path the 256 x 8 and the 32-bit macros up to 2048 words are fast
    enough, and the least leaky of them a bit is taken (leakage typed from the quotes)."""
    rec = json.loads(at.RECORD.read_text())
    rec["path"]["delay_ns"] = 3.0
    p = tmp_path / "r.json"
    p.write_text(json.dumps(rec))
    clk = at.asic_clock(p)
    assert clk["period_ns"] == 3.0 and clk["set_by"] == "logic"
    leak = {(m["words"], m["bits"]): m["value"] * 1e6 / (m["words"] * m["bits"])
            for m in json.loads(LEAKAGE_TABLE.read_text())["sram"]["macros"]}
    fast = [(256, 8), (256, 32), (512, 32), (1024, 32), (2048, 32)]
    assert clk["macro"]["nw_per_bit"] == min(leak[k] for k in fast)
    assert clk["macro"]["nw_per_bit"] < leak[(256, 8)]


def test_report_states_the_bound_beside_its_clock(capsys):
    """The ASIC report carries the bound (JSON) and says whether its clock is within it."""
    clk = at.asic_clock()
    assert report_main(["--preset", "2.7B", "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)["presets"]["2.7B"]
    assert r["clock_bound"] == json.loads(json.dumps(clk))
    assert report_main(["--preset", "2.7B"]) == 0
    out = capsys.readouterr().out
    assert (f"What the engine's own netlist allows (energy/asic_timing.py): "
            f"{clk['clock_hz'] / 1e6:,.1f} MHz, set by its logic" in out)
    assert "allows (energy/asic_timing.py): 522.6 MHz" in out  # 1 / 1.9136 ns
    assert out.rstrip().endswith("the report's clock, 522 MHz, is within it.")  # the default
    assert report_main(["--preset", "2.7B", "--set", "clock_hz=300e6"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("the report's clock, 300 MHz, is within it.")
    assert report_main(["--preset", "2.7B", "--set", "clock_hz=1e9"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("the report's clock, 1,000 MHz, is beyond "
                                                     "it.")


def test_record_path_is_register_to_register_through_gates():
    p = json.loads(at.RECORD.read_text())["path"]
    assert p["gates"] == len(p["cells"]) > 5
    assert all(c in CELLS for c in p["cells"])
    lo = sum(_line(c)(0.0) for c in p["cells"])
    assert p["delay_ns"] > lo  # loads only add delay


@pytest.mark.parametrize("fanout, first, middle", [(4, None, 0), (5, 2, 0), (16, 4, 0),
                                                   (17, 2, 1), (64, 4, 1), (65, 2, 2)])
def test_a_wide_net_is_driven_through_a_buffer_tree(fanout, first, middle):
    """Up to four pins the driver's line at the load; beyond, the driver drives the tree's
    first level (``first`` buffers), ``middle`` levels of BUF_X1 drive four buffers each, the
    last level four pins each (at the pins' mean capacitance)."""
    load = 1.5 * fanout
    got = at.drive_delay(TABLE, "NAND2_X1", load, fanout)
    if first is None:
        assert got == pytest.approx(_line("NAND2_X1")(load))
        return
    buf = CELLS["BUF_X1"]["input_cap_ff"]
    want = (_line("NAND2_X1")(first * buf) + middle * _line("BUF_X1")(4 * buf)
            + _line("BUF_X1")(4 * 1.5))
    assert got == pytest.approx(want)


def test_the_default_clock_is_the_bound_to_the_mhz_below():
    """The estimator's default clock is the record's bound, to the MHz below it: 1 / 1.9136 ns
    = 522.6 MHz, so 522 MHz (and the record times the default engine's 64 columns)."""
    from energy.estimator import CLOCK_HZ, estimate
    from model.config import PRESETS

    rec = json.loads(at.RECORD.read_text())
    ns = rec["path"]["delay_ns"]
    assert ns == 1.9136 and ns > max(m["minimum_period_ns"] for m in TABLE["sram"]["macros"]
                                     if (m["words"], m["bits"]) == (256, 8))
    assert CLOCK_HZ == Arch().clock_hz == int(1e3 / ns) * 1e6 == 522e6
    lc = estimate(PRESETS["2.7B"], Arch()).layer
    assert rec["engine"]["simd"] == lc.simd == 64


@pytest.mark.parametrize("hz, mhz", [(522.57e6, 522e6), (522e6, 522e6), (522e6 - 1e-7, 522e6),
                                     (521.9999e6, 521e6), (1e9, 1e9)])
def test_the_mhz_below(hz, mhz):
    assert at.mhz_below(hz) == mhz


def test_the_leakage_record_is_the_engine_at_the_default_clock():
    """bench/results/leakage/lm_2p7b_default.json is the netlist of the engine the estimator
    sizes at the default clock: 32 rows of 64 columns (32 x 32 at 1 GHz), its SRAM priced as the one
    macro that runs at 522 MHz, 256 x 8."""
    from energy.estimator import estimate
    from energy.leakage import RECORD, price
    from model.config import PRESETS

    rec = json.loads(RECORD.read_text())
    assert rec["engine"]["clock_hz"] == Arch().clock_hz == 522e6
    lc = estimate(PRESETS["2.7B"], Arch()).layer
    assert (rec["engine"]["simd"], rec["engine"]["pe"], rec["engine"]["lanes"]) == (
        lc.simd, lc.pe, lc.lanes) == (64, 32, 128)
    assert rec["engine"]["state"] == "memory"
    assert price(rec)["sram_macros"] == ["256 x 8"]
    assert estimate(PRESETS["2.7B"], Arch(clock_hz=1e9)).layer.simd == 32
