"""Table units of the SSM datapath, exhaustive over their input range against the golden model."""

import numpy as np
import pytest

from cosim.units import run_stream_unit
from model.golden import layer as G
from rtl.dsp import DSP_TARGETS
from rtl.emit import emit, lint, write_if_changed
from rtl.nonlinear import DECAY_LATENCY, SOFTPLUS_LATENCY, Decay, Softplus

from .conftest import make_layer


@pytest.fixture(scope="module")
def layer():
    return make_layer("small", 0)[1]


def _unsigned(v, bits):
    return [int(x) & ((1 << bits) - 1) for x in v]


# The ECP5 builds of the exhaustive checks run in `make test-slow` (CI runs both): the same
# tables through the MULT18X18D model, 1.1 M vectors; make test keeps the ECP5 scan and
# projection builds.
TARGETS = [pytest.param(t, marks=pytest.mark.slow) if t == "ecp5" else t for t in DSP_TARGETS]


@pytest.mark.parametrize("dsp", TARGETS)
def test_softplus_exhaustive(layer, dsp):
    """Both multiplier targets: ``ecp5`` runs the products through the MULT18X18D model."""
    q = layer
    f = q.fmt["dt_in"]
    x = np.arange(f.min_int, f.max_int + 1)  # every code of dt_raw + dt_bias
    want = G.softplus_core(q, x)
    res = run_stream_unit(Softplus(q), "softplus", q.digest(), "exhaustive",
                          _unsigned(x, f.bits), [int(v) for v in want], dsp=dsp)
    print(res)
    assert res["mismatches"] == 0, res["first_mismatch"]
    assert res["vectors"] == 1 << f.bits and res["latency_measured"] == SOFTPLUS_LATENCY


@pytest.mark.parametrize("dsp", TARGETS)
def test_decay_exhaustive(layer, dsp):
    q = layer
    f = q.fmt["dt"]
    dt = np.arange(0, f.max_int + 1)  # every dt code, each against every head's A
    inputs, want = [], []
    for h in range(q.cfg.nheads):
        ak = int(q.a2[h]) & ((1 << q.spec.param_bits) - 1)
        inputs += [int(d) | (ak << f.bits) for d in dt]
        heads = np.zeros((len(dt), q.cfg.nheads), np.int64)
        heads[:, h] = dt
        want += [int(v) for v in G.decay(q, heads)[:, h]]
    res = run_stream_unit(Decay(q), "decay", q.digest(), "exhaustive", inputs, want, dsp=dsp)
    print(res)
    assert res["mismatches"] == 0, res["first_mismatch"]
    assert res["latency_measured"] == DECAY_LATENCY


def test_units_with_stalls(layer):
    q = layer
    f = q.fmt["dt_in"]
    rng = np.random.default_rng(0)
    x = rng.integers(f.min_int, f.max_int + 1, 3000)
    res = run_stream_unit(Softplus(q), "softplus", q.digest(), "stalls", _unsigned(x, f.bits),
                          [int(v) for v in G.softplus_core(q, x)], idle=0.3, backpressure=0.3)
    assert res["mismatches"] == 0, res["first_mismatch"]
    fd = q.fmt["dt"]
    dt = rng.integers(0, fd.max_int + 1, 2000)
    h = rng.integers(0, q.cfg.nheads, 2000)
    ak = [int(q.a2[i]) & ((1 << q.spec.param_bits) - 1) for i in h]
    heads = np.zeros((2000, q.cfg.nheads), np.int64)
    heads[np.arange(2000), h] = dt
    want = G.decay(q, heads)[np.arange(2000), h]
    res = run_stream_unit(Decay(q), "decay", q.digest(), "stalls",
                          [int(d) | (a << fd.bits) for d, a in zip(dt, ak)],
                          [int(v) for v in want], idle=0.3, backpressure=0.3)
    assert res["mismatches"] == 0, res["first_mismatch"]


@pytest.mark.parametrize("unit", [Softplus, Decay])
def test_units_lint_clean(layer, unit, tmp_path):
    path = tmp_path / "rtl" / "unit.v"
    write_if_changed(path, emit(unit(layer), "unit"))
    lint(path)
