"""Platforms as data (energy/platforms.json, energy/platforms.py, ``report.py --platform``):
the clock of an FPGA is the Fmax a whole-engine build measured, never a number typed in; the
file is checked as it is read; the engine on an FPGA is the largest that fits it; every preset
of the JSON report carries its platform; the ASIC point comes with its clock table.

Expectations are derived from the data files read here directly (json), not from the module
under test."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from energy import report
from energy.estimator import CLOCK_HZ, Arch, estimate
from energy.platforms import (
    ENGINES_PATH, PLATFORMS_PATH, engine_area, load_engines, load_platforms, platform_arch,
    platform_view,
)
from energy.sources import load_memories
from fpga.area import load_area
from model.config import get_preset
from model.golden.quantize import QuantSpec

from .conftest import usage_error

PLATFORMS = json.loads(PLATFORMS_PATH.read_text())["platforms"]
ENGINES = {(r["build"], r["device"]): r for r in json.loads(ENGINES_PATH.read_text())["rows"]}
AREA = load_area()
ROOT = Path(__file__).resolve().parents[1]


def _entry(name: str) -> dict:
    return next(p for p in PLATFORMS if p["name"] == name)


def test_shipped_platforms_cover_an_ecp5_board_an_hbm_card_and_an_asic():
    ps = load_platforms()
    assert {"ulx3s", "u55c", "asic-45nm"} <= set(ps)
    assert ps["ulx3s"].fpga_device == "ecp5-85k" and ps["ulx3s"].kind == "fpga"
    assert ps["u55c"].bytes_per_s == 460e9 and ps["u55c"].resources["dsp"] == 9024
    assert ps["asic-45nm"].kind == "asic" and ps["asic-45nm"].clock_source == "measured"
    # The ASIC's clock: the timing record's, to the MHz below (1 / 1.9136 ns = 522.6 MHz),
    # the estimator's default.
    rec = json.loads((ROOT / "bench/results/timing/asic_45nm.json").read_text())
    assert rec["path"]["delay_ns"] == 1.9136
    assert ps["asic-45nm"].clock_hz == CLOCK_HZ == Arch().clock_hz == 522e6
    assert ps["asic-45nm"].pj_per_bit == load_memories()["DDR5"].pj_per_bit == 15.6


def _clock_row(name: str) -> dict:
    e = _entry(name)
    return ENGINES[e["clock"]["build"], e["clock"].get("device", e["fpga_device"])]


def test_fpga_clocks_are_the_measured_fmax_of_their_build():
    for p in load_platforms().values():
        if p.kind != "fpga":
            continue
        row = _clock_row(p.name)
        assert p.clock_source == "measured"
        assert p.clock_hz == pytest.approx(row["fmax_mhz"] * 1e6, rel=0, abs=1e-3)
        assert p.clock_build["device"] == row["device"]


def test_a_seed_sweeps_row_is_its_fastest_seed(tmp_path):
    rows = json.loads(ENGINES_PATH.read_text())["rows"]
    path = tmp_path / "engines.json"
    sweep = [{"seed": 1, "fmax_mhz": 121.18}, {"seed": 2, "fmax_mhz": 128.7},
             {"seed": 3, "fmax_mhz": 115.22}]

    def load(**kw):
        path.write_text(json.dumps({"rows": [dict(rows[0], **kw)]}))
        return load_engines(path)

    assert load(seed=2, seeds=sweep, fmax_mhz=128.7)
    for kw in [dict(seed=1, fmax_mhz=121.2), dict(seed=2, fmax_mhz=121.2),
               dict(seed=4, fmax_mhz=128.7), dict(fmax_mhz=128.7)]:
        with pytest.raises(ValueError, match="a seed sweep's row must name"):
            load(seeds=sweep, **kw)
    with pytest.raises(ValueError, match="a seed sweep's row must name"):
        load(seed=2, seeds=sweep[1:2], fmax_mhz=128.7)
    # every engine row of the file that lists a sweep keeps its fastest seed
    for r in load_engines().values():
        if "seeds" in r:
            assert r["fmax_mhz"] == round(max(e["fmax_mhz"] for e in r["seeds"]), 1)


def test_an_engine_row_given_twice_for_one_device_is_refused(tmp_path):
    rows = json.loads(ENGINES_PATH.read_text())["rows"]
    path = tmp_path / "engines.json"
    path.write_text(json.dumps({"rows": [*rows, rows[0]]}))
    with pytest.raises(ValueError, match=f"row {len(rows)}: build '{rows[0]['build']}' on "
                                         f"'{rows[0]['device']}' is given twice"):
        load_engines(path)
    # the same build on another device is another row
    path.write_text(json.dumps({"rows": [*rows, dict(rows[0], device="ice40-up5k")]}))
    assert len(load_engines(path)) == len(rows) + 1


def test_each_ecp5_board_takes_the_clock_of_its_own_speed_grade():
    """The ULX3S carries the LFE5U-85F in grade 6, the OrangeCrab 85F in grade 8: each
    platform's clock is the layer engine placed at its board's grade, not the other's."""
    ps = load_platforms()
    six = ENGINES["layer_tiny_s16_p4_l4", "ecp5-85k"]
    eight = ENGINES["layer_tiny_s16_p4_l4", "ecp5-85k-8"]
    assert "speed 6" in six["part"] and "speed 8" in eight["part"]
    assert ps["ulx3s"].clock_hz == six["fmax_mhz"] * 1e6
    assert ps["orangecrab-85f"].clock_hz == eight["fmax_mhz"] * 1e6
    assert ps["orangecrab-85f"].fpga_device == "ecp5-85k-8"
    assert ps["orangecrab-85f"].resources == ps["ulx3s"].resources  # one die
    # 16-bit DDR3L at twice the LiteX target's 48 MHz controller clock, two transfers a clock
    assert ps["orangecrab-85f"].bytes_per_s == 2 * 2 * 2 * 48e6
    assert ps["orangecrab-85f"].capacity_bytes == 512 * 2**20


