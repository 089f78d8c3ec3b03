"""Shared fixtures. Random tests take their seed from ``rng``; it is printed (shown by pytest on
failure) and can be forced with ``BIMAMBA_SEED=<n>`` to replay a failing vector."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from model.reference.checkpoint import load_block, synthetic_state_dict
from model.config import get_preset
from model.reference.checkpoint import synthetic_residual
from model.golden.quantize import QuantSpec, export_layer

SEEDS = [int(os.environ["BIMAMBA_SEED"])] if "BIMAMBA_SEED" in os.environ else [0, 1, 2]


@pytest.fixture(params=SEEDS, ids=lambda s: f"seed{s}")
def seed(request) -> int:
    print(f"seed={request.param} (replay with BIMAMBA_SEED={request.param})")
    return request.param


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def make_layer(preset: str = "tiny", seed: int = 0, spec: QuantSpec | None = None,
               perturb: bool = True):
    """A float64 block from a synthetic checkpoint, and its export.

    ``perturb`` gives norms and D non-trivial values (Mamba-2 init sets them to 1), as a
    trained checkpoint would have.
    """
    cfg = get_preset(preset)
    sd = synthetic_state_dict(cfg, seed, n_layers=1)
    if perturb:
        g = torch.Generator().manual_seed(seed + 100)
        for key in ("norm.weight", "mixer.norm.weight", "mixer.D"):
            k = "backbone.layers.0." + key
            sd[k] = sd[k] * (1 + 0.3 * torch.randn(sd[k].shape, generator=g))
    block = load_block(sd, cfg, 0, torch.float64)
    q = export_layer(block, spec or QuantSpec(), synthetic_residual(cfg, 32, seed + 1))
    return block, q


def usage_error(capsys, main, argv: list[str]) -> str:
    """The usage error of ``main(argv)``: exit status 2, nothing on stdout and exactly one line
    on stderr (no traceback, no usage block), returned without its newline."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    return err.rstrip("\n")


@pytest.fixture(scope="session")
def tiny_layer():
    return make_layer("tiny", 0)
