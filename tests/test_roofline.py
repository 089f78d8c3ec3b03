"""Roofline, DRAM floor, memory technologies, energy tables, static power and anchors: every
figure pinned to arithmetic done here from the shapes, not to the code under test."""

import json

import pytest

from energy.estimator import Arch, estimate
from energy.report import main as report_main
from energy.roofline import BYTE_KINDS, bytes_per_token
from energy.sources import load_anchors, load_memories
from energy.tables import load_table
from model.config import get_preset

# Shapes written out by hand: d_model, d_inner, d_in_proj, heads, headdim, d_state, conv_dim,
# layers; vocabulary 32000, d_conv 4.
SHAPES = {
    "780M": (1536, 3072, 6448, 48, 64, 128, 3328, 48),
    "2.7B": (2560, 5120, 10576, 80, 64, 128, 5376, 64),
}
V = 32000


def by_hand(preset: str, design: str) -> dict[str, int]:
    D, E, F, H, P, N, C, L = SHAPES[preset]
    binary = design == "bimamba"
    return {
        "projection_weights": L * (D * F + E * D) // 8 if binary else L * (D * F + E * D) * 2,
        "fp16_parameters": L * (D + E + C * 4 + C + 3 * H) * 2,
        "hardware_constants": L * ((D + E) * 2 + (F + D) * 4) if binary else 0,
        "ssm_state": L * 2 * H * P * N * 2,
        "conv_state": L * 2 * C * 3 * 2,
        # The 1-bit engine's head: 8-bit weights, a 24-bit embedding row, 16-bit gains.
        "embedding": V * D + D * 3 + D * 2 if binary else (V * D + 2 * D) * 2,
    }


@pytest.mark.parametrize("preset", list(SHAPES))
@pytest.mark.parametrize("design", ["bimamba", "fp16"])
def test_bytes_per_token_by_kind(preset, design):
    got = bytes_per_token(get_preset(preset), design)
    assert list(got) == list(BYTE_KINDS)
    assert got == by_hand(preset, design)


def test_2p7b_totals_written_out():
    """The 2.7B minimal bytes as plain numbers, so a change to either count shows here."""
    assert sum(by_hand("2.7B", "bimamba").values()) == 584_088_064
    assert sum(by_hand("2.7B", "fp16").values()) == 5_483_470_848
    on = bytes_per_token(get_preset("2.7B"), "bimamba", state_on_chip=True)
    assert on["ssm_state"] == on["conv_state"] == 0
    # 8-bit state and conv data halve both state kinds.
    narrow = bytes_per_token(get_preset("2.7B"), "bimamba", state_bits=8, data_bits=8)
    assert narrow["ssm_state"] == 64 * 2 * 80 * 64 * 128
    assert narrow["conv_state"] == 64 * 2 * 5376 * 3


