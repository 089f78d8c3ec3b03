"""SSM scan unit: generator checks and bit-exact co-simulation against the golden model."""

import numpy as np
import pytest
import torch

from cosim.scan import ScanCase, golden_scan, random_scan_inputs, run_scan_case
from model.reference.checkpoint import load_block, synthetic_state_dict
from model.config import BiMambaConfig
from model.reference.checkpoint import synthetic_residual
from model.golden.quantize import QuantSpec, export_layer
from rtl.bram import BLOCK_RAM_MIN_DEPTH
from rtl.emit import emit, lint, write_if_changed
from rtl.ssm_scan import ScanConfig, SsmScan



def G_round(h_prev, q):
    """The state after a token with x = 0 and dt = softplus(dt_bias): dA * h, rounded."""
    from model.golden import layer as G
    from model.golden.bounds import scan_alignment
    dt = G.dt_softplus(q, np.zeros(q.cfg.nheads, np.int64))
    dA = G.decay(q, dt)
    al = scan_alignment(q)
    acc = (dA[:, None, None] * h_prev) << al["s1"]
    return q.fmt["ssm"].saturate(G.round_shift(acc, al["f_state"] - q.fmt["ssm"].frac))

SHAPES = {
    # name: (d_model, expand, headdim, d_state) -> H = expand * d_model / headdim
    "p16n16": (64, 2, 16, 16),
    "p8n8": (32, 2, 8, 8),
    "p4n32": (16, 2, 4, 32),
    # ten heads of one channel, N = 2: at 2 lanes ten cycles a token, the shortest token
    # the state RAM's read-to-write distance allows (the same state word is read in the cycle
    # it is written back)
    "h10p1n2": (10, 1, 1, 2),
}


def _layer(name: str, state_bits: int = 16):
    d_model, expand, headdim, d_state = SHAPES[name]
    cfg = BiMambaConfig(d_model=d_model, n_layer=1, d_state=d_state, headdim=headdim,
                        expand=expand, vocab_size=256)
    block = load_block(synthetic_state_dict(cfg, 0), cfg, 0, torch.float64)
    return export_layer(block, QuantSpec(state_bits=state_bits),
                        synthetic_residual(cfg, 32, 1))


@pytest.fixture(scope="module")
def layers():
    return {name: _layer(name) for name in SHAPES}


def test_config_errors(layers):
    q = layers["p8n8"]
    with pytest.raises(ValueError, match=r"lanes must divide d_state = 8 \(one of \[1, 2, 4, 8\]\), not 3"):
        ScanConfig(q, 3)
    with pytest.raises(TypeError, match="config must be a ScanConfig"):
        SsmScan(q)


def test_shape_checks_need_no_export():
    """ScanConfig.check_shape is the check ScanConfig itself runs, on the model's shape alone
    (command lines call it before exporting a layer)."""
    cfg = BiMambaConfig(d_model=64, n_layer=1, d_state=8, headdim=16, vocab_size=256)
    ScanConfig.check_shape(cfg, 4)
    with pytest.raises(ValueError, match=r"lanes must divide d_state = 8 \(one of \[1, 2, 4, 8\]\), not 3"):
        ScanConfig.check_shape(cfg, 3)
    with pytest.raises(ValueError, match=r"lanes must divide d_state = 8 .*, not 0"):
        ScanConfig.check_shape(cfg, 0)
    tiny = BiMambaConfig(d_model=1, n_layer=1, d_state=2, headdim=1, expand=1, vocab_size=4)
    with pytest.raises(ValueError, match=r"nheads \* headdim \* d_state / lanes must be >= 10 "
                                         r"\(the state's read-to-write distance\), not 1"):
        ScanConfig.check_shape(tiny, 2)


def test_cycle_formula(layers):
    c = ScanConfig(layers["p16n16"], 4)
    # Counted register by register: softplus 29 (|x| log2 e 4, rounding; exp2 table 6; its
    # value 3; tail table 6; product 4; shift 3; sum; saturation), decay 15 (product 4,
    # rounding, table 6, value 3, saturation), prep 1 + 29 + 15; FIFO 2 and its output buffer 1,
    # head load 1; scan depth 19 at 4 lanes (11 to the state write: dt x 4, dtx, dtx B 4, sum,
    # h'; h' C 4, one lane-sum stage, accumulator, y sum, y); output 1. The state is read 1
    # after issue (its word registered three times to meet dtx at 5) and written 11 after: 10
    # cycles a token at least. (A table is 6 registers:
    # index and slope, the slope in the fabric, the multiplier's two, interpolation,
    # saturation.)
    assert c.cycles_per_token == 512 and c.latency == 45 + 3 + 1 + 19 + 1
    assert ScanConfig(layers["p16n16"], 16).latency == 45 + 3 + 1 + 20 + 1
    assert ScanConfig(layers["h10p1n2"], 2).cycles_per_token == 10
    three = BiMambaConfig(d_model=3, n_layer=1, d_state=2, headdim=1, expand=1, vocab_size=4)
    with pytest.raises(ValueError, match=r"lanes must be >= 10 \(the state's read-to-write "
                                         r"distance\), not 3"):
        ScanConfig.check_shape(three, 2)


def test_lint_clean(layers, tmp_path):
    path = tmp_path / "out" / "ssm_scan.v"  # any folder name: the waivers follow the file
    write_if_changed(path, emit(SsmScan(ScanConfig(layers["p8n8"], 4)), "ssm_scan"))
    lint(path)


def _check(res, stalls=False):
    print(res)
    assert res["mismatches"] == 0, res["first_mismatch"]
    if not stalls:
        assert res["cycles_measured"] == res["cycles_predicted"]


