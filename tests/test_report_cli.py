"""The report's command line: every bad argument ends in one line, ``report.py: error: ...``,
with exit status 2 and no traceback; limits come from the RTL and quantisation configs; the
default ``--plot`` writes every chart."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from energy.estimator import Arch, arch_from_args
from energy.report import PLOTS, SWEEP_VALUES, main as report_main
from model.evaluate.sqnr import MAX_SEED, MAX_STEPS
from model.golden.quantize import QuantSpec

ROOT = Path(__file__).resolve().parent.parent


def error_of(argv: list[str], capsys) -> str:
    """The one stderr line of a refused command line (exit status 2, nothing on stdout)."""
    with pytest.raises(SystemExit) as exc:
        report_main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("report.py: error: ")
    return err[len("report.py: error: "):-1]


@pytest.fixture
def json_file(tmp_path):
    def write(doc) -> str:
        p = tmp_path / "arch.json"
        p.write_text(json.dumps(doc))
        return str(p)
    return write


@pytest.mark.parametrize("argv, msg", [
    # QuantSpec: the golden model needs state_bits >= 4.
    (["--set", "state_bits=3"], "state_bits must be an integer in [4, 32], not 3"),
    (["--set", "data_bits=25"], "data_bits must be an integer in [6, 24], not 25"),
    (["--set", "act_bits=17"], "act_bits must be an integer in [1, 16], not 17"),
    # The layer engine's array: simd <= 4096, pe <= 1024, 0 = sized to the memory; no
    # clamping of a value out of range.
    (["--set", "simd=1e20"],
     "simd must be an integer in [0, 4096] (0: sized to the memory), not 100000000000000000000"),
    (["--set", "simd=4097"], "simd must be an integer in [0, 4096] (0: sized to the memory), "
                             "not 4097"),
    (["--set", "pe=1025"], "pe must be an integer in [0, 1024] (0: sized to the memory), not 1025"),
    (["--set", "simd=true"], "simd must be an integer in [0, 4096] (0: sized to the memory), "
                             "not 'true'"),
    (["--set", "act_bits=1"], "act_bits must be in [2, 16] for the layer engine, not 1"),
    (["--set", "planes=9"], "planes must be in [0, act_bits = 8] (0: all), not 9"),
    (["--set", "other_lanes=64"], "architecture parameter must be one of clock_hz, simd, pe, "
     "lanes, planes, beat_bytes, act_bits, lm_head_macs, state_bits, data_bits, head_bits, "
     "dram_bytes_per_s, dram_pj_per_bit, dram_efficiency, dram_latency_ns, dram_background_w, "
     "state_on_chip, state_sram_bytes, table, node_nm, static_w, static_fp16_w, not "
     "'other_lanes'"),
    (["--set", "dram_pj_per_bit=-1"],
     "dram_pj_per_bit must be a number >= 0 (0: from the table), not -1.0"),
    (["--set", "clock_hz=inf"], "clock_hz must be a number of Hz in [1e+06, 1e+11], not inf"),
    (["--set", "simd=32", "--set", "simd=64"],
     "--set must name each parameter once, not simd twice"),
    (["--set", "simd"], "--set takes name=value, not 'simd'"),
    (["--set", "table=nope"],
     "energy table must be one of horowitz_45nm, tpuv4i_7nm or a JSON path, not 'nope'"),
    (["--set", "node_nm=-7"],
     "node_nm must be 0 (the table's node) or a node in [1, 1000] nm, not -7.0"),
    (["--set", "node_nm=1e9"],
     "node_nm must be 0 (the table's node) or a node in [1, 1000] nm, not 1000000000.0"),
    (["--set", "dram_bytes_per_s=1"],
     "dram_bytes_per_s must be a number of bytes/s in [1e+06, 1e+15], not 1.0"),
    (["--set", "clock_hz=1e15"], "clock_hz must be a number of Hz in [1e+06, 1e+11], not "
     "1000000000000000.0"),
    (["--sweep", "--sweep-act", "6,1"],
     "--sweep-act: act_bits must be in [2, 16] for the layer engine, not 1"),
    (["--set", "static_w=-1"], "static_w must be a number of watts >= 0, not -1.0"),
    # --memory names a row of energy/references/dram.json and owns the DRAM fields.
    (["--memory", "HBM9"], "--memory must be one of DDR4, DDR5, LPDDR4, LPDDR5, GDDR5, GDDR6, HBM2, "
                           "HBM2e, HBM3, not 'HBM9'"),
    (["--memory", "HBM2", "--set", "dram_pj_per_bit=3"],
     "--memory sets dram_pj_per_bit; leave dram_pj_per_bit out of --set and --arch"),
    # An array the model cannot take is refused in the engine's words.
    (["--preset", "780M", "--set", "simd=1024", "--set", "pe=16"],
     "780M: simd must divide d_model = 1536 (one of [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, "
     "96, 128, 192, 256, 384, 512, 768, 1536]), not 1024"),
    (["--preset", "780M", "--set", "simd=64"],
     "780M: simd and pe must be given together (or both 0: sized to the memory), not simd = 64 "
     "and pe = 0"),
    (["--preset", "780M", "--set", "lanes=3"],
     "lanes must divide d_state = 128 (one of [1, 2, 4, 8, 16, 32, 64, 128]), not 3"),
    # Seeds and sizes.
    (["--sweep", "--seed", "-1"], f"--seed must be an integer in [0, {MAX_SEED}], not -1"),
    (["--sweep", "--seed", f"{MAX_SEED + 1}"],
     f"--seed must be an integer in [0, {MAX_SEED}], not {MAX_SEED + 1}"),
    (["--sweep", "--sweep-steps", "0"],
     f"--sweep-steps must be an integer in [1, {MAX_STEPS}], not 0"),
    (["--prefill", "0"], "--prefill must be an integer in [1, 1048576], not 0"),
    (["--prefill", "2x"], "--prefill must be an integer in [1, 1048576], not '2x'"),
    (["--sweep", "--sweep-act", "4,17"],
     "--sweep-act: act_bits must be an integer in [1, 16], not 17"),
    (["--sweep", "--sweep-act", "4,4"], "--sweep-act must list each width once, not 4 twice"),
    # Flags that would be ignored or contradict each other.
    (["--seed", "3"], "--seed needs --sweep"),
    (["--sweep-steps", "8"], "--sweep-steps needs --sweep"),
    (["--plot-sweep", "simd"], "--plot-sweep needs --plot"),
    (["--sweep", "--format", "csv"],
     "--sweep needs --format md or json (csv holds the preset table only)"),
    (["--preset", "780M", "--preset", "780M"],
     "--preset must name each preset once, not 780M twice"),
    # argparse's own errors take the same one-line form.
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--seed"], "argument --seed: expected one argument"),
])
def test_bad_arguments_exact_messages(argv, msg, capsys):
    assert error_of(argv, capsys) == msg


def test_arch_json_boolean_is_not_an_integer(json_file, capsys):
    assert error_of(["--arch", json_file({"simd": True})], capsys) == \
        "simd must be an integer in [0, 4096] (0: sized to the memory), not True"
    assert error_of(["--arch", json_file({"clock_hz": False})], capsys) == \
        "clock_hz must be a number of Hz in [1e+06, 1e+11], not False"
    assert error_of(["--arch", json_file({"state_on_chip": 1})], capsys) == \
        "state_on_chip must be true or false, not 1"


@pytest.mark.parametrize("doc, kind", [([1, 2], "a list"), ("simd", "a string"), (64, "a number"),
                                       (None, "null")])
def test_arch_json_must_be_an_object(doc, kind, json_file, capsys):
    assert error_of(["--arch", json_file(doc)], capsys) == \
        f"--arch must hold a JSON object of architecture parameters, not {kind}"


def test_arch_json_numbers_and_set_precedence(json_file):
    a = arch_from_args(json_file({"simd": 128.0, "clock_hz": 2 * 10**9, "state_on_chip": True}),
                       ["simd=32"])
    assert (a.simd, a.clock_hz, a.state_on_chip) == (32, 2e9, True)
    assert isinstance(a.clock_hz, float)


def test_unwritable_plot_folder_is_refused_before_any_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = blocker / "plots"
    assert error_of(["--preset", "780M", "--plot", str(target)], capsys) == \
        f"--plot must name a writable folder, not '{target}' (Not a directory)"
    assert error_of(["--preset", "780M", "--plot", str(blocker)], capsys) == \
        f"--plot must name a writable folder, not '{blocker}' (a file, not a folder)"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_read_only_plot_folder_is_refused(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert error_of(["--preset", "780M", "--plot", str(ro)], capsys) == \
            f"--plot must name a writable folder, not '{ro}' (Permission denied)"
    finally:
        ro.chmod(0o700)


def test_plot_with_defaults_writes_every_chart(tmp_path, capsys):
    """All three presets and the act_bits sweep up to 16 bits: every chart is written."""
    assert report_main(["--plot", str(tmp_path / "new" / "dir")]) == 0
    names = {p.name for p in (tmp_path / "new" / "dir").iterdir()}
    assert names == {*PLOTS, "sweep_act_bits.png"}
    err = capsys.readouterr().err
    assert err.count("wrote ") == 4


def test_sweep_values_are_widths_the_golden_model_accepts():
    for v in SWEEP_VALUES["act_bits"]:
        QuantSpec(act_bits=v)


def test_arch_limits_are_those_of_the_rtl_and_the_spec():
    """Arch accepts exactly the widths QuantSpec accepts (act_bits from 2: the layer engine's
    bit-planes), and array sizes from 0 (sized) to the generators' limits."""
    def accepts(build) -> bool:
        try:
            build()
            return True
        except ValueError:
            return False

    for name, hi in (("simd", 4096), ("pe", 1024)):
        for v in (0, 1, hi, hi + 1, True, 2.5, -1):
            want = isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= hi
            assert accepts(lambda: Arch(**{name: v})) == want, (name, v)
    for name in ("act_bits", "state_bits", "data_bits"):
        for v in range(0, 34):
            want = accepts(lambda: QuantSpec(**{name: v})) and (name != "act_bits" or v >= 2)
            assert accepts(lambda: Arch(**{name: v})) == want, (name, v)