def report_json(argv: list[str], capsys) -> dict:
    assert report_main(argv + ["--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_roofline_and_floor_fields(capsys):
    doc = report_json(["--vocab", "32000"], capsys)  # the presets' own head, counted by hand
    for preset, r in doc["presets"].items():
        b = sum(by_hand(preset, "bimamba").values()) if preset in SHAPES else None
        for key in ("roofline_tokens_per_s", "roofline_fraction", "energy_floor_j",
                    "speedup_equal_bandwidth", "baselines"):
            assert key in r
        if b is None:
            continue
        f = sum(by_hand(preset, "fp16").values())
        assert r["roofline_tokens_per_s"] == pytest.approx(102.4e9 / b)
        assert r["roofline_tokens_per_s_fp16"] == pytest.approx(102.4e9 / f)
        assert r["speedup_equal_bandwidth"] == pytest.approx(f / b)
        assert r["roofline_fraction"] == pytest.approx(r["tokens_per_s"] * b / 102.4e9)
        # DDR5: 15.6 pJ/bit (Horowitz's 1.3 nJ per 64-bit access over 1.3, ISSCC 2019).
        assert r["energy_floor_j"] == pytest.approx(b * 8 * 15.6e-12)
        assert r["energy_floor_fp16_j"] == pytest.approx(f * 8 * 15.6e-12)
        assert r["estimate_over_floor"] > 1  # the floor leaves everything but DRAM out
    r = doc["presets"]["2.7B"]
    # The whole-model engine sized to the memory at the measured 522 MHz (32 rows of 64
    # columns), its state swapped through the same memory: 83 % of the roofline of the
    # memory's peak (92.4 % of the peak sustained, refresh), and 8.50x over FP16 at the design
    # point beside 9.39x at equal bandwidth (the bit-serial, weight-stationary design stood at
    # 25 % and 2.09x).
    assert round(r["roofline_tokens_per_s"], 1) == 175.3
    assert round(100 * r["roofline_fraction"]) == 83
    assert round(r["speedup_equal_bandwidth"], 2) == 9.39
    assert round(r["speedup"], 2) == 8.50
    assert round(r["energy_floor_j"] * 1e3, 2) == 72.89
    # The measured GPU record rides along with its preset.
    gpus = [g for g in r["baselines"] if g["device"] == "cuda"]
    assert gpus and all(g["preset"] == "2.7B" for g in gpus)
    assert all(g["tokens_per_s"] > 0 and g["j_per_token"] > 0 for g in gpus)
    # Each record against its own weights' bytes: FP16 records the FP16 model's.
    # (a record that counted its own bytes keeps them: within 0.1 % of the FP16 model's)
    fast = max((g for g in gpus if g["weights"] == "fp16"), key=lambda g: g["tokens_per_s"])
    assert fast["bytes_per_token"] == pytest.approx(5_483_470_848, rel=1e-3)
    assert fast["roofline_tokens_per_s"] == pytest.approx(4.8e12 / fast["bytes_per_token"])
    one_bit = [g for g in gpus if g["weights"] == "1-bit"]
    assert one_bit and all(g["roofline_tokens_per_s"] == pytest.approx(
        4.8e12 / g["bytes_per_token"]) and g["bytes_per_token"] < 5_483_470_848 / 8
        for g in one_bit)
    assert {a["system"] for a in doc["anchors"]} >= {"LightMamba", "TerEffic (HBM-assisted)",
                                                     "Slim-Llama", "BitNet b1.58 2B4T (bitnet.cpp)"}


def test_memory_selects_energy_and_bandwidth(capsys):
    r = report_json(["--preset", "2.7B", "--memory", "HBM2", "--vocab", "32000"],
                    capsys)["presets"]["2.7B"]
    b = sum(by_hand("2.7B", "bimamba").values())
    assert (r["memory"], r["dram_pj_per_bit"], r["dram_bytes_per_s"]) == ("HBM2", 3.97, 256e9)
    assert r["roofline_tokens_per_s"] == pytest.approx(256e9 / b)
    assert r["energy_floor_j"] == pytest.approx(b * 8 * 3.97e-12)
    dram = sum(v for k, v in r["energy_breakdown_j"].items() if k.startswith("dram_"))
    assert dram == pytest.approx(r["dram_bytes_per_token"] * 8 * 3.97e-12)
    # The engine's stream (padding and the constants' engine form included) is within 3 %
    # of the minimum (its 512-byte beats, 490 bytes a cycle at 522 MHz, pad more than
    # 128-byte ones).
    assert r["design_point"]["beat_bytes"] == 512
    assert b <= r["dram_bytes_per_token"] <= 1.03 * b


def test_memory_rows_are_sourced_or_marked():
    mems = load_memories()
    assert {"DDR4", "LPDDR4", "LPDDR5", "GDDR6", "HBM2", "HBM2e", "HBM3"} <= set(mems)
    for m in mems.values():
        assert m.status in ("sourced", "derived", "assumption") and m.checked
        if m.status == "assumption":
            assert m.energy_source.startswith("assumption")
    assert mems["HBM2"].pj_per_bit == 3.97 and "O'Connor" in mems["HBM2"].energy_source
    assert mems["HBM3"].bytes_per_s == 6.4e9 * 1024 / 8


def test_7nm_table_is_tpuv4i_with_scaled_entries_labelled():
    t = load_table("tpuv4i_7nm")
    assert t.node_nm == 7
    for action, pj in (("int8_add", 0.007), ("fp16_add", 0.16), ("fp16_mult", 0.34),
                       ("sram_read_64b_8KB", 7.5), ("sram_read_64b_32KB", 8.5),
                       ("sram_read_64b_1MB", 14.0)):
        assert t[action].joules == pytest.approx(pj * 1e-12)
        assert not t[action].scaled
    assert sorted(t.scaled_actions) == ["int32_add", "int8_mult"]
    assert t["int8_mult"].joules == pytest.approx(0.2e-12 * 7 / 45, rel=1e-4)
    assert load_table().scaled_actions == []


def test_static_power_is_its_own_component():
    cfg = get_preset("780M")
    e = estimate(cfg, Arch())
    assert e.energy_j["static"] == pytest.approx(0.204 / e.tokens_per_s)  # the leakage record
    f = estimate(cfg, Arch(static_fp16_w=2.0), "fp16")
    assert f.energy_j["static"] == pytest.approx(2.0 / f.tokens_per_s)
    assert "static" not in estimate(cfg, Arch(static_w=0.0)).energy_j


def test_anchors_are_marked_by_kind():
    by = {(a["system"], a["platform"]): a for a in load_anchors()}
    kinds = {a["kind"] for a in by.values()}
    assert {"FPGA", "measured silicon", "CPU"} <= kinds
    tereffic = next(a for a in by.values() if a["system"].startswith("TerEffic"))
    assert (tereffic["tokens_per_s"], tereffic["power_w"]) == (727.0, 46.0)
    assert tereffic["j_per_token"] == pytest.approx(46 / 727, abs=1e-4)
    light = sorted(a["tokens_per_s"] for a in by.values() if a["system"] == "LightMamba")
    assert light == [7.21, 93.0]


@pytest.mark.parametrize("entry, node, msg", [
    ({"value": 0, "unit": "pJ", "source": "x"}, 7,
     "t.json: a.value must be a positive number, not 0"),
    ({"value": 0.0, "unit": "nJ", "source": "x"}, 7,
     "t.json: a.value must be a positive number, not 0.0"),
    ({"value": 1, "unit": "pJ", "source": "x"}, 0,
     "t.json: node_nm must be a positive number, not 0"),
])
def test_an_energy_table_of_zero_is_refused(tmp_path, entry, node, msg):
    """An action that costs nothing, or a node of 0 nm, is a missing figure, not a figure."""
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"name": "t", "source": "s", "node_nm": node, "entries": {"a": entry}}))
    with pytest.raises(ValueError, match=msg):
        load_table(p)
