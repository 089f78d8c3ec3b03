"""XNOR-popcount projection unit: generator checks, Verilog emission and lint, and bit-exact
co-simulation against the golden model in Verilator (cocotb)."""

from dataclasses import replace

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cosim.projection import ProjectionCase, directed_case, random_projection, random_tokens, run_case
from model.golden.layer import project
from rtl.bram import BLOCK_RAM_MIN_DEPTH
from rtl.emit import emit, lint, write_if_changed
from rtl.xnor_projection import ProjectionConfig, XnorProjection, memory_images

# -- generator -------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, msg", [
    (dict(simd=0), r"simd must be an integer in \[1, 4096\], not 0"),
    (dict(simd=200), r"simd must be in \[1, d_in = 100\], not 200"),
    (dict(pe=11), r"pe must be in \[1, d_out = 10\], not 11"),
    (dict(act_bits=17), r"act_bits must be an integer in \[1, 16\], not 17"),
    (dict(act_bits=0), r"act_bits must be an integer in \[1, 16\], not 0"),
    (dict(out_bits=1), r"out_bits must be an integer in \[2, 48\], not 1"),
    (dict(tail_lanes=0), r"tail_lanes must be an integer in \[1, 4\], not 0"),
    (dict(tail_lanes=3), r"tail_lanes must divide pe = 4 \(one of \[1, 2, 4\]\), not 3"),
    # one fold of one plane: a row group lasts a cycle, the tail must take all its rows
    (dict(d_in=16, act_bits=1, tail_lanes=2),
     r"tail_lanes must be one of \[4\]: the tail takes pe / tail_lanes = 2 cycles per row "
     r"group, and a row group lasts folds \* act_bits = 1 cycles; not 2"),
])
def test_config_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        ProjectionConfig(**{"d_in": 100, "d_out": 10, "simd": 16, "pe": 4, **kw})


@pytest.mark.parametrize("d_in, d_out, simd, pe, bits, cpt, stages", [
    (100, 10, 16, 4, 4, 7 * 3 * 4, 2),       # padding on both sides
    (2560, 10576, 64, 16, 8, 40 * 661 * 8, 3),  # 2.7B in_proj
    (64, 8, 1, 8, 1, 64 * 1 * 1, 1),
])
def test_cycle_formula(d_in, d_out, simd, pe, bits, cpt, stages):
    c = ProjectionConfig(d_in=d_in, d_out=d_out, simd=simd, pe=pe, act_bits=bits)
    assert c.cycles_per_token == cpt
    # memory read, read words, operands, tree, plane weight, accumulate, acc + corr, t,
    # multiplier operands, chunk products, chunk products again, product sum, round, saturate
    # (the output register): one register each
    assert c.tree_stages == stages and c.pipeline_depth == 3 + stages + 10
    assert c.latency == c.folds + c.pipeline_depth


@pytest.mark.parametrize("simd, bits, lanes, stages", [
    (16, 8, 2, 2),   # 16 beta leaves, 16 popcount leaves
    (3, 8, 1, 2),    # 8 beta leaves (3 levels) against 3 popcount leaves (2 levels)
    (12, 8, 2, 2),   # 16 leaves, four of them padding
    (64, 1, 64, 3),  # bipolar: the whole fold in one slice
])
def test_beta_slices(simd, bits, lanes, stages):
    c = ProjectionConfig(d_in=64, d_out=8, simd=simd, pe=4, act_bits=bits)
    assert c.beta_lanes == lanes and c.tree_stages == stages
    assert c.pipeline_depth == 3 + stages + 10


def test_shared_tail_cycles():
    """tail_lanes rows a cycle: the held accumulators enter the tail over pe / tail_lanes
    cycles, each a cycle of latency; the token rate is unchanged."""
    full = ProjectionConfig(d_in=256, d_out=64, simd=16, pe=4)
    for lanes, extra in ((4, 0), (2, 2), (1, 4)):
        c = replace(full, tail_lanes=lanes)
        assert c.tail_slices == 4 // lanes and c.tail_rows == lanes
        assert c.pipeline_depth == full.pipeline_depth + extra
        assert c.cycles_per_token == full.cycles_per_token
        assert c.rows_layout.size == lanes * (c.corr_bits + c.mult_bits)
    default = ProjectionConfig(d_in=8, d_out=8, simd=8, pe=4, act_bits=4)
    assert default.tail_lanes is None and default.tail_rows == 4
    assert replace(default, pe=8).tail_slices == 1  # a copy with another pe: a tail per row


def test_memory_images_must_match_config():
    rng = np.random.default_rng(0)
    p = random_projection(100, 10, 4, rng)
    cfg = ProjectionConfig.from_projection(p, 16, 4)
    memory_images(cfg, p)
    with pytest.raises(ValueError, match="does not match the projection"):
        memory_images(replace(cfg, act_bits=8), p)


def test_wide_shift_does_not_break_the_generator():
    # beta_frac + mult_frac beyond the product width: the rounded value is 0 or -1.
    cfg = ProjectionConfig(d_in=16, d_out=4, simd=4, pe=4, act_bits=1, beta_frac=24,
                           mult_frac=40)
    emit(XnorProjection(cfg), "x")