def test_every_figure_has_a_source():
    for e in PLATFORMS:
        for k in ("static_source", "static_status"):
            assert e[k], (e["name"], k)
        for k in ("bytes_per_s_source", "pj_per_bit_source", "capacity_source"):
            assert e["memory"][k], (e["name"], k)
        assert e["resources_source"]


def _write(tmp_path: Path, entries: list[dict]) -> Path:
    p = tmp_path / "platforms.json"
    p.write_text(json.dumps({"platforms": entries}))
    return p


@pytest.mark.parametrize("change, message", [
    (lambda e: e.update(clock={"hz": 2e8, "status": "assumption"}),
     "an FPGA's clock must name the build of fpga/engines.json it was measured on"),
    (lambda e: e.update(clock={"build": "no_such_build"}),
     "clock build 'no_such_build' on device 'ecp5-85k' is not a row of"),
    (lambda e: e.update(clock={"build": "lm", "device": "ice40-up5k"}),
     "clock build 'lm' on device 'ice40-up5k' is not a row of"),
    (lambda e: e.update(clock={"asic_timing": "bench/results/timing/asic_45nm.json"}),
     "only an ASIC's clock comes from the 45 nm timing record"),
    (lambda e: e.update(clock={}), "clock must name a build of fpga/engines.json (build), a "
                                   "timing record (asic_timing) or give hz"),
    (lambda e: e.update(kind="gpu"), "kind must be one of fpga, asic, not 'gpu'"),
    (lambda e: e["memory"].update(bytes_per_s=-1),
     "memory.bytes_per_s must be a positive finite number, not -1"),
    (lambda e: e["memory"].pop("pj_per_bit"), "memory lacks 'pj_per_bit'"),
    (lambda e: e["resources"].pop("dsp"), "an FPGA needs resources lut4, ff, dsp, bram"),
    (lambda e: e.update(static_w=float("nan")),
     "static_w must be a positive finite number, not nan"),
])
def test_a_bad_platform_file_is_refused_naming_platform_and_field(tmp_path, change, message):
    e = json.loads(json.dumps(_entry("ulx3s")))
    change(e)
    path = _write(tmp_path, [e])
    with pytest.raises(ValueError) as err:
        load_platforms(path)
    assert str(err.value).startswith(f"{path}: platform 'ulx3s': ")
    assert message in str(err.value)


