"""Estimator and report: cycle formulas against Verilator, the FP16 baseline, output formats,
bad input."""

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from cosim.projection import ProjectionCase, random_projection, random_tokens, run_case
from cosim.scan import ScanCase, random_scan_inputs, run_scan_case
from energy.estimator import Arch, arch_from_args, estimate, projection_burst_cycles, scan_burst_cycles
from model.golden.quantize import QuantSpec
from rtl.layer import LayerShape
from energy.report import main as report_main
from model.config import get_preset
from rtl.ssm_scan import ScanConfig
from rtl.xnor_projection import ProjectionConfig

from .conftest import make_layer

# The default memory's row of energy/references/dram.json, read here rather than through the
# estimator's loader; and an ideal memory (its peak sustained, no latency, no background) for
# the checks whose paces are counted by hand from the bandwidth.
DDR5 = next(r for r in json.loads((Path(__file__).parents[1] / "energy" / "references"
                                   / "dram.json").read_text())["technologies"]
            if r["name"] == "DDR5")
IDEAL = {"dram_efficiency": 1.0, "dram_latency_ns": 0.0, "dram_background_w": 0.0}
# The clock the by-hand counts below are made at (the default is the measured 45 nm clock,
# tests/test_asic_timing.py).
GHZ = {"clock_hz": 1e9}


@pytest.mark.parametrize("d_in, d_out, simd, pe, bits, tokens", [
    (100, 10, 16, 4, 4, 3), (96, 32, 32, 8, 8, 2)])
def test_projection_cycles_match_verilator(d_in, d_out, simd, pe, bits, tokens):
    rng = np.random.default_rng(0)
    p = random_projection(d_in, d_out, bits, rng)
    cfg = ProjectionConfig.from_projection(p, simd, pe)
    res = run_case(ProjectionCase("estimator", cfg, p, random_tokens(p, tokens, rng)))
    assert res["mismatches"] == 0
    assert res["cycles_measured"] == projection_burst_cycles(d_in, d_out, simd, pe, bits, tokens)


def test_scan_cycles_match_verilator():
    _, q = make_layer("tiny", 0)
    rng = np.random.default_rng(0)
    dt_raw, x, B, C = random_scan_inputs(q, 3, rng)
    res = run_scan_case(ScanCase("estimator", ScanConfig(q, 4), dt_raw, x, B, C,
                                 np.array([True, False, False])))
    assert res["mismatches"] == 0
    c = q.cfg
    assert res["cycles_measured"] == scan_burst_cycles(c.nheads, c.headdim, c.d_state, 4, 3)


