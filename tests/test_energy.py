"""Estimator and report: cycle formulas against Verilator, the FP16 baseline, output formats,
bad input."""

import json

import numpy as np
import pytest

from cosim.projection import ProjectionCase, random_projection, random_tokens, run_case
from cosim.scan import ScanCase, random_scan_inputs, run_scan_case
from energy.estimator import Arch, arch_from_args, estimate, projection_burst_cycles, scan_burst_cycles
from energy.report import main as report_main
from model.config import get_preset
from rtl.ssm_scan import ScanConfig
from rtl.xnor_projection import ProjectionConfig

from .conftest import make_layer


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


def test_estimate_uses_the_rtl_formulas_and_costs_fp16_the_same_way():
    cfg, arch = get_preset("2.7B"), Arch()
    b, f = estimate(cfg, arch), estimate(cfg, arch, "fp16")
    pin = ProjectionConfig(d_in=2560, d_out=10576, simd=64, pe=16)
    pout = ProjectionConfig(d_in=5120, d_out=2560, simd=64, pe=16)
    per_layer = (pin.cycles_per_token + pin.row_groups * pin.folds  # compute + weight load
                 + pout.cycles_per_token + pout.row_groups * pout.folds
                 + 80 * 64 * 128 // 16 + -(-(2 * 2560 + 5376 + 3 * 5120) // 64))
    assert b.cycles == 64 * per_layer + -(-32000 * 2560 // 256)
    assert f.energy_j["dram_state"] == b.energy_j["dram_state"]
    assert f.energy_j["dram_weights"] / b.energy_j["dram_weights"] == pytest.approx(16, rel=0.05)
    assert b.energy_per_token_j < f.energy_per_token_j
    b12 = estimate(cfg, Arch(act_bits=12))
    assert b12.cycles > b.cycles


# 2.7B shapes: d_model, d_inner, d_in_proj, heads, headdim, d_state, layers.
D, E, F, H, P, N, L = 2560, 5120, 10576, 80, 64, 128, 64


def dram_bytes_27b_by_hand() -> dict[str, float]:
    """DRAM bytes of one 2.7B decode step by design, counted here from the shapes.

    FBI's alpha is folded into the norm gains and its beta fetched once, as beta / alpha per
    column beside the per-row constants: the checkpoint's wscale / wbias are not fetched too.
    """
    fp16_consts = (D + E  # block norm and gated-norm gains (alpha folded in)
                   + 5376 * 4 + 5376 + 3 * H) * 2  # conv weight and bias, dt_bias / A_log / D
    unit_consts = (D + E) * 2 + (F + D) * 4  # beta per column, multiplier + correction per row
    state = 2 * H * P * N * 2  # 16-bit SSM state read and written back
    conv_state = 2 * 5376 * 3 * 2  # K - 1 = 3 inputs per channel, 16 bits, read and written
    embedding = 32000 * D * 2 + D * 2 + D * 2  # LM head, one embedding row, final norm
    return {
        "bimamba": L * ((D * F + E * D) / 8 + fp16_consts + unit_consts + state + conv_state)
        + embedding,
        "fp16": L * ((D * F + E * D) * 2 + fp16_consts + state + conv_state) + embedding,
    }


def dram_j(e) -> float:
    return e.energy_j["dram_weights"] + e.energy_j["dram_state"] + e.energy_j["dram_embedding"]


def test_dram_traffic_and_energy_pinned_by_hand():
    """2.7B decode: every DRAM byte and its energy, computed here from the shapes."""
    c = get_preset("2.7B")
    by_hand = dram_bytes_27b_by_hand()
    b = estimate(c, Arch())
    assert b.dram_bytes == pytest.approx(by_hand["bimamba"])
    pj_per_bit = 1300 / 64  # Horowitz: 1.3 nJ per 64-bit DRAM access
    assert dram_j(b) == pytest.approx(by_hand["bimamba"] * 8 * pj_per_bit * 1e-12)
    assert b.energy_j["lm_head"] == pytest.approx(32000 * D * (1.1 + 0.4) * 1e-12)
    # The XNOR array: d_in * d_out * act_bits one-bit adds at 0.03 pJ / 8.
    assert b.energy_j["proj_xnor_popcount"] == pytest.approx(
        L * (D * F + E * D) * 8 * 0.03e-12 / 8)


def test_dram_pj_per_bit_override_pinned_by_hand(capsys):
    """The README's HBM case through the CLI: DRAM energy is bytes x 8 x 3.9 pJ, time per token
    the larger of compute and bytes / 819.2 GB/s; nothing else moves."""
    by_hand = dram_bytes_27b_by_hand()
    assert report_main(["--preset", "2.7B", "--set", "dram_pj_per_bit=3.9",
                        "--set", "dram_bytes_per_s=819.2e9", "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)["presets"]["2.7B"]
    base = {d: estimate(get_preset("2.7B"), Arch(), d) for d in ("bimamba", "fp16")}
    for design, key in (("bimamba", "energy_breakdown_j"), ("fp16", "energy_breakdown_fp16_j")):
        got = r[key]
        assert sum(got[k] for k in ("dram_weights", "dram_state", "dram_embedding")) == \
            pytest.approx(by_hand[design] * 8 * 3.9e-12)
        for k, v in base[design].energy_j.items():  # on-chip energies do not depend on DRAM
            if not k.startswith("dram_") and k != "static":  # static follows the time per token
                assert got[k] == pytest.approx(v)
        tps = r["tokens_per_s" if design == "bimamba" else "tokens_per_s_fp16"]
        assert got["static"] == pytest.approx(0.5 / tps)
    assert r["dram_bytes_per_token"] == pytest.approx(by_hand["bimamba"])
    # FP16 turns compute-bound: its cycles now outlast its DRAM time.
    assert by_hand["fp16"] / 819.2e9 < 1 / r["tokens_per_s_fp16"]
    assert r["bound_fp16"] == "compute"
    # 44.3 / 310.5 mJ, 7.0x (before static power and the conv state: 31.5 / 306.4, 9.7x):
    # the compute-bound 1-bit design pays 12.8 mJ of static energy a token at 39 tokens/s.
    assert round(r["energy_per_token_j"] * 1e3, 1) == 44.3
    assert round(r["energy_per_token_fp16_j"] * 1e3, 1) == 310.5
    assert round(r["energy_saving"], 1) == 7.0


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
    (["--set", "clock_hz=-1"], "clock_hz must be a positive number, not -1.0"),
    (["--set", "lanes=3"],
     "lanes must divide d_state = 128 (one of [1, 2, 4, 8, 16, 32, 64, 128]), not 3"),
    (["--set", "simd=abc"], "simd must be an integer in [1, 4096], not 'abc'"),
    (["--set", "act_bits=1.9"], "act_bits must be an integer in [1, 16], not 1.9"),
    (["--set", "clock_hz=nan"], "clock_hz must be a positive number, not nan"),
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


def test_prefill_amortises_weights_and_counts_actions():
    cfg, arch = get_preset("780M"), Arch()
    dec, pre = estimate(cfg, arch), estimate(cfg, arch, tokens=256)
    assert pre.energy_j["dram_weights"] == pytest.approx(dec.energy_j["dram_weights"] / 256)
    assert pre.energy_j["proj_xnor_popcount"] == pytest.approx(dec.energy_j["proj_xnor_popcount"])
    # Weight RAM: written once per prefill, read by every token.
    assert pre.actions["sram_weight_read_bytes"] == dec.actions["sram_weight_read_bytes"]
    assert pre.actions["sram_weight_write_bytes"] == pytest.approx(
        dec.actions["sram_weight_write_bytes"] / 256)
    assert pre.cycles < dec.cycles and pre.energy_per_token_j < dec.energy_per_token_j
    per_layer = (1536 * 6448 + 3072 * 1536) * 8  # d_in * d_out * act_bits, no padding here
    assert dec.actions["binary_bit_ops"] == per_layer * cfg.n_layer
    with pytest.raises(ValueError, match="tokens must be a positive integer, not 0"):
        estimate(cfg, arch, tokens=0)


def test_sram_sizes_are_checked_and_node_scaling(capsys):
    cfg = get_preset("2.7B")
    with pytest.raises(ValueError, match="weight_sram_bytes must be >= 3384320"):
        estimate(cfg, Arch(weight_sram_bytes=2**20))
    with pytest.raises(ValueError, match="state_sram_bytes must hold the state"):
        estimate(cfg, Arch(state_on_chip=True, state_sram_bytes=1024))
    base = estimate(cfg, Arch())
    # 7 nm has a table (TPUv4i): it prices the FP16 MACs of the LM head, 0.34 + 0.16 pJ.
    s7 = estimate(cfg, Arch(node_nm=7))
    assert s7.energy_j["lm_head"] == pytest.approx(32000 * D * (0.34 + 0.16) * 1e-12)
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