def test_an_asic_clock_must_be_marked_an_assumption(tmp_path):
    e = json.loads(json.dumps(_entry("asic-45nm")))
    e["clock"] = {"hz": 1e9}
    with pytest.raises(ValueError, match="must be marked \"status\": \"assumption\""):
        load_platforms(_write(tmp_path, [e]))


@pytest.mark.parametrize("record", ["bench/results/timing/none.json", 3, None])
def test_an_asic_timing_record_that_is_no_file_is_refused(tmp_path, record):
    e = json.loads(json.dumps(_entry("asic-45nm")))
    e["clock"] = {"asic_timing": record}
    with pytest.raises(ValueError, match="clock.asic_timing must name a timing record"):
        load_platforms(_write(tmp_path, [e]))


def test_an_asic_clock_typed_in_hz_is_assumed(tmp_path):
    e = json.loads(json.dumps(_entry("asic-45nm")))
    e["clock"] = {"hz": 4e8, "status": "assumption"}
    (p,) = load_platforms(_write(tmp_path, [e])).values()
    assert (p.clock_hz, p.clock_source) == (4e8, "assumed")


def test_a_platform_named_twice_is_refused(tmp_path):
    e = _entry("asic-45nm")
    with pytest.raises(ValueError, match="platform 'asic-45nm' is named twice"):
        load_platforms(_write(tmp_path, [e, e]))


def test_engine_area_is_the_whole_engine_fit_at_the_models_shape():
    """At the measured whole engine's own size and shape, engine_area is within 10 % of that
    build on every resource (the fit, not the build); at twice the pe its LUT4, FF and DSP
    grow by the fit's row and array-bit coefficients; the basis names the fit."""
    row = next(r for r in ENGINES.values() if r["unit"] == "layer")
    q = row["params"]
    spec = QuantSpec()
    tiny = get_preset("tiny")
    need, basis, extrapolated = engine_area(tiny, spec, q["simd"], q["pe"], q["lanes"])
    for k in ("lut4", "ff", "dsp", "bram"):
        assert abs(need[k] - row[k]) <= 0.10 * row[k], k
    assert "whole-engine fit" in basis and not extrapolated
    fit = AREA["layer_engine"]["fit"]
    need2, _, _ = engine_area(tiny, spec, q["simd"], 2 * q["pe"], q["lanes"])
    for k in ("lut4", "ff"):
        grow = fit[k]["row"] * q["pe"] + fit[k]["array_bit"] * q["simd"] * q["pe"]
        assert abs(need2[k] - need[k] - grow) <= 1, k
    # The 2.7B layer's state (10.5 Mbit) alone is more block RAM than the ECP5-85F has.
    big, basis, _ = engine_area(get_preset("2.7B"), spec, 32, 32, 128)
    assert big["bram"] > 570 and "10.0 Mbit" in basis
    on_chip, basis, _ = engine_area(get_preset("2.7B"), spec, 32, 32, 128, state_on_chip=True)
    assert on_chip["bram"] < big["bram"] - 500 and "state apart" in basis


@pytest.mark.parametrize("name, preset", [("u55c", "2.7B"), ("u55c", "1.3B"),
                                          ("ulx3s", "780M")])
def test_fpga_engine_is_the_largest_beat_that_fits(name, preset):
    p = load_platforms()[name]
    cfg = get_preset(preset)
    a, sizing = report.sized_for(p, cfg, Arch())
    beat = a.beat_bytes

    def fits(bb: int) -> bool | None:
        """None: the beat sizes no engine for the model."""
        try:
            e = estimate(cfg, replace(a, beat_bytes=bb), "bimamba")
        except ValueError:
            return None
        need, _, _ = engine_area(cfg, a.spec, e.layer.simd, e.layer.pe, e.layer.lanes,
                                 a.state_on_chip)
        return all(need[k] <= p.resources[k] for k in need)

    top = 2 * beat  # every beat up to the memory's bytes a cycle (rounded up) is tried
    while top / 2 < p.bytes_per_s / p.clock_hz and top * 2 <= 65536:
        top *= 2
    if fits(beat):
        assert "the largest engine that fits the device" in sizing
        # No larger beat up to the memory's bytes a cycle gives an engine that fits.
        bb = 2 * beat
        while bb <= top:
            assert fits(bb) is not True, bb
            bb *= 2
    else:  # none fits: the smallest engine is shown, and no beat at all would fit
        assert "no engine fits the device" in sizing
        bb = 1
        while bb <= top:
            assert fits(bb) is not True, bb
            bb *= 2
        assert all(fits(1 << i) is None for i in range(beat.bit_length() - 1))
    # The platform's own figures went into the architecture.
    e = _entry(name)
    assert (a.clock_hz, a.dram_bytes_per_s, a.dram_pj_per_bit, a.static_w) == (
        p.clock_hz, e["memory"]["bytes_per_s"], e["memory"]["pj_per_bit"], e["static_w"])