def test_estimate_uses_the_layer_engine_and_costs_fp16_the_same_way():
    """The architecture's engine sized to 102.4 GB/s at 1 GHz: a 128-byte beat (the power of
    two at or above 102.4 B/cycle), 32 x 32 for 2.7B, a beat every 1.25 cycles, inside the
    whole-model engine with its state in memory; the cycles are that engine's formula at the
    paces of one shared memory (checked against Verilator in
    test_lm_engine.py and test_lm_engine_large.py). The memory is ideal here (its peak
    sustained, no latency), so that the paces are the bandwidth's, counted by hand."""
    cfg, arch = get_preset("2.7B"), Arch(**GHZ, **IDEAL)
    b, f = estimate(cfg, arch), estimate(cfg, arch, "fp16")
    lc, lmc = b.layer, b.lm
    assert (lc.beat_bytes, lc.pe, lc.simd, lc.planes, b.period) == (128, 32, 32, None, 1.25)
    assert lc.lanes == 128 and lc.shape == LayerShape.assumed(cfg, QuantSpec())
    assert (lmc.simd, lmc.pe, lmc.lanes, lmc.state, b.simulated) == (32, 32, 128, "memory", True)
    # A swap moves each layer's 5120 SSM words of 128 x 16 bits and 168 conv words of
    # 32 x 3 x 16 bits both ways at 102.4 B/cycle, the two channels ending together; each
    # pace is rounded up to a fraction of 16-bit terms, never faster than the memory.
    swap = Fraction(2 * (5120 * 256 + 168 * 192) * 10, 1024)
    assert swap / 5120 <= b.state_period < swap / 5120 + Fraction(1, 1000)
    assert swap / 168 <= b.conv_period < swap / 168 + Fraction(1, 100)
    assert (b.state_period.numerator < 2**16 and b.state_period.denominator < 2**16
            and b.conv_period.numerator < 2**16 and b.conv_period.denominator < 2**16)
    # Greedy decode: the token's handshake to the cycle after its last logit.
    assert b.cycles == lmc.schedule(Fraction(5, 4), 0, b.state_period, 0, b.conv_period,
                                    shared=True).last_logit + 1
    # The memory's busy time, counted here: every beat at 1.25 cycles (the embedding row, 64
    # layers, the final norm's gains, 32000 head rows of 20 beats) and 64 swaps; the engine
    # adds the pipeline's fill around each swap and the head (under 6 %).
    beats = 80 + L * stream_beats_27b_by_hand() + 80 + 32000 * 20
    busy = beats * Fraction(5, 4) + L * swap
    assert busy <= b.cycles <= 1.06 * busy
    assert b.bound == "memory" and b.tokens_per_s == pytest.approx(1e9 / b.cycles)
    # FP16: the same 32 x 32 array of MACs, memory-bound on 2-byte weights, same lanes.
    state = 2 * (H * P * N * 2 + 5376 * 3 * 2) * L  # SSM and conv state, out and back
    emb = 32000 * D * 2 + D * 2 + D * 2
    fp16_layer = (max(80 * 331, 2 * D * F / 102.4) + max(160 * 80, 2 * E * D / 102.4)
                  + H * P * N / 128 + (3 * D + 3 * E + 5376) / 32)
    assert f.cycles == math.ceil(L * fp16_layer + state / 102.4 + emb / 102.4)
    assert f.energy_j["dram_state"] == b.energy_j["dram_state"]
    assert b.energy_per_token_j < f.energy_per_token_j
    # Fewer planes a cycle: compute-bound, slower.
    b2 = estimate(cfg, Arch(**GHZ, planes=2))
    assert b2.bound == "compute" and b2.cycles > b.cycles


# 2.7B shapes: d_model, d_inner, d_in_proj, heads, headdim, d_state, layers.
D, E, F, H, P, N, L = 2560, 5120, 10576, 80, 64, 128, 64


