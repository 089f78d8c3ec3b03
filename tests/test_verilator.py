"""The compiled-model cache of cosim/verilator.py: keyed by everything a model is built from,
built once, found again by another clone, evicted least recently used first; and ccache in the
build environment. A fake runner stands in for Verilator: what is checked is when it is asked
to build, not what it builds (the co-simulation tests run real builds through the same code)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

import cosim.verilator as V
from rtl.emit import verilator_env


class _Adder(wiring.Component):
    def __init__(self, width: int, k: int) -> None:
        self.k = k
        super().__init__({"a": In(width), "y": Out(width)})

    def elaborate(self, platform):
        m = Module()
        r = Signal.like(self.y)
        m.d.sync += r.eq(self.a + self.k)
        m.d.comb += self.y.eq(r)
        return m


class _FakeRunner:
    builds: list[Path] = []

    def build(self, *, build_dir, hdl_toplevel, **kw):
        _FakeRunner.builds.append(Path(build_dir))
        Path(build_dir).mkdir(parents=True, exist_ok=True)
        (Path(build_dir) / hdl_toplevel).write_bytes(b"\x7fELF")
        (Path(build_dir) / "Vtop__ALL.o").write_bytes(b"object")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BIMAMBA_MODEL_CACHE", str(tmp_path / "models"))
    monkeypatch.setattr(V, "_runner", _FakeRunner)
    _FakeRunner.builds = []
    with V.use_build_root(tmp_path / "build"):
        yield tmp_path / "models"


def test_one_build_per_distinct_verilog(cache):
    _, b1 = V.build(_Adder(8, 1), "adder", V.unit_dir("adder", "u", "key one"))
    # Another unit folder (another configuration key), the same Verilog: the same model.
    _, b2 = V.build(_Adder(8, 1), "adder", V.unit_dir("adder", "u", "key two"))
    assert b1 == b2 and _FakeRunner.builds == [b1]
    assert b1.parent.parent == cache.resolve()
    # Only the simulator and the stamp are kept.
    assert sorted(f.name for f in b1.iterdir()) == ["adder", "built"]
    # Another constant, another Verilog: another model; waves: another model too.
    _, b3 = V.build(_Adder(8, 2), "adder", V.unit_dir("adder", "u", "key one"))
    _, b4 = V.build(_Adder(8, 1), "adder", V.unit_dir("adder", "u", "key one"), waves=True)
    assert len({b1, b3, b4}) == 3 and _FakeRunner.builds == [b1, b3, b4]


def test_key_covers_module_target_and_toolchain(cache, monkeypatch):
    v = "module m; endmodule\n"
    base = V.model_dir(v, "m", ["clk", "rst"], "generic", False)
    assert base == V.model_dir(v, "m", ["clk", "rst"], "generic", False)
    others = [V.model_dir(v + " ", "m", ["clk", "rst"], "generic", False),
              V.model_dir(v, "n", ["clk", "rst"], "generic", False),
              V.model_dir(v, "m", ["clk", "rst", "a"], "generic", False),
              V.model_dir(v, "m", ["clk", "rst"], "ecp5", False),
              V.model_dir(v, "m", ["clk", "rst"], "generic", True)]
    monkeypatch.setattr(V, "_toolchain", "verilator 9.9; cocotb 9.9; c++ 99")
    others.append(V.model_dir(v, "m", ["clk", "rst"], "generic", False))
    assert len({base, *others}) == len(others) + 1


def test_a_model_found_built_is_not_rebuilt_and_is_marked_used(cache):
    top = _Adder(4, 3)
    _, b = V.build(top, "adder", V.unit_dir("adder", "u", "k"))
    stamp = b / "built"
    os.utime(stamp, (1, 1))
    V.build(_Adder(4, 3), "adder", V.unit_dir("adder", "u", "k"))
    assert _FakeRunner.builds == [b] and stamp.stat().st_mtime > 1


def test_an_interrupted_build_is_built_again(cache):
    """No stamp (the build stopped before it finished): the next build starts over."""
    _, b = V.build(_Adder(4, 5), "adder", V.unit_dir("adder", "u", "k"))
    (b / "built").unlink()
    V.build(_Adder(4, 5), "adder", V.unit_dir("adder", "u", "k"))
    assert _FakeRunner.builds == [b, b]


def _model(cache: Path, name: str, size: int, used: float) -> Path:
    m = cache / name
    (m / "sim_build").mkdir(parents=True)
    (m / "sim_build" / "sim").write_bytes(b"x" * size)
    stamp = m / "sim_build" / "built"
    stamp.write_text("sim\n")
    os.utime(stamp, (used, used))
    return m


def test_eviction_least_recently_used_first(tmp_path, monkeypatch):
    monkeypatch.setattr(V, "MODEL_CACHE_BYTES", 3100)  # four of ~1 kB: one goes
    now = time.time()
    day = 86400
    old = _model(tmp_path, "old", 1000, now - 3 * day)
    mid = _model(tmp_path, "mid", 1000, now - 2 * day)
    recent = _model(tmp_path, "recent", 1000, now - 60)  # used in the last hour: stays
    new = _model(tmp_path, "new", 1000, now - 5 * day)  # the one just built: stays
    V._evict(tmp_path, new)
    assert not old.exists() and mid.exists() and recent.exists() and new.exists()
    monkeypatch.setattr(V, "MODEL_CACHE_BYTES", 0)
    V._evict(tmp_path, new)
    assert not mid.exists() and recent.exists() and new.exists()


def test_unwritable_cache_falls_back_to_the_build_root(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("BIMAMBA_MODEL_CACHE", str(blocker / "models"))
    with V.use_build_root(tmp_path / "build"):
        assert V.model_cache() == (tmp_path / "build" / "models").resolve()


def test_a_model_of_another_clone_finds_this_environments_vpi_library(monkeypatch):
    import cocotb_tools.config

    monkeypatch.setenv("LD_LIBRARY_PATH", "/somewhere")
    assert V._library_path().split(os.pathsep) == [str(cocotb_tools.config.libs_dir),
                                                   "/somewhere"]


def test_builds_compile_through_ccache_unless_told_otherwise(monkeypatch):
    monkeypatch.delenv("OBJCACHE", raising=False)
    monkeypatch.setenv("MAKEFLAGS", "")
    env = verilator_env()
    objcache = [f for f in env["MAKEFLAGS"].split() if f.startswith("OBJCACHE=")]
    assert len(objcache) == 1 and Path(objcache[0].split("=", 1)[1]).name == "ccache"
    assert env["CCACHE_BASEDIR"] == str(Path(__file__).resolve().parent.parent)
    monkeypatch.setenv("MAKEFLAGS", "OBJCACHE=")
    assert verilator_env()["MAKEFLAGS"].count("OBJCACHE") == 1


def test_the_key_is_the_same_in_another_clone(tmp_path, monkeypatch):
    """Nothing of the clone's location enters the key (the waivers' comment names the clone's
    rtl/lint.vlt): a model built in one clone is found by the next."""
    import rtl.emit

    v = "module m; endmodule\n"
    here = V.model_dir(v, "m", ["clk", "rst"], "generic", False)
    other = tmp_path / "elsewhere" / "rtl" / "lint.vlt"
    other.parent.mkdir(parents=True)
    other.write_text(rtl.emit.LINT_WAIVERS.read_text())
    monkeypatch.setattr(rtl.emit, "LINT_WAIVERS", other)
    assert str(other) in rtl.emit.waiver_config([Path("/model.v")])
    assert V.model_dir(v, "m", ["clk", "rst"], "generic", False) == here