def test_platform_view_counts_the_model_against_the_memory_and_names_what_is_short():
    p = load_platforms()["ulx3s"]
    cfg = get_preset("780M")
    a, _ = report.sized_for(p, cfg, Arch())
    r = report.preset_report("780M", a)
    v = platform_view(p, r, a, cfg)
    need = v["resources"]["memory_bytes"]["need"]
    # Packed weights and FP16 rest, the head at head_bits, the state in DRAM.
    assert need == (r["weights_bimamba_bytes"] + r["embedding_bytes"] // 2 * a.head_bits // 8
                    + r["state_bytes"])
    assert need > 32 * 2**20 and "memory_bytes" in v["short_of"] and v["fits"] is False
    on_chip = platform_view(p, r, replace(a, state_on_chip=True), cfg)
    assert on_chip["resources"]["state_bits_on_chip"]["need"] == r["state_bytes"] * 8


def test_json_report_carries_a_platform_for_every_preset(capsys):
    assert report.main(["--platform", "ulx3s", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    row = _clock_row("ulx3s")
    for n, r in doc["presets"].items():
        plat = r["platform"]
        assert plat["name"] == "ulx3s" and plat["clock_source"] == "measured"
        assert plat["clock_hz"] == pytest.approx(row["fmax_mhz"] * 1e6)
        assert plat["bandwidth_bytes_per_s"] == _entry("ulx3s")["memory"]["bytes_per_s"]
        assert isinstance(plat["fits"], bool)
        assert r["tokens_per_s"] == plat["tokens_per_s"]
    # Without --platform: the architecture as given, its default clock the measured one, any
    # other an assumption.
    assert report.main(["--preset", "2.7B", "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)["presets"]["2.7B"]
    assert r["platform"]["name"] == "custom" and r["platform"]["clock_source"] == "measured"
    assert r["platform"]["clock_hz"] == 522e6 and "asic_45nm.json" in r["platform"]["clock_note"]
    for clock, source in (("3e8", "assumed"), ("1e9", "assumed"), ("522e6", "measured"),
                          ("5.22e8", "measured"), ("522000001", "assumed")):
        assert report.main(["--preset", "2.7B", "--format", "json", "--set",
                            f"clock_hz={clock}"]) == 0
        r = json.loads(capsys.readouterr().out)["presets"]["2.7B"]
        assert r["platform"]["clock_source"] == source, clock
        assert r["platform"]["clock_hz"] == float(clock)
    # At the measured clock, an engine of more columns than the timed one (64) is not timed:
    # HBM-class bandwidth sizes 256 columns.
    assert report.main(["--preset", "2.7B", "--format", "json", "--set",
                        "dram_bytes_per_s=819.2e9"]) == 0
    r = json.loads(capsys.readouterr().out)["presets"]["2.7B"]
    assert r["design_point"]["simd"] == 256 and r["platform"]["clock_hz"] == 522e6
    assert r["platform"]["clock_source"] == "assumed"
    assert "timed with 64 array columns; this engine has 256" in r["platform"]["clock_note"]


def test_asic_clock_table_holds_the_default_estimate_at_its_clock():
    cfg = get_preset("2.7B")
    arch = platform_arch(load_platforms()["asic-45nm"], Arch())
    rows = report.clock_table(cfg, arch)
    assert [r["clock_hz"] for r in rows] == [1e8, 2e8, 3e8, 5e8, 522e6, 7e8, 1e9]
    e = estimate(cfg, arch, "bimamba")
    assert rows[4]["tokens_per_s"] == e.tokens_per_s
    assert rows[4]["energy_per_token_j"] == e.energy_per_token_j
    assert (rows[4]["simd"], rows[4]["pe"]) == (64, 32)
    for i, hz in ((0, 1e8), (-1, 1e9)):
        other = estimate(cfg, replace(arch, clock_hz=hz), "bimamba")
        assert rows[i]["tokens_per_s"] == other.tokens_per_s
    tps = [r["tokens_per_s"] for r in rows]
    assert tps == sorted(tps) and tps[0] < tps[-1]
    # A report's clock among the table's is not repeated.
    rows = report.clock_table(cfg, replace(arch, clock_hz=5e8))
    assert [r["clock_hz"] for r in rows] == [1e8, 2e8, 3e8, 5e8, 7e8, 1e9]


def test_asic_clock_table_in_markdown_has_a_column_a_clock(capsys):
    assert report.main(["--preset", "780M"]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = next(k for k, t in enumerate(lines) if t.startswith("| model | 100 MHz |"))
    head, rule, row = lines[i:i + 3]
    assert head == ("| model | 100 MHz | 200 MHz | 300 MHz | 500 MHz | 522 MHz | 700 MHz | "
                    "1000 MHz |")
    assert head.count("|") == rule.count("|") == row.count("|") == 9
    assert row.startswith("| 780M | ") and " tok/s, " in row


@pytest.mark.parametrize("argv, message", [
    (["--platform", "nope"], "--platform must be one of ulx3s, orangecrab-85f, u55c, asic-45nm, not 'nope'"),
    (["--platform", "u55c", "--memory", "HBM2"], "--platform sets the memory; leave --memory out"),
    (["--platform", "u55c", "--set", "clock_hz=3e8"],
     "--platform u55c sets clock_hz; leave clock_hz out of --set and --arch"),
    (["--platform", "ulx3s", "--set", "static_w=1"],
     "--platform ulx3s sets static_w; leave static_w out of --set and --arch"),
])
def test_platform_flag_errors(capsys, argv, message):
    assert usage_error(capsys, report.main, argv) == f"report.py: error: {message}"


def test_measured_gpus_carry_their_weights_and_bandwidth_share(capsys):
    """Every measured record in the JSON report names its weights and its share of the GPU's
    bandwidth on its own bytes; the best batch-1 record of each weight kind is set against the
    1-bit estimate. Expectations from the record files read here."""
    files = sorted((Path(report.__file__).resolve().parents[1] / "bench" / "results")
                   .glob("*.json"))
    recs = [r for f in files for r in json.loads(f.read_text())["records"]
            if r["preset"] == "2.7B" and r.get("shape", {}).get("vocab_size", 32000) == 32000]
    assert report.main(["--preset", "2.7B", "--format", "json", "--vocab", "32000"]) == 0
    r = json.loads(capsys.readouterr().out)["presets"]["2.7B"]
    assert len(r["baselines"]) == len(recs)
    for g in r["baselines"]:
        assert g["kind"] == "measured" and g["weights"] in ("fp16", "1-bit")
        src = next(x for x in recs if x["date"] == g["date"] and x["system"] == g["system"])
        assert g["weights"] == src.get("weights", "fp16")
        need = src.get("bytes_per_token") or r["minimal_bytes_per_token_fp16"]
        assert g["roofline_fraction"] == pytest.approx(g["tokens_per_s"] * need / 4.8e12)
        assert g["bandwidth_fraction"] == pytest.approx(
            src.get("bandwidth_fraction") or g["roofline_fraction"])
    best = {}
    for x in recs:
        w = x.get("weights", "fp16")
        if x["batch"] == 1 and (w not in best or x["j_per_token"] < best[w]["j_per_token"]):
            best[w] = x
    assert set(r["measured_gpus"]) == set(best) >= {"fp16", "1-bit"}
    for w, x in best.items():
        assert r["measured_gpus"][w]["j_per_token"] == x["j_per_token"]
        assert r["measured_gpus"][w]["saving"] == pytest.approx(
            x["j_per_token"] / r["energy_per_token_j"])
