"""Generators whose channel counts follow a table, not ``min(channel_base // res, channel_max)``: the config's
``channels_per_res``, reading it off key shapes (state dicts, rosinality files) and saving in every format."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from stylemotion.checkpoints import (WRITABLE_FORMATS, infer_config, load_generator, official_from_rosinality,
                                     rosinality_from_official, save_generator, state_dict_from_generator)
from stylemotion.checkpoints.official import infer_channel_params
from stylemotion.errors import CheckpointError, ConfigError
from stylemotion.models.stylegan2 import Generator, GeneratorConfig
from stylemotion.models.stylegan2_ops import setup_filter
from tests.helpers import make_generator

from .official_pickle import write_official_pickle

TABLE = {4: 48, 8: 48, 16: 32, 32: 24}  # no channel_base / channel_max pair gives this (48*8 > 33*16 - 1)


def table_config(**overrides) -> GeneratorConfig:
    cfg = dict(z_dim=16, w_dim=16, img_resolution=32, mapping_layers=2, channels_per_res=TABLE)
    cfg.update(overrides)
    return GeneratorConfig(**cfg).validate()


def table_generator(seed: int = 3) -> Generator:
    """Seeded random weights, non-zero noise strengths and biases (``make_generator``), channels from TABLE."""
    G = make_generator(seed=seed, img_resolution=32, channel_base=32768, channel_max=512, channels_per_res=TABLE)
    assert G.config == table_config()
    return G


def render(G: Generator, seed: int = 0, n: int = 2) -> torch.Tensor:
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G(z, truncation_psi=0.7, noise_mode="const")


def rosinality_channels(size: int, channel_multiplier: int, divisor: int) -> dict[int, int]:
    """rosinality's ``Generator.channels`` (model.py), divided by ``divisor`` to keep the test small."""
    full = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
            256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    return {res: ch // divisor for res, ch in full.items() if res <= size}


def rosinality_g_ema(size: int, style_dim: int, n_mlp: int, channels: dict[int, int], seed: int) -> dict:
    """A state dict laid out key by key as rosinality's ``Generator(size, style_dim, n_mlp, ...).state_dict()``
    (``style.{i}``, ``input.input``, ``conv1``, ``to_rgb1``, ``convs``, ``to_rgbs``, ``noises``), written here
    without our converter, with seeded random values."""
    rng = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=rng)

    kernel = setup_filter([1, 3, 3, 1]) * 4
    g: dict[str, torch.Tensor] = {}
    for i in range(1, n_mlp + 1):  # style.0 is PixelNorm, no parameters
        g[f"style.{i}.weight"] = randn(style_dim, style_dim) * 100  # EqualLinear stores randn / lr_mul
        g[f"style.{i}.bias"] = randn(style_dim) * 0.1

    def styled_conv(name, cin, cout, upsample):
        g[f"{name}.conv.weight"] = randn(1, cout, cin, 3, 3)
        g[f"{name}.conv.modulation.weight"] = randn(cin, style_dim)
        g[f"{name}.conv.modulation.bias"] = torch.ones(cin) + 0.1 * randn(cin)
        if upsample:
            g[f"{name}.conv.blur.kernel"] = kernel
        g[f"{name}.noise.weight"] = 0.3 * randn(1)
        g[f"{name}.activate.bias"] = 0.3 * randn(cout)

    def to_rgb(name, cin, upsample):
        if upsample:
            g[f"{name}.upsample.kernel"] = kernel
        g[f"{name}.conv.weight"] = 0.2 * randn(1, 3, cin, 1, 1)
        g[f"{name}.conv.modulation.weight"] = randn(cin, style_dim)
        g[f"{name}.conv.modulation.bias"] = torch.ones(cin)
        g[f"{name}.bias"] = 0.1 * randn(1, 3, 1, 1)

    g["input.input"] = randn(1, channels[4], 4, 4)
    styled_conv("conv1", channels[4], channels[4], upsample=False)
    to_rgb("to_rgb1", channels[4], upsample=False)
    resolutions = sorted(channels)
    for j, res in enumerate(resolutions[1:]):
        cin, cout = channels[res // 2], channels[res]
        styled_conv(f"convs.{2 * j}", cin, cout, upsample=True)
        styled_conv(f"convs.{2 * j + 1}", cout, cout, upsample=False)
        to_rgb(f"to_rgbs.{j}", cout, upsample=True)
    num_layers = 2 * (len(resolutions) - 1) + 1
    for layer in range(num_layers):
        res = 2 ** ((layer + 5) // 2)
        g[f"noises.noise_{layer}"] = randn(1, 1, res, res)
    return g


# --- the config field ---------------------------------------------------------------------------------------------

def test_table_is_hashable_pairs_whichever_way_it_is_given():
    from_pairs = GeneratorConfig(img_resolution=32, channels_per_res=[(32, 24), (4, 48), (16, 32), (8, 48)])
    from_json_keys = GeneratorConfig(img_resolution=32, channels_per_res={str(k): v for k, v in TABLE.items()})
    cfg = GeneratorConfig(img_resolution=32, channels_per_res=TABLE).validate()
    assert cfg.channels_per_res == ((4, 48), (8, 48), (16, 32), (32, 24))
    assert cfg == from_pairs == from_json_keys and len({cfg, from_pairs, from_json_keys}) == 1
    assert [cfg.channels(r) for r in cfg.block_resolutions] == [48, 48, 32, 24]
    G = Generator(table_config())
    assert [b.conv1.weight.shape[0] for b in G.synthesis.blocks()] == [48, 48, 32, 24]
    assert G.synthesis.b16.conv0.weight.shape[:2] == (32, 48)


def test_table_round_trips_through_json_and_official_kwargs():
    cfg = table_config(num_fp16_res=2, conv_clamp=256.0)
    data = cfg.to_dict()
    assert data["channels_per_res"] == TABLE
    assert GeneratorConfig.from_dict(json.loads(json.dumps(data))) == cfg  # JSON keys are strings
    kwargs = cfg.to_init_kwargs()
    synth = kwargs["synthesis_kwargs"]
    assert synth["channels_per_res"] == TABLE
    assert {"channel_base", "channel_max", "num_fp16_res", "conv_clamp", "architecture"} <= set(synth)
    assert GeneratorConfig.from_init_kwargs(kwargs) == cfg
    assert GeneratorConfig.from_init_kwargs(json.loads(json.dumps(kwargs))) == cfg
    flat = {k: v for k, v in kwargs.items() if k != "synthesis_kwargs"}
    flat.update(synth)  # the stylegan3 repository's layout
    assert GeneratorConfig.from_init_kwargs(flat) == cfg


def test_formula_configs_are_written_as_before():
    cfg = GeneratorConfig(img_resolution=64)
    assert cfg.channels_per_res is None and "channels_per_res" not in cfg.to_dict()
    assert set(cfg.to_init_kwargs()["synthesis_kwargs"]) == {"channel_base", "channel_max", "num_fp16_res",
                                                             "conv_clamp", "architecture"}
    assert [cfg.channels(r) for r in cfg.block_resolutions] == [512] * 5


@pytest.mark.parametrize("table, match", [
    ({4: 48, 8: 48, 16: 32}, r"every resolution \[4, 8, 16, 32\].*missing \[32\]"),
    ({**TABLE, 64: 16}, r"unexpected \[64\]"),
    ({**TABLE, 16: 0}, r"channels_per_res\[16\] must be a positive integer, got 0"),
    ({**TABLE, 8: 40.5}, r"channels_per_res\[8\] must be a positive integer, got 40\.5"),
    ({**TABLE, "x8": 4}, r"keys must be resolutions \(integers\), got \['x8'\]"),
    ({**TABLE, "8": 40}, r"names a resolution twice"),
    (48, r"must map each resolution to a channel count, got 48"),
])
def test_bad_tables_are_refused_naming_the_value(table, match):
    with pytest.raises(ConfigError, match=match):
        GeneratorConfig(img_resolution=32, channels_per_res=table).validate()
    with pytest.raises(ConfigError, match=match):
        GeneratorConfig.from_dict({"img_resolution": 32, "channels_per_res": table})


# --- reading the table off key shapes -----------------------------------------------------------------------------

def test_infer_channel_params_prefers_the_formula():
    assert infer_channel_params(rosinality_channels(1024, 2, 1)) == {"channel_base": 32768, "channel_max": 512}
    assert infer_channel_params({4: 16, 8: 16, 16: 8}) == {"channel_base": 128, "channel_max": 16}
    # channel_multiplier=4: 1024 channels at 64x64 after 512 at 32x32; no formula gives that
    table = rosinality_channels(256, 4, 1)
    assert infer_channel_params(table) == {"channels_per_res": table}
    assert infer_channel_params(TABLE) == {"channels_per_res": TABLE}


def test_state_dict_of_a_table_generator_infers_the_table(tmp_path):
    G = table_generator()
    assert infer_config(state_dict_from_generator(G), where="x") == G.config
    # a table that the formula can express is read back as base/max, with the same channels
    H = make_generator(channels_per_res={4: 16, 8: 16, 16: 8})
    cfg = infer_config(state_dict_from_generator(H), where="x")
    assert cfg.channels_per_res is None and (cfg.channel_base, cfg.channel_max) == (128, 16)
    assert [cfg.channels(r) for r in (4, 8, 16)] == [16, 16, 8]


# --- rosinality ---------------------------------------------------------------------------------------------------

def test_table_generator_rosinality_both_directions(tmp_path):
    G = table_generator()
    sd = state_dict_from_generator(G)
    ckpt = rosinality_from_official(sd, G.config)
    g = ckpt["g_ema"]
    assert g["conv1.conv.weight"].shape == (1, 48, 48, 3, 3)
    assert g["convs.2.conv.weight"].shape == (1, 32, 48, 3, 3)  # 16x16 upsampling conv: 48 in, 32 out
    assert g["to_rgbs.2.conv.weight"].shape == (1, 3, 24, 1, 1)
    back, back_cfg, has_avg = official_from_rosinality(ckpt, where="ros")
    assert has_avg and back_cfg == G.config and back_cfg.channels_per_res == tuple(TABLE.items())
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert back[key].shape == value.shape and back[key].dtype == value.dtype, key
        assert torch.equal(back[key], value), key
    torch.save(ckpt, tmp_path / "ros.pt")
    H = load_generator(tmp_path / "ros.pt")
    assert H.checkpoint_info.format == "rosinality" and H.config == G.config
    torch.testing.assert_close(render(H), render(G), atol=1e-5, rtol=0)
    again = rosinality_from_official(state_dict_from_generator(H), H.config)
    assert set(again["g_ema"]) == set(g) and all(torch.equal(again["g_ema"][k], g[k]) for k in g)


def test_rosinality_channel_multiplier_4_checkpoint_loads(tmp_path):
    channels = rosinality_channels(64, 4, 32)  # {4: 16, 8: 16, 16: 16, 32: 16, 64: 32}: wider at 64x64
    assert channels[64] > channels[32]
    g_ema = rosinality_g_ema(64, 16, 3, channels, seed=7)
    ckpt = {"g_ema": g_ema, "args": argparse.Namespace(size=64, n_mlp=3, channel_multiplier=4)}
    torch.save(ckpt, tmp_path / "cm4.pt")
    G = load_generator(tmp_path / "cm4.pt")
    assert G.checkpoint_info.format == "rosinality"
    assert G.config.channels_per_res == tuple(channels.items())
    assert (G.config.img_resolution, G.config.mapping_layers, G.num_ws) == (64, 3, 10)
    assert torch.equal(G.synthesis.b64.conv0.weight, g_ema["convs.6.conv.weight"][0])
    assert torch.equal(G.synthesis.b64.conv1.noise_const, g_ema["noises.noise_8"][0, 0])
    # writing it back gives rosinality's own layout, tensor for tensor
    again = rosinality_from_official(state_dict_from_generator(G), G.config)["g_ema"]
    assert set(again) == set(g_ema) and all(torch.equal(again[k], g_ema[k]) for k in g_ema)
    img = render(G, n=1)
    assert img.shape == (1, 3, 64, 64) and bool(torch.isfinite(img).all())


# --- every format -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", [*WRITABLE_FORMATS, "network_pickle"])
def test_table_generator_round_trips_in_every_format(tmp_path, monkeypatch, fmt):
    G = table_generator()
    if fmt == "network_pickle":
        # an official-layout pickle; the table travels in G_ema's init kwargs (a stylemotion extension key)
        path = write_official_pickle(G, tmp_path / "g.pkl", monkeypatch)
    else:
        path = save_generator(G, tmp_path / f"g.{fmt}", format=fmt)
    H = load_generator(path)
    assert H.checkpoint_info.format == fmt
    assert H.config == G.config and H.config.channels_per_res == tuple(TABLE.items())
    torch.testing.assert_close(render(H), render(G), atol=1e-5, rtol=0)
    if fmt != "network_pickle":
        assert [p.name for p in tmp_path.iterdir()] == [path.name], "temporary files left behind"


def test_invalid_table_in_a_file_names_the_file(tmp_path):
    G = table_generator()
    path = save_generator(G, tmp_path / "g.pt", format="state_dict")
    with pytest.raises(CheckpointError, match=r"g\.pt: .*channels_per_res must give every resolution"):
        load_generator(path, config={"channels_per_res": {4: 48, 8: 48, 16: 32}})
