"""``python -m cosim.run``: every option checked before anything slow starts (exact one-line
errors, exit status 2), progress lines, and the WAVES=1 warning and waveform paths.

No test here builds a Verilator model: the orchestration test swaps the runners for stubs."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

import cosim.projection
import cosim.scan
import cosim.verilator
from cosim.run import main

from .conftest import usage_error

ROOT = Path(__file__).resolve().parent.parent
PROG = "python -m cosim.run"


@pytest.fixture(autouse=True)
def _no_waves(monkeypatch):
    monkeypatch.delenv("WAVES", raising=False)


def _error(capsys, argv: list[str]) -> str:
    return usage_error(capsys, main, argv)


def test_lanes_checked_before_anything_is_built(tmp_path, capsys):
    out = tmp_path / "build"
    t0 = time.perf_counter()
    msg = _error(capsys, ["--units", "scan", "--lanes", "3", "-o", str(out)])
    assert time.perf_counter() - t0 < 1.0
    assert msg == (f"{PROG}: error: argument --lanes: for the 780M scan, lanes must divide "
                   f"d_state = 128 (one of [1, 2, 4, 8, 16, 32, 64, 128]), not 3")
    assert not out.exists()


def test_lanes_error_from_a_fresh_interpreter_imports_no_torch(tmp_path):
    """The options are checked with light modules only, so the error comes in well under a
    second even counting the interpreter's start."""
    code = ("import sys\nfrom cosim.run import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code, "--units", "scan", "--lanes", "3", "-o",
                          str(tmp_path / "b")], cwd=ROOT, capture_output=True, text=True)
    print(f"{time.perf_counter() - t0:.2f} s")
    assert res.stdout == "2 False\n"
    assert res.stderr.startswith(f"{PROG}: error: argument --lanes: for the 780M scan")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("argv, msg", [
    (["--lanes", "3"], "argument --lanes: applies to --units scan only, not to --units layer"),
    (["--simd", "32"], "argument --simd: applies to --units projection only, not to --units "
                       "layer"),
    (["--units", "projection", "--stalls"],
     "argument --stalls: applies to --units layer only, not to --units projection"),
    (["--units", "scan,projection", "--bytes-per-cycle", "32"],
     "argument --bytes-per-cycle: applies to --units layer only, not to --units "
     "scan,projection"),
    (["--model-layers", "", "--model-tokens", "16"],
     "argument --model-tokens: needs the whole model, which --model-layers '' leaves out"),
])
def test_a_flag_the_run_would_ignore_is_refused(capsys, argv, msg):
    assert _error(capsys, argv) == f"{PROG}: error: {msg}"


def test_scan_tokens_zero(capsys):
    assert _error(capsys, ["--scan-tokens", "0"]) == (
        f"{PROG}: error: argument --scan-tokens: must be an integer in [1, 1024], not 0")


def test_scan_tokens_bounded(capsys):
    assert _error(capsys, ["--scan-tokens", "100000"]) == (
        f"{PROG}: error: argument --scan-tokens: must be an integer in [1, 1024], not 100000")


def test_negative_seed(capsys):
    assert _error(capsys, ["--seed", "-1"]) == (
        f"{PROG}: error: argument --seed: must be an integer in [0, 4294967295], not -1")


def test_huge_seed(capsys):
    assert _error(capsys, ["--seed", str(2**64)]) == (
        f"{PROG}: error: argument --seed: must be an integer in [0, 4294967295], "
        f"not {2**64}")


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "cosim"
    assert _error(capsys, ["-o", str(out)]) == (
        f"{PROG}: error: argument -o/--out: {out} is not a writable folder ({blocker} is a "
        f"file, so no folder can be made under it)")


def test_simd_checked_against_every_preset(capsys):
    assert _error(capsys, ["--units", "projection", "--presets", "780M,2.7B",
                           "--simd", "2000"]) == (
        f"{PROG}: error: argument --simd: for the 780M in_proj (1536x6448), simd must be in "
        f"[1, d_in = 1536], not 2000")


def test_pe_checked(capsys):
    assert _error(capsys, ["--units", "projection", "--pe", "0"]) == (
        f"{PROG}: error: argument --pe: for the 780M in_proj (1536x6448), pe must be an integer "
        f"in [1, 1024], not 0")