def test_component_rejects_non_config():
    with pytest.raises(TypeError, match="config must be a ProjectionConfig"):
        XnorProjection({"d_in": 4})


# -- emission --------------------------------------------------------------------------------


class _Rom(wiring.Component):
    addr: In(2)
    data: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.submodules.rom = rom = Memory(shape=8, depth=4, init=[1, 2, 3, 4])
        m.submodules.ram = ram = Memory(shape=8, depth=4, init=[])
        rp, wp, rr = rom.read_port(), ram.write_port(), ram.read_port()
        m.d.comb += [rp.addr.eq(self.addr), rr.addr.eq(self.addr), wp.addr.eq(self.addr),
                     wp.data.eq(rp.data), wp.en.eq(1), self.data.eq(rr.data)]
        return m


def test_zero_ram_init_is_dropped_rom_contents_kept():
    v = emit(_Rom(), "rom")
    assert "8'h04" in v and "8'h03" in v  # the ROM's rows survive
    assert v.count("initial begin") == 1  # only the ROM's; the RAM's zeros are gone


def test_emit_writes_only_on_change(tmp_path):
    path = tmp_path / "rtl" / "x.v"
    assert write_if_changed(path, "a")
    mtime = path.stat().st_mtime_ns
    assert not write_if_changed(path, "a") and path.stat().st_mtime_ns == mtime
    assert write_if_changed(path, "b") and path.read_text() == "b"


@pytest.mark.parametrize("kw", [
    dict(d_in=100, d_out=10, simd=16, pe=4, act_bits=4),
    dict(d_in=64, d_out=8, simd=8, pe=8, act_bits=1),
    dict(d_in=100, d_out=12, simd=16, pe=4, act_bits=4, tail_lanes=2),  # two slices
    dict(d_in=100, d_out=12, simd=3, pe=4, act_bits=8, tail_lanes=1),   # four; simd < bits
])
def test_verilog_is_lint_clean(tmp_path, kw):
    # Any folder: the waivers are scoped to the file linted, not to a folder named rtl.
    path = tmp_path / "out" / "xnor_projection.v"
    write_if_changed(path, emit(XnorProjection(ProjectionConfig(**kw)), "xnor_projection"))
    lint(path)  # raises with Verilator's report on any warning


# -- co-simulation ---------------------------------------------------------------------------

CONFIGS = {
    # name: (d_in, d_out, simd, pe, act_bits, tree_levels_per_stage)
    "pad_b4": (100, 10, 16, 4, 4, 2),    # neither d_in nor d_out divides
    "bipolar": (64, 12, 8, 4, 1, 2),     # act_bits = 1
    "wide_b16": (48, 6, 48, 3, 16, 2),   # one fold, 16 bit-planes, SIMD not a power of two
    "b8": (96, 32, 32, 8, 8, 2),
    "tiny_bip": (5, 3, 2, 2, 1, 1),      # bipolar with padding, a register per tree level
    "one_beat": (24, 4, 24, 4, 1, 2),    # one fold, one row group, one plane: 1 cycle/token
    "serial": (6, 4, 1, 1, 3, 2),        # SIMD 1, PE 1
    "simd3_b8": (20, 6, 3, 2, 8, 2),     # beta_lanes * act_bits = 8 leaves, simd 3: the
                                         # beta tree is a stage longer than the popcount tree
    # name: (..., tail_lanes): the tail shared by the rows
    "tail1": (100, 10, 16, 2, 4, 2, 1),  # two slices, padding on both sides
    "tail_full": (24, 10, 24, 4, 4, 2, 1),  # four slices in a row group of four cycles
    "tail2": (64, 12, 8, 6, 2, 1, 2),    # three slices of two rows
    "tail_one_group": (16, 4, 16, 4, 2, 2, 2),  # one row group of two cycles, two slices
}


def _projection(name: str, rng: np.random.Generator, **kw):
    d_in, d_out, simd, pe, bits, lps, *tail = CONFIGS[name]
    p = random_projection(d_in, d_out, bits, rng, **kw)
    return ProjectionConfig.from_projection(p, simd, pe, tree_levels_per_stage=lps,
                                            tail_lanes=tail[0] if tail else None), p


def _check(result: dict, stalls: bool = False) -> None:
    print(result)
    assert result["mismatches"] == 0, result["first_mismatch"]
    if not stalls:
        assert result["cycles_measured"] == result["cycles_predicted"]


def _saturated(p, tokens) -> float:
    y = project(p, tokens)
    rail = (1 << (p.out_bits - 1)) - 1
    return float(np.mean((y >= rail) | (y <= -rail - 1)))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_tokens_back_to_back(name, seed):
    rng = np.random.default_rng(seed)
    cfg, p = _projection(name, rng)
    tokens = random_tokens(p, 6, rng)
    assert _saturated(p, tokens) < 0.25  # the outputs show the arithmetic, not the rails
    res = run_case(ProjectionCase(f"random_s{seed}", cfg, p, tokens, seed=seed))
    _check(res)
    # Back to back: one token every cycles_per_token, no idle cycle between them.
    assert res["token_spacing"] == [cfg.cycles_per_token] * 5