def test_explicit_array_is_the_one_costed(capsys):
    """simd, pe and lanes given: the report's engine row shows that array, not a sized one."""
    assert report_main(["--preset", "780M", "--set", "simd=64", "--set", "pe=16",
                        "--set", "lanes=16"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| 780M | 128 B |"))
    assert "| 16 x 64, 8 | 16 |" in row


def test_script_error_has_no_traceback(tmp_path):
    """As a script: one line on stderr, exit status 2."""
    p = tmp_path / "list.json"
    p.write_text("[1, 2]")
    res = subprocess.run([sys.executable, "energy/report.py", "--arch", str(p)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr == ("report.py: error: --arch must hold a JSON object of architecture "
                          "parameters, not a list\n")


def test_sweep_width_the_golden_model_cannot_export_is_a_note(monkeypatch, capsys):
    """2.7B at 16-bit activations overflows a 62-bit accumulator of the golden model: the
    row keeps its energy, shows no SQNR and says why (the golden model is stubbed here)."""
    import model.evaluate.sqnr
    from model.golden.quantize import ExportError

    def evaluate(p, spec):
        if spec.act_bits == 16:
            raise ExportError("in_proj.prod needs 63 bits (> 62)")
        return {"layer_out": 50.0, "mixer_out": 25.0}

    monkeypatch.setattr(model.evaluate.sqnr, "prepare", lambda cfg, steps, seed: None)
    monkeypatch.setattr(model.evaluate.sqnr, "evaluate", evaluate)
    assert report_main(["--preset", "2.7B", "--sweep", "--sweep-act", "8,16",
                        "--sweep-steps", "2", "--vocab", "32000"]) == 0
    out = capsys.readouterr().out
    # The engine is bit-parallel and memory-bound: a wider activation costs energy (wider
    # popcount accumulations and activation reads), not time.
    assert "| 8 | 50.0 dB | 25.0 dB | 96.47 mJ | 145.1 (memory) |" in out
    assert "| 16 | n/a | n/a | 96.75 mJ | 145.1 (memory) |" in out
    assert "Note: act_bits = 16: no golden model: in_proj.prod needs 63 bits (> 62)." in out