def test_lanes_checked_against_the_second_preset(capsys):
    assert _error(capsys, ["--units", "scan", "--presets", "780M,tiny", "--lanes", "32"]) == (
        f"{PROG}: error: argument --lanes: for the tiny scan, lanes must divide d_state = 16 "
        f"(one of [1, 2, 4, 8, 16]), not 32")


def test_unknown_and_repeated_presets(capsys):
    assert _error(capsys, ["--presets", "780M,7B"]) == (
        f"{PROG}: error: argument --presets: preset must be one of 780M, 1.3B, 2.7B, tiny, "
        f"small, not '7B'")
    assert _error(capsys, ["--presets", "tiny,tiny"]) == (
        f"{PROG}: error: argument --presets: tiny is listed 2 times")


@pytest.mark.parametrize("layers, msg", [
    ("9", "argument --model-layers: each layer once, in [0, 6), not '9'"),
    ("0,0", "argument --model-layers: each layer once, in [0, 6), not '0,0'"),
    ("a", "argument --model-layers: takes layer numbers separated by commas, not 'a'"),
])
def test_model_layers_checked(layers, msg, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--presets", "tiny", "--model-layers", layers])
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_model_layers_need_the_corpus(capsys, monkeypatch, tmp_path):
    import cosim.run as run

    monkeypatch.setattr(run, "_DATA", tmp_path / "none")
    with pytest.raises(SystemExit) as e:
        main(["--presets", "tiny"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "the real-text cases need the corpus" in err and "run `make data`" in err


def test_waves_value_checked(capsys, monkeypatch):
    monkeypatch.setenv("WAVES", "maybe")
    assert _error(capsys, []) == (
        f"{PROG}: error: environment variable WAVES must be one of 1, yes, y, on, true, "
        f"enable, 0, no, n, off, false, disable or empty, not 'maybe'")


def _stub(unit: str, calls: list):
    """A runner that reports the phases, writes a small dump.fst and passes."""

    def run(case, waves=None, on_phase=None):
        for phase in ("emit", "build", "simulate"):
            on_phase(phase)
        calls.append((unit, case.name))
        fst = cosim.verilator.unit_dir(unit, "stub", case.name) / case.name / "dump.fst"
        fst.parent.mkdir(parents=True, exist_ok=True)
        fst.write_bytes(b"\0" * 2048)
        c = case.config
        cpt = c.cycles_per_token
        n = len(case.tokens) if unit == "xnor_projection" else len(case.dt_raw)
        return {"mismatches": 0, "tokens": n, "token_spacing": [cpt] * (n - 1),
                "cycles_measured": n * cpt + c.latency, "cycles_predicted": n * cpt + c.latency,
                "cycles_per_s": 1e5, "fst": str(fst)}

    return run


def test_progress_lines_and_waveform_paths(tmp_path, capsys, monkeypatch):
    calls: list = []
    monkeypatch.setattr(cosim.projection, "run_case", _stub("xnor_projection", calls))
    monkeypatch.setattr(cosim.scan, "run_scan_case", _stub("ssm_scan", calls))
    monkeypatch.setenv("WAVES", "1")
    out = tmp_path / "cosim"
    assert main(["--units", "projection,scan", "--presets", "tiny", "--scan-tokens", "2",
                 "--model-layers", "", "--jobs", "1", "-o", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    assert calls == [("xnor_projection", "tiny_in_proj"), ("xnor_projection", "tiny_out_proj"),
                     ("xnor_projection", "random_stalls"), ("ssm_scan", "tiny_scan")]
    err = stderr.splitlines()
    # Before the run: the warning, with the folder and the expected size.
    assert err[0].startswith(f"warning: WAVES=1 dumps an FST waveform of every case under "
                             f"{out.resolve()}: 4 cases, ")
    assert "expect about " in err[0] and "free there" in err[0]
    # One line per prepared preset and per finished case (stderr is not a terminal here).
    assert err[1].startswith("[prep 1/2] tiny: in_proj, out_proj and scan cases from the golden")
    assert err[2] == "[prep 2/2] random_stalls: random projection and tokens"
    done = [line for line in err if line.startswith("[case ")]
    assert [line.split()[1] for line in done] == ["1/4]", "2/4]", "3/4]", "4/4]"]
    assert all(line.endswith("  PASS") for line in done)
    waves = [line for line in err if line.startswith("  waves: ")]
    assert len(waves) == 4 and all(line.endswith(
        "(2.0 kB); open with GTKWave (gtkwave FILE) or Surfer (surfer FILE)") for line in waves)
    # The summary table stays, and the waveforms are listed after it.
    assert stdout.startswith("seed=0\n\nunit ") and stdout.count("| PASS") == 4
    assert "waveforms (4 FST files, 8.2 kB; open with GTKWave (gtkwave FILE) or Surfer " \
           "(surfer FILE)):" in stdout
    assert all(str(out.resolve()) in line for line in stdout.splitlines()
               if line.endswith("dump.fst"))


def test_units_checked(capsys):
    assert _error(capsys, ["--units", "layer,fpga"]) == (
        f"{PROG}: error: argument --units: each one of layer, projection, scan, not 'fpga'")
    assert _error(capsys, ["--units", "layer,layer"]) == (
        f"{PROG}: error: argument --units: layer is listed 2 times")


def test_layer_array_checked_before_anything_is_built(tmp_path, capsys):
    """24 bits a beat split as 2 x 12 fits the 780M shapes, but nothing fits 2.7B's."""
    t0 = time.perf_counter()
    msg = _error(capsys, ["--bytes-per-cycle", "3", "-o", str(tmp_path / "b")])
    assert time.perf_counter() - t0 < 1.0
    assert msg == (f"{PROG}: error: argument --bytes-per-cycle: for the 2.7B layer, "
                   f"bytes_per_cycle = 3: no pe x simd = 24 bits divides d_model = 2560, "
                   f"d_inner = 5120, d_state = 128 and headdim = 64")
    assert not (tmp_path / "b").exists()
    assert _error(capsys, ["--layer-tokens", "0"]) == (
        f"{PROG}: error: argument --layer-tokens: must be an integer in [1, 64], not 0")
    assert _error(capsys, ["--model-tokens", "2000"]) == (
        f"{PROG}: error: argument --model-tokens: must be an integer in [1, 1024], not 2000")


def _layer_stub(case, waves=None, on_phase=None):
    """A layer case's figures without a build: the formula's cycles, one cycle late for the
    case named tiny_layer (its row must FAIL). Module level, so worker processes load it."""
    if on_phase is not None:
        on_phase("simulate")
    lc = case.configs[0]
    T = case.u.shape[0]
    first = lc.schedule(first=True).last_out
    spacing = lc.schedule().token_cycles
    off = 1 if case.name == "tiny_layer" else 0
    return {"mismatches": {"o": 0}, "wall_s": 1.0, "predicted_first": first,
            "predicted_spacing": spacing, "spacing": [spacing] * (T - 1),
            "last_out": [first + t * spacing + off for t in range(T)]}


@pytest.mark.parametrize("jobs", [1, 2])
def test_layer_rows_with_a_stub(tmp_path, capsys, monkeypatch, jobs):
    """The layer rows: the formula's cycles beside the measured ones, PASS only when equal;
    in the order of the cases whether they run one at a time or in worker processes."""
    import cosim.layer

    monkeypatch.setattr(cosim.layer, "run_layer_case", _layer_stub)
    assert main(["--presets", "tiny", "--bytes-per-cycle", "8", "--model-layers", "",
                 "--stalls", "--jobs", str(jobs), "-o", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("layer ")]
    assert [r.split("|")[1].strip() for r in rows] == ["tiny_layer", "tiny_stalls_reset"]
    assert "FAIL" in rows[0] and rows[1].rstrip().endswith("PASS")
    assert "8 B/cycle: S8 P8 planes 8 lanes" in rows[0] and "of roofline" in rows[0]


def test_jobs_checked(capsys):
    assert _error(capsys, ["--jobs", "0"]) == (
        f"{PROG}: error: argument --jobs: must be an integer in [1, 64], not 0")
