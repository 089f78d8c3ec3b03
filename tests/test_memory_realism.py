"""The memory as it behaves, not as its peak: the share of the peak it sustains, the latency of
a row miss, the background power of its ranks, and the LM head at Mamba-2's 50,288 rows.

Expectations come from the data sheet figures quoted in ``energy/references/dram.json``
(recomputed here by hand), from the file read directly, and from a second estimate made with
an ideal memory of the sustained bandwidth."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

import energy.sources
from energy import report
from energy.estimator import Arch, dram_pj_per_bit, estimate
from energy.platforms import load_platforms
from energy.sources import load_memories
from model.config import get_preset

from .conftest import usage_error

ROOT = Path(__file__).resolve().parents[1]
ROWS = {r["name"]: r for r in json.loads((ROOT / "energy" / "references" / "dram.json")
                                         .read_text())["technologies"]}
IDEAL = {"dram_efficiency": 1.0, "dram_latency_ns": 0.0, "dram_background_w": 0.0}


def test_the_ddr5_and_ddr4_figures_follow_from_the_quoted_data_sheet_values():
    """Efficiency = 1 - tRFC/tREFI; latency = tRP + tRCD + CL; background = ranks x devices x
    (active standby + refresh's extra current over its share of time)."""
    d5, d4 = ROWS["DDR5"], ROWS["DDR4"]
    assert d5["efficiency"] == round(1 - 295 / 3900, 4) == 0.9244
    assert d5["latency_ns"] == pytest.approx(3 * 14.375, abs=0.005)
    per_device = 0.142 * 1.1 + (0.277 - 0.142) * 1.1 * 295 / 3900  # W
    assert d5["background_w"] == pytest.approx(2 * 8 * per_device, abs=5e-4)
    assert 2.6 < d5["background_w"] < 2.7
    assert d4["efficiency"] == round(1 - 350 / 7800, 4)
    assert d4["latency_ns"] == pytest.approx(3 * 14.16, abs=0.005)
    per_device = 0.043 * 1.2 + 0.003 * 2.5 + (0.250 - 0.043) * 1.2 * 350 / 7800
    assert d4["background_w"] == pytest.approx(4 * 8 * per_device, abs=5e-4)
    for r in ROWS.values():  # every figure says where it comes from
        for k in ("efficiency", "latency", "background"):
            assert r[f"{k}_status"] in ("sourced", "derived", "measured", "assumption")
            assert r[f"{k}_source"]


def test_the_default_architecture_is_the_ddr5_row():
    a = Arch()
    d5 = ROWS["DDR5"]
    assert (a.dram_bytes_per_s, a.dram_efficiency, a.dram_latency_ns, a.dram_background_w) == (
        d5["bytes_per_s"], d5["efficiency"], d5["latency_ns"], d5["background_w"])
    assert a.sustained_bytes_per_s == pytest.approx(102.4e9 * 0.9244)


@pytest.mark.parametrize("preset", ["780M", "2.7B"])
def test_an_efficient_memory_is_an_ideal_one_of_the_sustained_bandwidth(preset):
    """The estimate at 102.4 GB/s sustaining 92.44 % is the estimate of an ideal memory of
    94.66 GB/s: the same engine, paces, cycles and bytes; the roofline share is taken against
    the peak, so it falls by the efficiency."""
    cfg = get_preset(preset)
    lat = {"dram_latency_ns": 0.0, "dram_background_w": 0.0}
    real = estimate(cfg, Arch(**lat))
    ideal = estimate(cfg, Arch(dram_bytes_per_s=102.4e9 * 0.9244, dram_efficiency=1.0, **lat))
    assert (real.period, real.state_period, real.conv_period) == (
        ideal.period, ideal.state_period, ideal.conv_period)
    assert real.cycles == ideal.cycles and real.dram_bytes == ideal.dram_bytes
    assert real.tokens_per_s == pytest.approx(ideal.tokens_per_s)
    peak = estimate(cfg, Arch(dram_efficiency=1.0, **lat))
    assert real.period > peak.period and real.cycles > peak.cycles


def test_the_latency_is_exposed_once_a_token_and_in_whole_cycles():
    """Greedy decode: the token's row waits for the memory's latency; ceil(43.12 ns x 1 GHz)
    = 44 cycles, ceil(43.12 ns x 0.3 GHz) = 13. The 1-bit step grows by at least the latency
    and at most once per swap more; the FP16 step by the latency."""
    cfg = get_preset("780M")
    for clock, cycles in ((1e9, 44), (3e8, 13), (522e6, 23)):  # 22.51 at 522 MHz
        e = estimate(cfg, Arch(clock_hz=clock))
        assert e.latency_cycles == cycles
    for design in ("bimamba", "fp16"):
        no = estimate(cfg, Arch(clock_hz=1e9, dram_latency_ns=0.0), design)
        yes = estimate(cfg, Arch(clock_hz=1e9, dram_latency_ns=100.0), design)
        grow = yes.cycles - no.cycles
        if design == "fp16":
            assert grow == 100
        else:
            assert 100 <= grow <= 100 * (1 + cfg.n_layer)


def test_background_power_is_paid_for_the_whole_token_by_every_design():
    cfg = get_preset("2.7B")
    for design in ("bimamba", "fp16", "int8", "int4"):
        e = estimate(cfg, Arch(), design)
        assert e.energy_j["dram_background"] == pytest.approx(ROWS["DDR5"]["background_w"]
                                                              / e.tokens_per_s)
        assert "dram_background" not in estimate(cfg, Arch(dram_background_w=0.0),
                                                 design).energy_j
    # The background does not change time, only energy.
    a, b = estimate(cfg, Arch()), estimate(cfg, Arch(dram_background_w=0.0))
    assert a.cycles == b.cycles
    assert a.energy_per_token_j - b.energy_per_token_j == pytest.approx(
        a.energy_j["dram_background"])


@pytest.mark.parametrize("field, value, message", [
    ("dram_efficiency", 0.0, "dram_efficiency must be a number in [0.05, 1] of the peak "
                             "bandwidth, not 0.0"),
    ("dram_efficiency", 1.5, "dram_efficiency must be a number in [0.05, 1]"),
    ("dram_latency_ns", -1.0, "dram_latency_ns must be a number in [0, 10000] ns, not -1.0"),
    ("dram_background_w", float("nan"), "dram_background_w must be a number in [0, 1000] W"),
])
def test_out_of_range_memory_behaviour_is_refused(field, value, message):
    with pytest.raises(ValueError) as e:
        Arch(**{field: value})
    assert message in str(e.value)


def test_memory_sets_the_behaviour_and_refuses_a_clash(capsys):
    assert report.main(["--preset", "2.7B", "--memory", "HBM2", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    mb = doc["presets"]["2.7B"]["memory_behaviour"]
    h = ROWS["HBM2"]
    assert (mb["efficiency"], mb["latency_ns"], mb["background_w"]) == (
        h["efficiency"], h["latency_ns"], h["background_w"])
    assert mb["sustained_bytes_per_s"] == pytest.approx(256e9 * h["efficiency"])
    assert mb["latency_cycles"] == math.ceil(h["latency_ns"] * 0.522)  # at 522 MHz
    assert doc["arch"]["dram_efficiency"] == h["efficiency"]
    assert usage_error(capsys, report.main, ["--memory", "HBM2", "--set",
                                             "dram_latency_ns=10"]) == (
        "report.py: error: --memory sets dram_latency_ns; leave dram_latency_ns out of --set "
        "and --arch")


def test_a_dram_row_without_a_behaviour_source_is_refused(tmp_path, monkeypatch):
    doc = json.loads((ROOT / "energy" / "references" / "dram.json").read_text())
    row = next(r for r in doc["technologies"] if r["name"] == "HBM2")
    del row["latency_source"]
    (tmp_path / "dram.json").write_text(json.dumps(doc))
    monkeypatch.setattr(energy.sources, "REFERENCE_DIR", tmp_path)
    with pytest.raises(ValueError, match="dram.json: HBM2.latency_source is missing"):
        load_memories()
    row["latency_source"], row["efficiency"] = "x", 0.0
    (tmp_path / "dram.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"HBM2.efficiency must be a number in \[0.05, 1\]"):
        load_memories()


def test_platforms_take_their_memory_behaviour_from_its_technology_or_their_own_figures():
    ps = load_platforms()
    assert (ps["asic-45nm"].efficiency, ps["asic-45nm"].latency_ns,
            ps["asic-45nm"].background_w) == (ROWS["DDR5"]["efficiency"],
                                              ROWS["DDR5"]["latency_ns"],
                                              ROWS["DDR5"]["background_w"])
    assert ps["u55c"].efficiency == ROWS["HBM2"]["efficiency"]
    assert ps["asic-45nm"].sources["memory.background_status"] == "derived"
    # The ULX3S's SDR SDRAM: 8192 refreshes of 60 ns every 64 ms.
    assert ps["ulx3s"].efficiency == round(1 - 8192 * 60e-9 / 64e-3, 4)
    assert ps["ulx3s"].sources["memory.efficiency_status"] == "assumption"


def test_the_head_has_mamba2s_rows_by_default(capsys):
    """50,288 rows, not 32,000: the 1-bit design streams 18,288 more 8-bit rows of 2,560 a
    token (46.8 MB), the FP16 design 18,288 more FP16 rows (93.6 MB)."""
    assert report.main(["--preset", "2.7B", "--format", "json"]) == 0
    big = json.loads(capsys.readouterr().out)["presets"]["2.7B"]
    assert report.main(["--preset", "2.7B", "--format", "json", "--vocab", "32000"]) == 0
    small = json.loads(capsys.readouterr().out)["presets"]["2.7B"]
    assert (big["vocab_size"], small["vocab_size"]) == (50288, 32000)
    extra = 18288 * 2560
    assert big["dram_bytes_per_token"] - small["dram_bytes_per_token"] == pytest.approx(
        extra, rel=1e-3)  # the 1-bit head at 8 bits, in whole beats
    assert big["dram_bytes_per_token_fp16"] - small["dram_bytes_per_token_fp16"] == \
        pytest.approx(2 * extra)
    assert 2 * extra == pytest.approx(93.6e6, rel=1e-3)
    assert big["tokens_per_s"] < small["tokens_per_s"]
    assert usage_error(capsys, report.main, ["--vocab", "0"]) == (
        "report.py: error: --vocab must be an integer in [1, 1048576], not 0")


def test_the_estimate_at_another_vocabulary_is_the_presets_with_that_head():
    cfg = replace(get_preset("2.7B"), vocab_size=50288)
    assert report.preset_config("2.7B") == cfg
    assert report.preset_config("2.7B", 32000) == get_preset("2.7B")


def test_saving_vs_strongest_counts_int8_int4_and_the_measured_1bit_gpu(capsys):
    """The strongest baseline is the lowest energy per token of INT8, INT4 (estimates at equal
    bandwidth) and the GPU running the packed 1-bit weights (the best batch-1 record at the
    same head size, read here from bench/results)."""
    recs = [r for f in sorted((ROOT / "bench" / "results").glob("*.json"))
            for r in json.loads(f.read_text())["records"]
            if r["preset"] == "2.7B" and r.get("weights") == "1-bit" and r["batch"] == 1
            and r["shape"]["vocab_size"] == 50288]
    assert recs, "a measured 1-bit GPU record at 50,288 rows"
    gpu_j = min(r["j_per_token"] for r in recs)
    assert report.main(["--preset", "2.7B", "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)["presets"]["2.7B"]
    s, e = r["saving_vs_strongest"], r["energy_per_token_j"]
    cands = {"int8": r["precision_baselines"]["int8"]["energy_per_token_j"],
             "int4": r["precision_baselines"]["int4"]["energy_per_token_j"],
             "gpu-1-bit": gpu_j}
    best = min(cands, key=cands.get)
    assert s["baseline"] == best and s["saving"] == pytest.approx(cands[best] / e)
    assert s["candidates"]["gpu-1-bit"]["kind"] == "measured"
    assert not s["candidates"]["gpu-1-bit"]["equal_bandwidth"]
    assert {k: v["saving"] for k, v in s["candidates"].items()} == pytest.approx(
        {k: v / e for k, v in cands.items()})
    # With no record of the shape (32,000 rows has one; 780M has none) only the estimates.
    assert report.main(["--preset", "780M", "--format", "json"]) == 0
    s = json.loads(capsys.readouterr().out)["presets"]["780M"]["saving_vs_strongest"]
    assert set(s["candidates"]) == {"int8", "int4"}


def test_hbm_stream_runs_on_the_cpu_and_refuses_bad_input(capsys, tmp_path):
    from bench import hbm_stream

    out = tmp_path / "m.json"
    assert hbm_stream.main(["--device", "cpu", "--size", "1", "--repeats", "2",
                            "--out", str(out)]) == 0
    rec = json.loads(out.read_text())["records"][0]
    assert rec["schema"] == hbm_stream.SCHEMA and rec["kind"] == "measured"
    row = rec["rows"][0]
    assert row["size_bytes"] == 2**20
    assert row["read_bytes_per_s"] == pytest.approx(2**20 / row["read_s"])
    assert row["copy_bytes_per_s"] == pytest.approx(2 * 2**20 / row["copy_s"])
    capsys.readouterr()
    for argv, msg in ((["--device", "cpu", "--size", "0"], "argument --size: must be an "
                       "integer in [1, 65536], not 0"),
                      (["--device", "cpu", "--out", str(tmp_path)], "--out must name a file "
                       "in an existing folder")):
        assert msg in usage_error(capsys, hbm_stream.main, argv)


def test_a_platform_puts_its_memory_behaviour_into_the_estimate(capsys):
    """--platform u55c: the HBM2 row's efficiency, latency and (no) background reach the
    estimate the report prints, and the latency is counted at the platform's clock."""
    assert report.main(["--preset", "2.7B", "--platform", "u55c", "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)["presets"]["2.7B"]
    mb, h = r["memory_behaviour"], ROWS["HBM2"]
    assert (mb["efficiency"], mb["latency_ns"], mb["background_w"]) == (
        h["efficiency"], h["latency_ns"], 0.0)
    assert mb["sustained_bytes_per_s"] == pytest.approx(460e9 * h["efficiency"])
    clock = r["platform"]["clock_hz"]
    assert mb["latency_cycles"] == math.ceil(h["latency_ns"] * clock / 1e9 - 1e-9)
    assert r["platform"]["memory_efficiency"] == h["efficiency"]


def test_the_engine_is_sized_to_the_sustained_bandwidth():
    """The beat is the smallest power of two of bytes at or above what the memory sustains a
    cycle: 128 GB/s at 1 GHz is exactly 128 bytes a cycle when ideal (a 128-byte beat, not
    256), and 118.3 at the default 92.44 % (128 still); 140 GB/s sustains 129.4 (256)."""
    from energy.estimator import layer_config

    cfg, ghz = get_preset("2.7B"), 1e9
    assert layer_config(cfg, Arch(clock_hz=ghz, dram_bytes_per_s=128e9,
                                  dram_efficiency=1.0)).beat_bytes == 128
    assert layer_config(cfg, Arch(clock_hz=ghz, dram_bytes_per_s=128e9)).beat_bytes == 128
    assert layer_config(cfg, Arch(clock_hz=ghz, dram_bytes_per_s=140e9)).beat_bytes == 256
    assert layer_config(cfg, Arch(clock_hz=ghz, dram_bytes_per_s=140e9,
                                  dram_efficiency=0.9)).beat_bytes == 128
    # At the default 522 MHz the default memory sustains 102.4 GB/s x 0.9244 / 522 MHz =
    # 181.3 bytes a cycle: a 256-byte beat.
    assert layer_config(cfg, Arch()).beat_bytes == 256


def test_ddr5_energy_is_ddr4s_over_the_stated_gain_and_its_range_starts_at_the_core_burst():
    """DDR5's figure is DDR4's whole access (Horowitz: 1.3 nJ per 64 bits) over the 1.3 x
    energy efficiency DDR5's designers state (ISSCC 2019, 23.2); its range starts at the DRAM
    core's read burst, recomputed here from the currents its source quotes: (IDD4R 530 mA -
    IDD3N 142 mA) x 1.1 V over a BL16 burst at 4800 MT/s, per x8 device, over its 128 bits,
    and ends at DDR4's figure."""
    from energy.sources import REFERENCE_DIR

    rows = {r["name"]: r for r in json.loads((REFERENCE_DIR / "dram.json").read_text())[
        "technologies"]}
    low, high = rows["DDR5"]["pj_per_bit_range"]
    by_hand = (0.530 - 0.142) * 1.1 * (16 / 4.8e9) / 128 * 1e12
    assert low == round(by_hand, 1) == 11.1
    assert high == rows["DDR4"]["pj_per_bit"] == 20.3
    assert rows["DDR5"]["pj_per_bit"] == round(1300 / 64 / 1.3, 1) == 15.6
    assert rows["DDR5"]["status"] == "derived"
    assert "IDD4R 530 mA - IDD3N 142 mA" in rows["DDR5"]["energy_source"]
    assert "improved by over 30%" in rows["DDR5"]["energy_source"]
    # The estimator's default is DDR5's figure (the table's DDR3/4 figure only when set to 0).
    assert Arch().dram_pj_per_bit == 15.6
    assert dram_pj_per_bit(Arch(dram_pj_per_bit=0.0)) == pytest.approx(1300 / 64)
