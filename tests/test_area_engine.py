"""The whole-engine area model (``fpga/area.json``'s ``layer_engine``,
:func:`fpga.area.engine_estimate`): its RAM inventory against the memories of the elaborated
layer engine, its block RAM rule, the fit against the engines it was made on and the ones held
out of it, and the estimate at a model's own shape worked by hand.
"""

import json
import math
from pathlib import Path

import pytest
from amaranth.hdl import Fragment, Shape
from amaranth.hdl._mem import MemoryInstance

from fpga.area import ecp5_blocks, engine_estimate, fit_engine, layer_memories, ram_blocks
from fpga.units import LAYER_HELD_OUT, LAYER_SIZES, _layer_export
from model.config import get_preset
from rtl.layer import BiMambaLayer, LayerConfig

AREA = json.loads((Path(__file__).resolve().parent.parent / "fpga" / "area.json").read_text())
ENGINE = AREA.get("layer_engine", {})


def _elaborated(lc: LayerConfig) -> dict[str, tuple[int, int]]:
    """Every memory of the elaborated engine (generic target): name -> (depth, width)."""
    out = {}

    def walk(frag, path):
        if isinstance(frag, MemoryInstance):
            shape = frag._data.shape
            out[".".join(path)] = (frag._data.depth, Shape.cast(shape).width)
        for sub, name, *_ in frag.subfragments:
            walk(sub, path + (name,))

    walk(Fragment.get(BiMambaLayer(lc), None), ())
    return out


# The tables (nonlinear-function ROMs) are in the fit, not the inventory.
TABLE = ("_rom",)


@pytest.mark.parametrize("simd, pe, lanes, slots, port", [
    (16, 4, 4, 1, False), (8, 4, 2, 1, False), (32, 8, 16, 1, False), (16, 2, 8, 3, False),
    (16, 4, 4, 1, True)])
def test_inventory_is_the_elaborated_engines_rams(simd, pe, lanes, slots, port):
    """Name, depth and width of every RAM that is not a table, as the generators make them
    (one engine per layer, one serving three layers, and one with the state port)."""
    q = _layer_export()
    lc = LayerConfig(q, simd, pe, lanes, slots=slots, state_port=port)
    got = {k: v for k, v in _elaborated(lc).items() if not k.endswith(TABLE)}
    inv = {m["name"]: (m["depth"], m["width"])
           for m in layer_memories(q.cfg, q.spec, simd, pe, lanes, slots, port,
                                   dt_in_bits=q.fmt["dt_in"].bits)}
    assert inv == got