@pytest.mark.parametrize("shape, lanes", [("p16n16", 4), ("p8n8", 8), ("p4n32", 1),
                                           ("p16n16", 16), ("h10p1n2", 2)])
def test_random_sequences(layers, shape, lanes, seed):
    q = layers[shape]
    cfg = ScanConfig(q, lanes)
    rng = np.random.default_rng(seed)
    T = max(6, 80 // cfg.cycles_per_token)  # short tokens: enough of them to expose a bubble
    dt_raw, x, B, C = random_scan_inputs(q, T, rng)
    start = np.zeros(T, bool)
    start[[0, 4]] = True  # a second sequence begins at token 4: its state starts at zero
    res = run_scan_case(ScanCase(f"random_s{seed}", cfg, dt_raw, x, B, C, start, seed=seed))
    _check(res)
    assert res["token_spacing"] == [cfg.cycles_per_token] * (T - 1)


def test_first_token_after_reset_begins_a_sequence(layers):
    # start = 0 on the first token: the RAM holds random contents (--x-initial unique), which
    # must not leak in; the golden model starts from zero.
    q = layers["p8n8"]
    rng = np.random.default_rng(9)
    dt_raw, x, B, C = random_scan_inputs(q, 3, rng)
    _check(run_scan_case(ScanCase("after_reset", ScanConfig(q, 4), dt_raw, x, B, C,
                                  np.zeros(3, bool), seed=9)))


@pytest.mark.parametrize("shape, lanes", [("p8n8", 4), ("h10p1n2", 2)])
def test_late_b_and_c(layers, shape, lanes):
    q = layers[shape]
    rng = np.random.default_rng(4)
    dt_raw, x, B, C = random_scan_inputs(q, 5, rng)
    start = np.array([True, False, False, True, False])
    _check(run_scan_case(ScanCase("late_bc", ScanConfig(q, lanes), dt_raw, x, B, C, start,
                                  bc_idle=0.9, seed=4)), stalls=True)


@pytest.mark.parametrize("shape, lanes", [("p8n8", 2), ("p16n16", 16), ("h10p1n2", 2)])
def test_idle_and_backpressure(layers, shape, lanes, seed):
    q = layers[shape]
    rng = np.random.default_rng(seed + 20)
    dt_raw, x, B, C = random_scan_inputs(q, 4, rng)
    start = np.array([True, False, False, False])
    _check(run_scan_case(ScanCase(f"stall_s{seed}", ScanConfig(q, lanes), dt_raw, x, B, C,
                                  start, idle=0.3, backpressure=0.4, seed=seed)), stalls=True)


def test_corners(layers):
    """dt at both ends of its table, x/B/C at their rails (the state saturates), zero input."""
    q = layers["p8n8"]
    c, f = q.cfg, q.fmt
    H, P, N = c.nheads, c.headdim, c.d_state
    dt_raw = np.stack([np.full(H, f["dt_raw"].max_int), np.full(H, f["dt_raw"].min_int),
                       np.full(H, f["dt_raw"].max_int), np.zeros(H, np.int64),
                       np.full(H, f["dt_raw"].max_int), np.zeros(H, np.int64)])
    mx, mn = f["xbc_act"].max_int, f["xbc_act"].min_int
    x = np.stack([np.full((H, P), mx), np.full((H, P), mx), np.full((H, P), mn),
                  np.zeros((H, P), np.int64), np.full((H, P), mn), np.zeros((H, P), np.int64)])
    B = np.stack([np.full(N, mx), np.full(N, mx), np.full(N, mx), np.zeros(N, np.int64),
                  np.full(N, mn), np.zeros(N, np.int64)])
    C = np.stack([np.full(N, mx), np.full(N, mn), np.full(N, mx), np.zeros(N, np.int64),
                  np.full(N, mx), np.zeros(N, np.int64)])
    start = np.array([True, False, False, False, False, False])
    case = ScanCase("corners", ScanConfig(q, 4), dt_raw, x, B, C, start)
    states = []
    y = golden_scan(q, case, states)
    assert np.any(y == f["y"].max_int) and np.any(y == f["y"].min_int)  # rails reached
    h = np.stack(states)
    assert np.any(h == f["ssm"].max_int) and np.any(h == f["ssm"].min_int)  # state saturates
    assert np.all(h[3] == (G_round(h[2], q)))  # zero input: the state only decays
    _check(run_scan_case(case))


@pytest.mark.slow
def test_real_shape_2p7b_64_tokens():
    from cosim.scan import real_shape_case
    _check(run_scan_case(real_shape_case("2.7B", 64, 16)))


def test_ecp5_target(layers):
    """The ECP5 build through the vendor cells' models (fpga/models): the state in DP16KD
    blocks read into their output registers (4 lanes of 16 bits: four blocks), the products
    in MULT18X18D blocks. Bit-exact, the same cycles, and under stalls. (A read and a write of
    one word in the same cycle needs a token of 10 cycles, so a state of 10 words: too shallow
    for a block RAM; that bypass is tested on h10p1n2.)"""
    q = layers["p16n16"]
    cfg = ScanConfig(q, 4)
    assert cfg.cycles_per_token >= BLOCK_RAM_MIN_DEPTH  # the state takes DP16KDs
    rng = np.random.default_rng(33)
    dt_raw, x, B, C = random_scan_inputs(q, 4, rng)
    start = np.array([True, False, True, False])
    res = run_scan_case(ScanCase("ecp5", cfg, dt_raw, x, B, C, start, seed=33), dsp="ecp5")
    _check(res)
    _check(run_scan_case(ScanCase("ecp5_stall", cfg, dt_raw, x, B, C, start, idle=0.3,
                                  backpressure=0.4, seed=34), dsp="ecp5"), stalls=True)
