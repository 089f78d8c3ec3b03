"""``python -m rtl.emit``: flags in either order, lint wherever the Verilog is written, and the
exact one-line usage errors (exit status 2, no traceback)."""

import subprocess
import sys
from pathlib import Path

import pytest

from rtl.emit import main, verilator_env, waiver_config

from .conftest import usage_error

ROOT = Path(__file__).resolve().parent.parent
PROG = "python -m rtl.emit xnor_projection"
SMALL = ["--d-in", "100", "--d-out", "10", "--simd", "16", "--pe", "4", "--act-bits", "4"]


def _error(capsys, argv: list[str]) -> str:
    return usage_error(capsys, main, argv)


@pytest.mark.parametrize("order", ["lint_first", "lint_after_unit"])
def test_emit_and_lint_outside_a_folder_named_rtl(tmp_path, capsys, order):
    out = tmp_path / "out"
    if order == "lint_first":
        argv = ["--lint", "-o", str(out), "xnor_projection", *SMALL]
    else:
        argv = ["xnor_projection", "--lint", "-o", str(out), *SMALL]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert (out / "xnor_projection.v").exists()
    assert stdout.endswith("lint: clean\n"), stdout


def test_options_before_the_unit_are_kept(tmp_path, capsys):
    out = tmp_path / "first"
    assert main(["-o", str(out), "xnor_projection", "--lint", *SMALL]) == 0
    assert (out / "xnor_projection.v").exists() and "lint: clean" in capsys.readouterr().out


def test_waivers_are_scoped_to_the_generated_file(tmp_path):
    """A waiver file made for one file leaves the same warning in another file reported."""
    bad = "module {0}(input [7:0] a, output [3:0] y);\n  assign y = a;\nendmodule\n"
    gen, other = tmp_path / "gen.v", tmp_path / "other.v"
    gen.write_text(bad.format("gen"))
    other.write_text(bad.format("other"))
    vlt = tmp_path / "w.vlt"
    text = waiver_config([gen])
    assert "@GENERATED@" not in text
    assert f'lint_off -rule WIDTHTRUNC -file "{gen.resolve()}"' in text
    vlt.write_text(text)

    def run(path):
        res = subprocess.run(["verilator", "--lint-only", "-Wall", str(vlt), str(path.resolve())],
                             env=verilator_env(), capture_output=True, text=True)
        return res.returncode, res.stdout + res.stderr

    rc, report = run(gen)
    assert rc == 0 and "%Warning" not in report, report
    rc, report = run(other)
    assert rc != 0 and "%Warning-WIDTHTRUNC" in report and "other.v" in report, report


def test_preset_with_a_shape_flag(capsys):
    assert _error(capsys, ["xnor_projection", "--preset", "780M", "--d-in", "64"]) == (
        f"{PROG}: error: --d-in 64 cannot be combined with --preset 780M, whose export sets "
        f"d_in")


def test_preset_with_several_format_flags(capsys):
    assert _error(capsys, ["xnor_projection", "--preset", "780M", "--d-out", "8",
                           "--out-bits", "12"]) == (
        f"{PROG}: error: --d-out 8, --out-bits 12 cannot be combined with --preset 780M, "
        f"whose export sets d_out, out_bits")


def test_preset_only_flags_without_a_preset(capsys):
    assert _error(capsys, ["xnor_projection", "--proj", "out_proj"]) == (
        f"{PROG}: error: --proj out_proj: only used with --preset (to pick or seed a preset's "
        f"export), which is not given")


def test_unknown_preset(capsys):
    assert _error(capsys, ["xnor_projection", "--preset", "7B"]) == (
        f"{PROG}: error: argument --preset: preset must be one of 780M, 1.3B, 2.7B, tiny, "
        f"small, not '7B'")


@pytest.mark.parametrize("value", ["-1", "4294967296"])
def test_seed_range(capsys, value):
    assert _error(capsys, ["xnor_projection", "--preset", "tiny", "--seed", value]) == (
        f"{PROG}: error: argument --seed: must be an integer in [0, 4294967295], not {value}")


def test_size_range(capsys):
    assert _error(capsys, ["xnor_projection", "--d-in", "0"]) == (
        f"{PROG}: error: argument --d-in: must be an integer in [1, 65536], not 0")


def test_config_error_is_one_line(capsys):
    assert _error(capsys, ["xnor_projection", "--simd", "100"]) == (
        f"{PROG}: error: simd must be in [1, d_in = 64], not 100")


def test_tail_lanes(tmp_path, capsys):
    assert main(["xnor_projection", "-o", str(tmp_path), *SMALL, "--tail-lanes", "1"]) == 0
    out = capsys.readouterr().out
    assert "tail_lanes=1" in out and "pipeline depth 19" in out  # 15 + four slices
    assert _error(capsys, ["xnor_projection", *SMALL, "--tail-lanes", "3"]) == (
        f"{PROG}: error: tail_lanes must divide pe = 4 (one of [1, 2, 4]), not 3")


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "out"
    assert _error(capsys, ["-o", str(out), "xnor_projection"]) == (
        f"{PROG}: error: argument -o/--out: {out} is not a writable folder ({blocker} is a "
        f"file, so no folder can be made under it)")


def test_no_traceback_from_the_command_line():
    res = subprocess.run([sys.executable, "-m", "rtl.emit", "xnor_projection", "--preset",
                          "780M", "--d-in", "64"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == (f"{PROG}: error: --d-in 64 cannot be combined with --preset 780M, "
                          f"whose export sets d_in\n")
