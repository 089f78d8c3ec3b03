"""Storage figures, against the Bi-Mamba paper and the brief's derived numbers."""

import pytest

from energy.footprint import GIB, MAMBA2_VOCAB, footprint
from model.config import get_preset


def test_paper_storage_2p7b_reproduced_with_mamba2_vocab():
    fp = footprint(get_preset("2.7B"), vocab_size=MAMBA2_VOCAB)
    assert fp.gib(fp.fp16_bytes) == pytest.approx(5.03, abs=0.01)
    assert fp.gib(fp.bimamba_bytes) == pytest.approx(0.55, abs=0.01)


def test_bimamba_vocab_and_state():
    fp = footprint(get_preset("2.7B"))
    assert fp.fp16_bytes / 1e9 == pytest.approx(5.31, abs=0.01)  # brief: FP16 weights 5.31 GB
    assert fp.bimamba_bytes / 1e9 == pytest.approx(0.49, abs=0.01)  # 1-bit + FP16 embedding
    assert fp.state_values / 1e6 == pytest.approx(41.9, abs=0.05)  # brief: 41.9 M values
    assert fp.binarised_params + fp.embedding_params + fp.other_params == fp.params
    assert fp.gib(GIB) == 1.0