def test_inventory_at_the_27b_shape_by_hand():
    """The 2.7B layer at the 1 GHz point (32 x 32, 128 lanes, state through
    the port), sizes written out: d_model 2560, d_inner 5120, conv_dim 5376, 80 heads of 64,
    N 128; 24-bit residual, 16-bit data and state, 8-bit activations."""
    cfg, spec = get_preset("2.7B"), _layer_export().spec
    inv = {m["name"]: (m["depth"], m["width"], m["kind"])
           for m in layer_memories(cfg, spec, 32, 32, 128, state_port=True)}
    assert inv["scan.state"] == (80 * 64 * 128 // 128, 128 * 16, "state")
    assert inv["conv.state"] == (5376 // 32, 32 * 3 * 16, "state")
    assert inv["norm_in.buf"] == (80, 32 * 24, "buffer")
    assert inv["in_proj.amem"] == (80, 256, "buffer")
    assert inv["out_proj.amem"] == (160, 256, "buffer")
    assert inv["xfifo.storage"] == (167, 512, "buffer")
    assert inv["scan.state_save_fifo.storage"] == (7, 2048, "buffer")


@pytest.mark.parametrize("depth, width, blocks", [
    (63, 4096, 0),          # below 64 words: LUT RAM
    (64, 1, 1), (1024, 18, 1), (1024, 19, 2), (512, 36, 1), (513, 36, 2),
    (16384, 1, 1), (16385, 1, 2), (2048, 9, 1), (2048, 10, 2),
    (5120, 2048, 570),      # the 2.7B layer's SSM state: 10.5 Mbit in 512 x 36 blocks
    (160, 256, 8),          # out_proj's activation buffer: 512 x 36, 8 side by side
])
def test_ecp5_blocks(depth, width, blocks):
    assert ecp5_blocks(depth, width) == blocks


def test_state_blocks_as_registered_ram_builds_them():
    """rtl/bram.py's banks of 1024 x 18 DP16KDs, not Yosys's best ratio: the tiny engine's
    state at 4 lanes (512 x 64) is 4 blocks (the measured build's 24 = 20 tables + 4)."""
    assert ram_blocks({"name": "scan.state", "depth": 512, "width": 64}) == 4
    assert ram_blocks({"name": "scan.state", "depth": 128, "width": 256}) == 15
    assert ram_blocks({"name": "scan.state", "depth": 5120, "width": 2048}) == 5 * 114
    assert ram_blocks({"name": "conv.state", "depth": 512, "width": 64}) == 2


def test_fit_points_are_the_layer_sizes():
    got = sorted((p["simd"], p["pe"], p["lanes"]) for p in ENGINE["points"])
    assert got == sorted(LAYER_SIZES)
    held = sorted((p["simd"], p["pe"], p["lanes"]) for p in ENGINE["held_out"])
    assert held == sorted(LAYER_HELD_OUT)
    # one held-out engine inside the fitted sizes, one beyond them
    assert sorted(p["inside"] for p in ENGINE["held_out"]) == [False, True]


TERMS = {"array_bit": lambda s, p, l: s * p, "column": lambda s, p, l: s,
         "row": lambda s, p, l: p, "lane": lambda s, p, l: l}


def _line(k, simd, pe, lanes):
    f = ENGINE["fit"][k]
    return f["base"] + sum(f[t] * g(simd, pe, lanes) for t, g in TERMS.items() if t in f)


def _by_hand(simd, pe, lanes, cfg, state_on_chip=False):
    """The estimate from the file's coefficients and the RAM rules written out here: the
    SSM state in 1024 x 18 blocks as rtl/bram.py builds them, any other RAM of 64 words or more
    at its best ECP5 aspect ratio, shallower ones in LUTs."""
    spec = _layer_export().spec
    out = {k: round(_line(k, simd, pe, lanes)) for k in ("lut4", "ff")}
    out["dsp"] = math.ceil(_line("dsp", simd, pe, lanes) - 1e-6)
    tables = math.ceil(_line("table_bram", simd, pe, lanes) - 1e-6)
    shapes = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
    blocks = {"state": 0, "buffers": 0}
    slots = cfg.n_layer if state_on_chip else 1
    for m in layer_memories(cfg, spec, simd, pe, lanes, slots, not state_on_chip):
        d, w = m["depth"], m["width"]
        if d < 64:
            n = 0
        elif m["name"] == "scan.state":
            n = -(-d // 1024) * -(-w // 18)
        else:
            n = min(-(-d // a) * -(-w // b) for a, b in shapes)
        blocks["state" if m["kind"] == "state" else "buffers"] += n
    out["bram"] = tables + blocks["state"] + blocks["buffers"]
    return out, {"tables": tables, **blocks}


@pytest.mark.parametrize("k", ["lut4", "ff", "dsp", "bram"])
def test_estimate_within_ten_percent_of_every_engine(k):
    """Every fitted engine and both held-out ones (one inside the fitted sizes, one beyond
    them) within 10 % of the estimate, recomputed here by hand at the tiny shape."""
    tiny = get_preset("tiny")
    for p in ENGINE["points"] + [dict(h, **h["measured"]) for h in ENGINE["held_out"]]:
        est, _ = _by_hand(p["simd"], p["pe"], p["lanes"], tiny)
        assert abs(est[k] - p[k]) <= 0.10 * p[k], (p["build"], k, est[k], p[k])


def test_checks_are_stated_as_computed():
    tiny = get_preset("tiny")
    for p in ENGINE["checks"] + ENGINE["held_out"]:
        est, _ = _by_hand(p["simd"], p["pe"], p["lanes"], tiny)
        assert p["estimate"] == est
        assert p["rel_error"] == {k: round((est[k] - p["measured"][k]) / p["measured"][k], 3)
                                  for k in est}


def test_tables_are_four_a_lane_and_four_more():
    """Two SiLU tables (value, slope) in each of the conv's and the gate's pe lanes, the two
    norms' rsqrt tables and the scan's two exp2 tables: the block RAMs Yosys kept for tables."""
    for p in ENGINE["points"]:
        assert p["table_bram"] == 4 * p["pe"] + 4


def test_refit_reproduces_the_file():
    """fit_engine on the file's own measurements gives the file's coefficients and checks."""
    rows = []
    for p in ENGINE["points"] + [dict(h, **h["measured"]) for h in ENGINE["held_out"]]:
        tables = 4 * p["pe"] + 4
        rows.append({"unit": "layer", "device": AREA["device"], "fits": True,
                     "fit_note": "", "build": p["build"], "fmax_mhz": p.get("fmax_mhz"),
                     "lutram_lut4": p.get("lutram_lut4"),
                     "params": {"simd": p["simd"], "pe": p["pe"], "lanes": p["lanes"]},
                     "memories": [{"rom": True, "kind": "block RAM"}] * tables
                     + [{"rom": True, "kind": "logic"}],
                     **{k: p[k] for k in ("lut4", "ff", "dsp", "bram")}})
    got = fit_engine(rows, AREA["device"])
    assert got["fit"] == ENGINE["fit"]
    assert got["checks"] == ENGINE["checks"] and got["held_out"] == ENGINE["held_out"]
    with pytest.raises(ValueError, match=r"missing: layer \(simd, pe, lanes\) = \(8, 8, 8\)"):
        fit_engine([r for r in rows if r["build"] != "layer_s8_p8_l8"], AREA["device"])


def test_estimate_at_the_27b_shape_by_hand():
    """At 32 x 32, 128 lanes for the 2.7B shape, the state through the port: the fit's LUT4,
    FF and DSP, and block RAM for the tables, the 10.5 Mbit state of the layer being computed
    (5,120 words of 2,048 bits: 5 banks x 114 blocks) and the buffers at the 2.7B shape."""
    spec = _layer_export().spec
    cfg = get_preset("2.7B")
    got = engine_estimate(cfg, spec, 32, 32, 128)
    want, parts = _by_hand(32, 32, 128, cfg)
    assert {k: got[k] for k in want} == want and got["bram_parts"] == parts
    assert parts["state"] >= 5 * 114 and parts["tables"] == 4 * 32 + 4
    assert got["state_bits"] == 80 * 64 * 128 * 16
    assert got["extrapolated"]
    on_chip = engine_estimate(cfg, spec, 32, 32, 128, state_on_chip=True)
    want, parts = _by_hand(32, 32, 128, cfg, state_on_chip=True)
    assert on_chip["bram_parts"] == parts
    assert on_chip["state_bits"] == 64 * 80 * 64 * 128 * 16


def test_estimate_refuses_bad_input():
    spec = _layer_export().spec
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="simd must be a positive integer"):
            engine_estimate(get_preset("tiny"), spec, bad, 4, 4)
    with pytest.raises(ValueError, match="no whole-engine fit"):
        engine_estimate(get_preset("tiny"), spec, 16, 4, 4,
                        area={k: v for k, v in AREA.items() if k != "layer_engine"})


def test_extrapolation_is_any_term_outside_the_fitted_sizes():
    """Inside on every term: not extrapolated; beyond in one term only (lanes, then pe, then
    the columns), extrapolated; the measured ends count as inside."""
    spec, tiny = _layer_export().spec, get_preset("tiny")
    assert not engine_estimate(tiny, spec, 16, 4, 4)["extrapolated"]
    assert not engine_estimate(tiny, spec, 32, 8, 16)["extrapolated"]  # the largest measured
    assert engine_estimate(tiny, spec, 16, 4, 32)["extrapolated"]
    assert engine_estimate(tiny, spec, 16, 16, 4)["extrapolated"]
    assert engine_estimate(get_preset("780M"), spec, 64, 4, 4)["extrapolated"]


def test_rounding_of_a_fit_with_fractions():
    """LUT4 and FF to the nearest, DSPs and table blocks up, on a fit of fractional
    coefficients (the measured ones are whole numbers where it matters)."""
    toy = {"layer_engine": {
        "points": [{"array_bit": 1, "column": 1, "row": 1, "lane": 1},
                   {"array_bit": 4096, "column": 64, "row": 64, "lane": 64}],
        "fit": {**{k: {"base": 0.4, "array_bit": 0.0, "column": 0.0, "row": 0.0, "lane": 0.0}
                   for k in ("lut4", "ff", "dsp")},
                "table_bram": {"base": 0.25, "row": 1.0}}}}
    got = engine_estimate(get_preset("tiny"), _layer_export().spec, 16, 4, 4, area=toy)
    assert (got["lut4"], got["ff"], got["dsp"], got["bram_parts"]["tables"]) == (0, 0, 1, 5)