@pytest.mark.parametrize("name", list(CONFIGS))
def test_idle_and_backpressure(name, seed):
    rng = np.random.default_rng(seed + 10)
    cfg, p = _projection(name, rng)
    _check(run_case(ProjectionCase(f"stall_s{seed}", cfg, p, random_tokens(p, 4, rng),
                                   idle=0.3, backpressure=0.4, seed=seed)), stalls=True)


def _extremes(cfg):
    lo = -1 if cfg.act_bits == 1 else -(1 << (cfg.act_bits - 1))
    hi = 1 if cfg.act_bits == 1 else (1 << (cfg.act_bits - 1)) - 1
    single = np.full(cfg.d_in, -1 if cfg.act_bits == 1 else 0)
    single[cfg.d_in // 2] = 1
    return [np.full(cfg.d_in, hi), np.full(cfg.d_in, lo), single]


@pytest.mark.parametrize("name", ["pad_b4", "bipolar", "wide_b16"])
@pytest.mark.parametrize("fill", [1, -1])
def test_directed_corners(name, fill):
    """All weights +1 or -1, activations at their maximum, minimum and a single set bit (the
    first two drive every row to a rail)."""
    cfg, _ = _projection(name, np.random.default_rng(7))
    case = directed_case(f"all{fill:+d}", cfg, np.random.default_rng(7), fill,
                         np.stack(_extremes(cfg)))
    _check(run_case(case))


@pytest.mark.parametrize("name", ["pad_b4", "bipolar", "tail1"])
@pytest.mark.parametrize("when", ["load", "compute"])
def test_reset_in_the_middle_of_a_token(name, when):
    rng = np.random.default_rng(3)
    cfg, p = _projection(name, rng)
    _check(run_case(ProjectionCase(f"reset_{when}", cfg, p, random_tokens(p, 3, rng),
                                   reset_mid_token=when, seed=3)))


def test_waves_dump_fst():
    rng = np.random.default_rng(5)
    cfg, p = _projection("pad_b4", rng)
    case = ProjectionCase("waves", cfg, p, random_tokens(p, 1, rng), seed=5)
    from cosim.projection import _config_dir
    dump = _config_dir(cfg) / "waves" / "dump.fst"
    dump.unlink(missing_ok=True)
    res = run_case(case, waves=True)
    _check(res)
    assert res["fst"] == str(dump) and dump.stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["780M", "2.7B"])
def test_real_shapes(preset):
    from cosim.run import real_shape_cases
    for case in real_shape_cases(preset, 1, 64, 16):
        _check(run_case(case))


def test_ecp5_target():
    """The ECP5 build through the vendor cells' models (fpga/models): the weights, the
    activation buffer and beta in DP16KD blocks read into their output registers, the
    requantising products in MULT18X18D blocks. Bit-exact, the same cycles back to back, and
    under stalls."""
    rng = np.random.default_rng(31)
    p = random_projection(128, 8, 4, rng)
    cfg = ProjectionConfig.from_projection(p, 4, 2)
    # every memory but the row constants takes DP16KDs
    for depth in (cfg.row_groups * cfg.folds, 2 * cfg.folds, cfg.folds * cfg.act_bits):
        assert depth >= BLOCK_RAM_MIN_DEPTH
    v = emit(XnorProjection(cfg), "x", dsp="ecp5")
    for mem in ("wmem_0", "amem_0", "bmem_0"):
        assert f") {mem} (" in v
    res = run_case(ProjectionCase("ecp5", cfg, p, random_tokens(p, 4, rng), seed=31),
                   dsp="ecp5")
    _check(res)
    assert res["token_spacing"] == [cfg.cycles_per_token] * 3
    _check(run_case(ProjectionCase("ecp5_stall", cfg, p, random_tokens(p, 3, rng), idle=0.3,
                                   backpressure=0.4, seed=32), dsp="ecp5"), stalls=True)


def test_ecp5_target_shared_tail():
    """A tail of one row of four on the ECP5 cells: the row constants, 64 slices deep, in a
    DP16KD read two cycles ahead into its output register. Bit-exact, back to back and under
    stalls."""
    rng = np.random.default_rng(33)
    p = random_projection(32, 64, 4, rng)
    cfg = ProjectionConfig.from_projection(p, 16, 4, tail_lanes=1)
    assert cfg.row_groups * cfg.tail_slices >= BLOCK_RAM_MIN_DEPTH
    assert ") cmem_0 (" in emit(XnorProjection(cfg), "x", dsp="ecp5")
    res = run_case(ProjectionCase("ecp5_tail", cfg, p, random_tokens(p, 4, rng), seed=33),
                   dsp="ecp5")
    _check(res)
    assert res["token_spacing"] == [cfg.cycles_per_token] * 3
    _check(run_case(ProjectionCase("ecp5_tail_stall", cfg, p, random_tokens(p, 3, rng),
                                   idle=0.3, backpressure=0.4, seed=34), dsp="ecp5"),
           stalls=True)