def stream_beats_27b_by_hand() -> int:
    """Beats of one 2.7B layer token on the engine of 1 GHz (32 x 32 = 1024-bit beats),
    counted from the stream layout (docs/layer_engine.md, section 2)."""
    beat = 1024
    gains = D // 32 + E // 32  # 32 gains of 16 bits: one beat a record, both norms
    in_proj = D // 32 + -(-F // 32) * (D // 32 + 2)  # beta, then per row group folds + rc
    out_proj = E // 32 + D // 32 * (E // 32 + 2)  # rc: 32 x (corr 20/21 + mult 16) > 1024
    scan = -(-3 * H // (beat // 18))  # dt_bias, A, D at 18 bits (data_bits + 2, assumed)
    conv = 5376 // 32 * -(-32 * (4 * 16 + 32) // beat)  # 4 taps + a 32-bit bias a lane
    return gains + in_proj + out_proj + scan + conv


def dram_bytes_27b_by_hand() -> dict[str, float]:
    """DRAM bytes of one 2.7B decode step by design, counted here from the shapes.

    The 1-bit design streams the packer's beats (weights, FBI constants in the form the
    engine reads, norm gains, conv, scan constants); FP16 streams every parameter in FP16.
    """
    fp16_consts = (D + E  # block norm and gated-norm gains
                   + 5376 * 4 + 5376 + 3 * H) * 2  # conv weight and bias, dt_bias / A_log / D
    state = 2 * H * P * N * 2  # 16-bit SSM state read and written back
    conv_state = 2 * 5376 * 3 * 2  # K - 1 = 3 inputs per channel, 16 bits, read and written
    embedding = 32000 * D * 2 + D * 2 + D * 2  # LM head, one embedding row, final norm
    # The 1-bit engine's: one row of 2560 24-bit values, 80 records of 32 a beat; the final
    # norm's 2560 16-bit gains, 32 a beat; 32000 head rows of 2560 8-bit weights, 128 a beat.
    head = (80 + 80 + 32000 * 20) * 128
    return {
        "bimamba": L * (stream_beats_27b_by_hand() * 128 + state + conv_state) + head,
        "fp16": L * ((D * F + E * D) * 2 + fp16_consts + state + conv_state) + embedding,
    }


def dram_j(e) -> float:
    return e.energy_j["dram_weights"] + e.energy_j["dram_state"] + e.energy_j["dram_embedding"]


def test_dram_traffic_and_energy_pinned_by_hand():
    """2.7B decode: every DRAM byte and its energy, computed here from the shapes."""
    c = get_preset("2.7B")
    by_hand = dram_bytes_27b_by_hand()
    b = estimate(c, Arch(**GHZ))
    assert stream_beats_27b_by_hand() == 41091
    assert b.dram_bytes == pytest.approx(by_hand["bimamba"])
    pj_per_bit = 15.6  # DDR5: Horowitz's 1.3 nJ per 64-bit access over 1.3 (ISSCC 2019)
    assert dram_j(b) == pytest.approx(by_hand["bimamba"] * 8 * pj_per_bit * 1e-12)
    # The integer head: an 8 x 8-bit product (0.2 pJ) and a 27-bit add (logits up to
    # 2560 * 2**14: 0.03 + 19 * 0.07 / 24 pJ) a weight, beside the final norm's few
    # thousand operations.
    head = 32000 * D * (0.2 + 0.03 + 19 * 0.07 / 24) * 1e-12
    assert head <= b.energy_j["lm_head"] <= 1.001 * head
    # The XNOR array: d_in * d_out * act_bits one-bit adds at 0.03 pJ / 8, in_proj's rows
    # padded to 331 row groups of 32 (10592 rows).
    assert b.energy_j["proj_xnor_popcount"] == pytest.approx(
        L * (D * 10592 + E * D) * 8 * 0.03e-12 / 8)


def test_dram_pj_per_bit_override_pinned_by_hand(capsys):
    """The README's HBM case through the CLI, on the 2.7B engine of 1 GHz (32 x 32, 128 lanes)
    pinned so that its stream stays the one counted by hand: DRAM energy is bytes x 8 x 3.9 pJ
    and nothing on chip moves; at 819.2 GB/s the 128-byte-a-cycle array sets the pace."""
    by_hand = dram_bytes_27b_by_hand()
    array = ["--set", "clock_hz=1e9", "--set", "simd=32", "--set", "pe=32", "--set", "lanes=128"]
    assert report_main(["--preset", "2.7B", "--set", "dram_pj_per_bit=3.9", "--vocab", "32000",
                        "--set", "dram_bytes_per_s=819.2e9", "--format", "json", *array]) == 0
    r = json.loads(capsys.readouterr().out)["presets"]["2.7B"]
    pinned = Arch(**GHZ, simd=32, pe=32, lanes=128)
    base = {d: estimate(get_preset("2.7B"), pinned, d) for d in ("bimamba", "fp16")}
    for design, key in (("bimamba", "energy_breakdown_j"), ("fp16", "energy_breakdown_fp16_j")):
        got = r[key]
        assert sum(got[k] for k in ("dram_weights", "dram_state", "dram_embedding")) == \
            pytest.approx(by_hand[design] * 8 * 3.9e-12)
        for k, v in base[design].energy_j.items():  # on-chip energies do not depend on DRAM
            if not k.startswith("dram_") and k != "static":  # static follows the time per token
                assert got[k] == pytest.approx(v)
        tps = r["tokens_per_s" if design == "bimamba" else "tokens_per_s_fp16"]
        assert got["static"] == pytest.approx(0.204 / tps)  # the leakage record (test_leakage)
        assert got["dram_background"] == pytest.approx(DDR5["background_w"] / tps)
    assert r["dram_bytes_per_token"] == pytest.approx(by_hand["bimamba"])
    assert (r["bound"], r["bound_fp16"]) == ("compute", "memory")
    assert r["design_point"]["memory_cycles_per_beat"] == 1
    # Pinned: without the memory's background power the figure of an ideal memory (21.7 mJ);
    # the background (2.679 W over the token's 3.9 ms) adds 10.5 mJ.
    background = r["energy_breakdown_j"]["dram_background"]
    assert round((r["energy_per_token_j"] - background) * 1e3, 1) == 21.7
    assert round(background * 1e3, 1) == 10.5
    assert round(r["energy_per_token_j"] * 1e3, 1) == 32.2
    assert round(r["energy_per_token_fp16_j"] * 1e3, 1) == 199.9
    assert round(r["energy_saving"], 2) == 6.20


def test_state_on_chip_moves_state_traffic_off_dram():
    cfg = get_preset("780M")
    off, on = estimate(cfg, Arch()), estimate(cfg, Arch(state_on_chip=True))
    assert "dram_state" in off.energy_j and "dram_state" not in on.energy_j
    conv = 2 * cfg.conv_dim * (cfg.d_conv - 1) * 2 * cfg.n_layer  # conv state, 16 bits
    assert on.dram_bytes == pytest.approx(off.dram_bytes - 2 * cfg.state_size * cfg.n_layer * 2
                                          - conv)


def test_report_json_fields_and_paper_check(capsys):
    assert report_main(["--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["presets"]) == {"780M", "1.3B", "2.7B"}
    r = doc["presets"]["2.7B"]
    for key in ("weights_fp16_bytes", "weights_bimamba_bytes", "tokens_per_s",
                "energy_per_token_j", "energy_per_token_fp16_j"):
        assert r[key] > 0
    assert "5.04 GiB -> Bi-Mamba 0.55 GiB" in doc["paper_check"]


def test_report_md_csv_and_plots(capsys, tmp_path):
    assert report_main(["--preset", "780M"]) == 0
    md = capsys.readouterr().out
    assert "| 780M |" in md and "dram_weights" in md and "Paper check" in md
    assert report_main(["--preset", "780M", "--format", "csv", "--plot", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("preset,") and lines[1].startswith("780M,")
    assert {p.name for p in tmp_path.iterdir()} == {
        "energy_breakdown.png", "memory.png", "roofline.png", "sweep_act_bits.png"}


@pytest.mark.parametrize("argv, msg", [
    (["--preset", "3B"], "preset must be one of 780M, 1.3B, 2.7B, not '3B'"),
    (["--set", "clock_hz=-1"], "clock_hz must be a number of Hz in [1e+06, 1e+11], not -1.0"),
    (["--set", "lanes=3"],
     "lanes must divide d_state = 128 (one of [1, 2, 4, 8, 16, 32, 64, 128]), not 3"),
    (["--set", "simd=abc"], "simd must be an integer in [0, 4096] (0: sized to the memory), "
                            "not 'abc'"),
    (["--set", "act_bits=1.9"], "act_bits must be an integer in [1, 16], not 1.9"),
    (["--set", "clock_hz=nan"], "clock_hz must be a number of Hz in [1e+06, 1e+11], not nan"),
    (["--set", "state_on_chip=maybe"], "state_on_chip must be true or false"),
    (["--arch", "/nonexistent.json"], "--arch must name a readable JSON file"),
    (["--sweep", "--sweep-act", "a,b"], "--sweep-act takes activation widths"),
    (["--set", "frequency=1"], "architecture parameter must be one of clock_hz"),
])
def test_report_bad_input(argv, msg, capsys):
    with pytest.raises(SystemExit) as exc:
        report_main(argv)
    assert exc.value.code == 2
    assert msg in capsys.readouterr().err


def test_arch_from_file(tmp_path):
    p = tmp_path / "arch.json"
    p.write_text(json.dumps({"simd": 128, "state_on_chip": True}))
    a = arch_from_args(str(p), ["pe=8"])
    assert (a.simd, a.pe, a.state_on_chip) == (128, 8, True)


def test_report_sweep_joins_accuracy_and_energy(capsys):
    assert report_main(["--preset", "780M", "--sweep", "--sweep-act", "6,10",
                        "--sweep-steps", "8", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["sweep"]
    assert [r["act_bits"] for r in rows] == [6, 10]
    assert rows[1]["mixer_out_db"] > rows[0]["mixer_out_db"]
    assert rows[1]["energy_per_token_j"] > rows[0]["energy_per_token_j"]


def test_prefill_streams_weights_every_token_and_counts_actions():
    """The engine keeps no weights: a prefill streams them for every token, and amortises
    only the state traffic and the LM head."""
    cfg, arch = get_preset("780M"), Arch()
    dec, pre = estimate(cfg, arch), estimate(cfg, arch, tokens=256)
    assert pre.energy_j["dram_weights"] == pytest.approx(dec.energy_j["dram_weights"])
    assert pre.energy_j["dram_state"] == pytest.approx(dec.energy_j["dram_state"] / 256)
    assert pre.energy_j["lm_head"] == pytest.approx(dec.energy_j["lm_head"] / 256)
    assert pre.energy_j["proj_xnor_popcount"] == pytest.approx(dec.energy_j["proj_xnor_popcount"])
    assert pre.cycles < dec.cycles and pre.energy_per_token_j < dec.energy_per_token_j
    # 780M on the sized engine (32 rows of 64 columns at 522 MHz): in_proj's 6448 rows pad to
    # 202 groups of 32 rows.
    per_layer = (1536 * 202 * 32 + 3072 * 1536) * 8  # d_in * d_out * act_bits
    assert dec.actions["binary_bit_ops"] == per_layer * cfg.n_layer
    with pytest.raises(ValueError, match="tokens must be a positive integer, not 0"):
        estimate(cfg, arch, tokens=0)


def test_sram_sizes_are_checked_and_node_scaling(capsys):
    cfg = get_preset("2.7B")
    with pytest.raises(ValueError, match="state_sram_bytes must hold the state"):
        estimate(cfg, Arch(state_on_chip=True, state_sram_bytes=1024))
    base = estimate(cfg, Arch())
    # 7 nm has a table (TPUv4i): it prices the FP16 MACs of the FP16 design's LM head,
    # 0.34 + 0.16 pJ.
    s7 = estimate(cfg, Arch(node_nm=7), "fp16")
    assert s7.energy_j["lm_head"] == pytest.approx(32000 * D * (0.34 + 0.16) * 1e-12)
    s7 = estimate(cfg, Arch(node_nm=7))
    assert s7.energy_j["dram_weights"] == base.energy_j["dram_weights"]
    assert report_main(["--preset", "780M", "--set", "node_nm=7"]) == 0
    assert "tpuv4i_7nm (7 nm: the shipped table for this node" in capsys.readouterr().out
    # 16 nm has none: Horowitz scaled linearly by 16/45, and labelled so.
    s16 = estimate(cfg, Arch(node_nm=16))
    assert s16.energy_j["scan"] == pytest.approx(base.energy_j["scan"] * 16 / 45)
    assert s16.energy_j["dram_weights"] == base.energy_j["dram_weights"]
    assert report_main(["--preset", "780M", "--set", "node_nm=16"]) == 0
    assert "scaled linearly to 16 nm: logic and SRAM x 0.356 (no table at this node)" in \
        capsys.readouterr().out


def test_report_area_view(capsys):
    """--area: the design point's array and lanes through the fit of fpga/area.json, checked
    against the fit's own coefficients by hand, and the capacity of the ECP5-85F."""
    import json as _json

    from fpga.area import load_area

    assert report_main(["--preset", "2.7B", "--format", "json", "--area", "ecp5-85k"]) == 0
    doc = _json.loads(capsys.readouterr().out)
    a = doc["area"]["2.7B"]
    d = doc["presets"]["2.7B"]["design_point"]
    assert (a["simd"], a["pe"], a["lanes"]) == (d["simd"], d["pe"], d["lanes"])
    f = load_area()["layer_engine"]["fit"]["dsp"]
    dsp = (f["base"] + f["array_bit"] * d["simd"] * d["pe"] + f["column"] * d["simd"]
           + f["row"] * d["pe"] + f["lane"] * d["lanes"])
    assert a["total"]["dsp"] == math.ceil(dsp - 1e-6)
    assert a["capacity"] == {"lut4": 83640, "ff": 83640, "bram": 208, "dsp": 156}
    assert a["fits"] is (a["total"]["dsp"] <= 156 and a["total"]["lut4"] <= 83640)
    assert a["extrapolated"]  # 128 lanes: the fit saw at most 16
    assert report_main(["--preset", "2.7B", "--area", "ecp5-85k"]) == 0
    assert "| 2.7B | 32 x 64 | 128 |" in capsys.readouterr().out  # pe x simd at 522 MHz


@pytest.mark.parametrize("argv, msg", [
    (["--area", "ice40-up5k"], "--area must be a device with a fit in fpga/area.json"),
    (["--area", "ecp5-85k", "--format", "csv"], "--area needs --format md or json"),
])
def test_report_area_bad_input(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        report_main(argv)
    assert e.value.code == 2 and msg in capsys.readouterr().err


@pytest.mark.parametrize("bw", [25.6e9, 102.4e9, 333.3e9, 819.2e9])
def test_shared_memory_paces_never_exceed_the_bandwidth(bw):
    """The paces the estimator gives one memory: a weight beat at the memory's rate; within a
    swap, the SSM and conv channels' bytes (both ways) at most the memory's bytes a cycle, and
    within 0.1 % of it unless the port's word a cycle is the limit; every term 16 bits."""
    cfg = get_preset("780M")
    b = estimate(cfg, Arch(**GHZ, dram_bytes_per_s=bw))
    # What the memory sustains a cycle: the peak times the default memory's efficiency.
    lmc, bpc = b.lm, Fraction(repr(bw)) * Fraction(repr(DDR5["efficiency"])) / 10**9
    assert b.period >= Fraction(lmc.beat_bits, 8) / bpc or b.period == 1
    ssm = Fraction(2 * lmc.state_word_bits, 8) / b.state_period  # bytes a cycle, both ways
    conv = Fraction(2 * lmc.conv_word_bits, 8) / b.conv_period
    assert ssm + conv <= bpc
    if b.state_period > 1:
        assert ssm + conv >= bpc * Fraction(999, 1000)
    # Both channels end a swap together (to the rounding of their paces).
    assert abs(lmc.state_words * b.state_period - lmc.conv_words * b.conv_period) <= \
        lmc.conv_words * b.conv_period / 1000 + 1
    for p in (b.period, b.state_period, b.conv_period):
        assert p.numerator < 2**16 and p.denominator < 2**16
    lat = 44  # a row miss of 43.12 ns at 1 GHz, in whole cycles
    assert b.latency_cycles == lat
    assert b.simulated and b.cycles == lmc.schedule(b.period, lat, b.state_period, lat,
                                                    b.conv_period, shared=True).last_logit + 1


def test_state_on_chip_is_the_chip_engine_and_prefill_is_a_projection():
    """state_on_chip: the engine with a slot a layer, no swap, no state bytes; its cycles the
    formula's for that engine. A prefill is not a simulated machine."""
    cfg = get_preset("780M")
    on = estimate(cfg, Arch(**GHZ, state_on_chip=True))
    assert on.lm.state == "chip" and on.lm.state_bytes_per_token == 0
    assert on.cycles == on.lm.schedule(on.period, 44).last_logit + 1
    assert on.dram_bytes == on.lm.bytes_per_token
    off = estimate(cfg, Arch(**GHZ))
    assert off.dram_bytes == off.lm.bytes_per_token + off.lm.state_bytes_per_token
    assert off.cycles > on.cycles
    assert not estimate(cfg, Arch(), tokens=4).simulated
