import pytest

from model.config import PRESETS, BiMambaConfig, get_preset


@pytest.mark.parametrize("name, d_inner, nheads, d_in_proj, conv_dim", [
    ("780M", 3072, 48, 6448, 3328),
    ("1.3B", 4096, 64, 8512, 4352),
    ("2.7B", 5120, 80, 10576, 5376),
])
def test_released_presets_match_brief(name, d_inner, nheads, d_in_proj, conv_dim):
    c = get_preset(name)
    assert (c.d_inner, c.nheads, c.d_in_proj, c.conv_dim) == (d_inner, nheads, d_in_proj, conv_dim)
    assert (c.d_state, c.headdim, c.d_conv, c.ngroups, c.vocab_size) == (128, 64, 4, 1, 32000)


def test_layers_per_preset():
    assert [PRESETS[n].n_layer for n in ("780M", "1.3B", "2.7B")] == [48, 48, 64]


def test_unknown_preset_names_choices():
    with pytest.raises(ValueError, match=r"preset must be one of 780M, 1.3B, 2.7B.*not '7B'"):
        get_preset("7B")


@pytest.mark.parametrize("kw, msg", [
    (dict(d_model=0, n_layer=1), "d_model must be a positive integer, not 0"),
    (dict(d_model=64, n_layer=1, headdim=48), "headdim must divide d_inner = expand \\* d_model = 128, not 48"),
    (dict(d_model=64, n_layer=1, headdim=16, ngroups=2), "ngroups must be 1 .*not 2"),
    (dict(d_model=64, n_layer=1, rms_eps=0.0), "rms_eps must be a positive float"),
])
def test_bad_config_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        BiMambaConfig(**kw)
