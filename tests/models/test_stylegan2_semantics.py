"""The official semantics, checked against small cases computed by hand (numpy float64, explicit loops)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stylemotion.errors import ConfigError, ShapeError
from stylemotion.models.stylegan2 import FullyConnectedLayer, Generator, GeneratorConfig, SynthesisLayer
from stylemotion.models.stylegan2_ops import modulated_conv2d, setup_filter, upsample2d
from tests.helpers import make_generator

SQRT2 = math.sqrt(2.0)
FIR = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0


def lrelu(x):
    return np.where(x >= 0, x, 0.2 * x)


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def fir_same(x: np.ndarray, pad0: int, pad1: int, gain: float) -> np.ndarray:
    """Pad (pad0 before, pad1 after) and convolve each channel with the 4x4 FIR (symmetric, so no flip)."""
    c, h, w = x.shape
    xp = np.zeros((c, h + pad0 + pad1, w + pad0 + pad1))
    xp[:, pad0:pad0 + h, pad0:pad0 + w] = x
    oh, ow = xp.shape[1] - 3, xp.shape[2] - 3
    out = np.zeros((c, oh, ow))
    for p in range(oh):
        for q in range(ow):
            out[:, p, q] = (xp[:, p:p + 4, q:q + 4] * FIR * gain).sum(axis=(1, 2))
    return out


def test_mapping_one_layer_by_hand():
    G = make_generator(z_dim=5, w_dim=4, mapping_layers=1, seed=3)
    z = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    W, b = np_(G.mapping.fc0.weight), np_(G.mapping.fc0.bias)
    zz = np_(z)
    x = zz / np.sqrt((zz ** 2).mean(axis=1, keepdims=True) + 1e-8)
    w = lrelu(x @ (W * 0.01 / math.sqrt(5)).T + b * 0.01) * SQRT2
    got = G.mapping(z)
    assert got.shape == (3, G.num_ws, 4)
    np.testing.assert_allclose(np_(got), np.repeat(w[:, None], G.num_ws, axis=1), rtol=1e-5, atol=1e-6)

    w_avg = np_(G.mapping.w_avg)
    trunc = np_(G.mapping(z, truncation_psi=0.5, truncation_cutoff=2))
    np.testing.assert_allclose(trunc[:, :2], np.repeat(w_avg + 0.5 * (w[:, None] - w_avg), 2, axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trunc[:, 2:], np.repeat(w[:, None], G.num_ws - 2, axis=1), rtol=1e-5, atol=1e-6)


def test_affine_is_equalized_linear_with_bias_init_one():
    fc = FullyConnectedLayer(6, 3, bias_init=1)
    x = torch.randn(2, 6)
    expected = np_(x) @ (np_(fc.weight) / math.sqrt(6)).T + 1.0
    np.testing.assert_allclose(np_(fc(x)), expected, rtol=1e-5, atol=1e-6)


def _by_hand_modconv(x, weight, styles, demodulate=True):
    """Per-sample modulated weights, demodulated, applied as a 3x3 correlation with zero padding 1."""
    n, i_ch, h, w = x.shape
    o_ch, _, k, _ = weight.shape
    out = np.zeros((n, o_ch, h, w))
    for s in range(n):
        wt = weight * styles[s][None, :, None, None]
        if demodulate:
            wt = wt / np.sqrt((wt ** 2).sum(axis=(1, 2, 3), keepdims=True) + 1e-8)
        xp = np.pad(x[s], ((0, 0), (1, 1), (1, 1)))
        for o in range(o_ch):
            for p in range(h):
                for q in range(w):
                    out[s, o, p, q] = (xp[:, p:p + k, q:q + k] * wt[o]).sum()
    return out


@pytest.mark.parametrize("fused", [True, False])
def test_one_modulated_conv_by_hand(fused):
    g = torch.Generator().manual_seed(1)
    x, weight, styles = torch.randn(2, 3, 5, 5, generator=g), torch.randn(4, 3, 3, 3, generator=g), torch.randn(2, 3, generator=g)
    got = modulated_conv2d(x, weight, styles, padding=1, fused=fused)
    np.testing.assert_allclose(np_(got), _by_hand_modconv(np_(x), np_(weight), np_(styles)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_one_upsampling_modulated_conv_by_hand(fused):
    """conv0: transposed conv (true convolution on the zero-stuffed input, 2H+1) then 4x4 FIR * 4, pad 1 -> 2H."""
    g = torch.Generator().manual_seed(2)
    n, i_ch, o_ch, h = 2, 3, 2, 4
    x, weight, styles = torch.randn(n, i_ch, h, h, generator=g), torch.randn(o_ch, i_ch, 3, 3, generator=g), torch.randn(n, i_ch, generator=g)
    f = setup_filter([1, 3, 3, 1])
    got = modulated_conv2d(x, weight, styles, up=2, padding=1, resample_filter=f, fused=fused)
    assert got.shape == (n, o_ch, 2 * h, 2 * h)
    xs, W, S = np_(x), np_(weight), np_(styles)
    expected = np.zeros((n, o_ch, 2 * h, 2 * h))
    for s in range(n):
        wt = W * S[s][None, :, None, None]
        wt = wt / np.sqrt((wt ** 2).sum(axis=(1, 2, 3), keepdims=True) + 1e-8)
        y = np.zeros((o_ch, 2 * h + 1, 2 * h + 1))
        for i in range(i_ch):
            for a in range(h):
                for b in range(h):
                    y[:, 2 * a:2 * a + 3, 2 * b:2 * b + 3] += xs[s, i, a, b] * wt[:, i]
        expected[s] = fir_same(y, 1, 1, gain=4.0)
    np.testing.assert_allclose(np_(got), expected, rtol=1e-5, atol=1e-5)


def test_one_image_upsample_by_hand():
    """Skip upsampling: samples at even indices, pad (2, 1), 4x4 FIR with gain 4."""
    img = torch.randn(1, 3, 3, 3, generator=torch.Generator().manual_seed(4))
    got = upsample2d(img, setup_filter([1, 3, 3, 1]))
    stuffed = np.zeros((3, 6, 6))
    stuffed[:, ::2, ::2] = np_(img)[0]
    np.testing.assert_allclose(np_(got)[0], fir_same(stuffed, 2, 1, gain=4.0), rtol=1e-5, atol=1e-6)


def test_synthesis_layer_noise_bias_activation_clamp_order():
    layer = SynthesisLayer(3, 2, w_dim=4, resolution=5, conv_clamp=0.5)
    with torch.no_grad():
        layer.noise_strength.fill_(0.7)
        layer.bias.copy_(torch.tensor([0.3, -0.2]))
    x, w = torch.randn(2, 3, 5, 5), torch.randn(2, 4)
    styles = np_(layer.affine(w))
    conv = _by_hand_modconv(np_(x), np_(layer.weight), styles)
    pre = conv + np_(layer.noise_const) * 0.7 + np.array([0.3, -0.2])[None, :, None, None]
    expected = np.clip(lrelu(pre) * SQRT2, -0.5, 0.5)
    np.testing.assert_allclose(np_(layer(x, w, noise_mode="const", fused=True)), expected, rtol=1e-5, atol=1e-5)
    none = _by_hand_modconv(np_(x), np_(layer.weight), styles) + np.array([0.3, -0.2])[None, :, None, None]
    np.testing.assert_allclose(np_(layer(x, w, noise_mode="none", fused=False)),
                               np.clip(lrelu(none) * SQRT2, -0.5, 0.5), rtol=1e-5, atol=1e-5)


def test_fused_and_batch_independent_forms_agree(small_generator):
    ws = small_generator.mapping(torch.randn(3, 16, generator=torch.Generator().manual_seed(5)))
    a = small_generator.synthesis(ws, fused_modconv=True)
    b = small_generator.synthesis(ws, fused_modconv=False)
    assert (a - b).abs().max().item() < 1e-5


def test_float32_matches_float64():
    G = make_generator(seed=7)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(6))
    img32 = G(z, truncation_psi=0.7)
    img64 = G.double()(z.double(), truncation_psi=0.7)
    assert img64.dtype == torch.float64 and img32.dtype == torch.float32
    scale = img64.abs().max().item()
    assert (img32.double() - img64).abs().max().item() < 1e-5 * max(scale, 1.0)


def test_noise_modes(small_generator):
    G = small_generator
    ws = G.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(8)))
    const1, const2 = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    torch.testing.assert_close(const1, const2, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(const1, G.synthesis(ws, noise_mode="none"))
    assert not torch.allclose(G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random"))
    with pytest.raises(ConfigError, match="noise_mode"):
        G.synthesis(ws, noise_mode="loud")


def test_ws_rows_are_shared_as_official():
    """Row k of ws feeds exactly the layers the official indexing says (ToRGB shares with the next conv0)."""
    G = make_generator(seed=9)
    rows_used: dict[str, list[int]] = {}
    w_idx = 0
    for block in G.synthesis.blocks():
        rows_used[f"b{block.resolution}"] = list(range(w_idx, w_idx + block.num_conv + block.num_torgb))
        w_idx += block.num_conv
    assert rows_used == {"b4": [0, 1], "b8": [1, 2, 3], "b16": [3, 4, 5]}
    assert G.num_ws == 6
    base = G.mapping(torch.randn(1, 16, generator=torch.Generator().manual_seed(1)))
    out = G.synthesis(base)
    for row in range(G.num_ws):  # every row matters
        ws = base.clone()
        ws[:, row] += 1.0
        assert not torch.allclose(G.synthesis(ws), out), f"row {row} has no effect"


def test_w_input_broadcasts_like_ws(small_generator):
    w = small_generator.mapping(torch.randn(2, 16))[:, 0]
    torch.testing.assert_close(small_generator.synthesis(w), small_generator.synthesis(w[:, None].repeat(1, 6, 1)),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("res, base, cmax, zdim, wdim, layers", [(4, 64, 8, 7, 5, 1), (8, 100, 12, 3, 9, 3),
                                                                  (64, 1024, 32, 8, 8, 2)])
def test_any_resolution_and_sizes(res, base, cmax, zdim, wdim, layers):
    G = make_generator(img_resolution=res, channel_base=base, channel_max=cmax, z_dim=zdim, w_dim=wdim,
                       mapping_layers=layers)
    assert G.num_ws == 2 * int(math.log2(res)) - 2
    img = G(torch.randn(2, zdim))
    assert img.shape == (2, 3, res, res) and torch.isfinite(img).all()


def test_orig_architecture_and_conditional_mapping():
    G = make_generator(architecture="orig", c_dim=3)
    assert not hasattr(G.synthesis.b8, "torgb") and hasattr(G.synthesis.b16, "torgb")
    c = torch.eye(3)[:2]
    assert G(torch.randn(2, 16), c).shape == (2, 3, 16, 16)
    with pytest.raises(ConfigError, match="conditional"):
        G(torch.randn(2, 16))


def test_shape_and_config_errors(small_generator):
    with pytest.raises(ShapeError, match=r"ws dimension 1 must be 6, got 5"):
        small_generator.synthesis(torch.zeros(1, 5, 16))
    with pytest.raises(ShapeError, match=r"z dimension 1 must be 16, got 8"):
        small_generator.mapping(torch.zeros(1, 8))
    with pytest.raises(ConfigError, match="img_resolution"):
        Generator(GeneratorConfig(img_resolution=48))
    with pytest.raises(ConfigError, match="resnet"):
        Generator(GeneratorConfig(img_resolution=8, architecture="resnet"))


def test_init_kwargs_round_trip(tiny_init_kwargs):
    cfg = GeneratorConfig.from_init_kwargs(tiny_init_kwargs)
    assert GeneratorConfig.from_init_kwargs(cfg.to_init_kwargs()) == cfg
    flat = {k: v for k, v in tiny_init_kwargs.items() if k != "synthesis_kwargs"}
    flat.update(tiny_init_kwargs["synthesis_kwargs"], fused_modconv_default="inference_only")  # stylegan3 form
    assert GeneratorConfig.from_init_kwargs(flat) == cfg
    stylegan3_defaults = {k: v for k, v in flat.items() if k not in ("num_fp16_res", "conv_clamp")}
    cfg3 = GeneratorConfig.from_init_kwargs(stylegan3_defaults)  # that repository defaults to FP16 + clamp 256
    assert (cfg3.num_fp16_res, cfg3.conv_clamp) == (4, 256)
    with pytest.raises(ConfigError, match="kernel_size"):
        GeneratorConfig.from_init_kwargs({**tiny_init_kwargs, "synthesis_kwargs": {"kernel_size": 5}})


def test_flops_count_matches_known_figure():
    """Config-f 256x256 is known as ~45 GMACs; 1024x1024 ~ 74 GMACs would be wrong by 2x if counted per MAC."""
    with torch.device("meta"):
        G = Generator(GeneratorConfig(img_resolution=256))
    macs = G.flops_per_image() / 2
    assert 40e9 < macs < 50e9


def psnr(a: torch.Tensor, ref: torch.Tensor) -> float:
    mse = (a.float() - ref.float()).square().mean().item()
    peak = (ref.max() - ref.min()).item()
    return 10 * math.log10(peak ** 2 / max(mse, 1e-20))


def _fp16_generator(device: str) -> Generator:
    return make_generator(img_resolution=64, channel_base=2048, channel_max=64, num_fp16_res=2, conv_clamp=256,
                          seed=11).to(device)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_fp16_blocks_close_to_fp32(device):
    """The FP16 blocks (the official pre-normalisation, FP16 convs, clamp) against float32 on the same ws. On CUDA
    with cuDNN deterministic: its other algorithms for these small shapes differ between calls by as much as the
    FP16 error itself (1.6e-2 against 1.8e-2 on an H200), so only determinism tells the paths apart."""
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        _fp16_blocks_close_to_fp32(device)


def _fp16_blocks_close_to_fp32(device):
    G = _fp16_generator(device)
    assert [b.use_fp16 for b in G.synthesis.blocks()] == [False, False, False, True, True]
    ws = G.mapping(torch.randn(4, 16, generator=torch.Generator().manual_seed(12)).to(device))
    ref = G.synthesis(ws, precision="fp32")
    fp16 = G.synthesis(ws, precision="fp16")
    assert fp16.dtype == torch.float32 and torch.isfinite(fp16).all()
    assert (fp16 - ref).abs().max() > 1e-4, "the FP16 path did not run"
    assert psnr(fp16, ref) >= 40, f"FP16 PSNR {psnr(fp16, ref):.1f} dB"
    # Same path, same inputs: equal up to the algorithm cuDNN (or the CPU's kernels) picks for the call (never
    # bit equality of convolutions across calls), which is far below the FP16 error above: a tolerance of a
    # twentieth of that error tells the paths apart.
    gap = (fp16 - ref).abs().max().item()

    def same_path(a, b, msg):
        diff = (a - b).abs().max().item()
        assert diff <= gap / 20, f"{msg}: differs by {diff:.2e}, the FP16 error is {gap:.2e}"

    same_path(G.synthesis(ws, force_fp32=True), ref, "force_fp32 must run float32")
    if device == "cuda":
        same_path(G.synthesis(ws), fp16, "on CUDA 'auto' must run the FP16 blocks")
    else:
        same_path(G.synthesis(ws), ref, "on the CPU 'auto' must stay in float32")


def test_fp16_clamp_keeps_huge_activations_finite():
    """Scaled-up biases would overflow FP16 (max 65504) without conv_clamp; with it the output stays finite."""
    G = _fp16_generator("cpu")
    with torch.no_grad():
        for block in G.synthesis.blocks():
            for layer in (block.conv1, getattr(block, "conv0", None)):
                if layer is not None:
                    layer.bias.fill_(1e5)
    ws = G.mapping(torch.randn(2, 16))
    out = G.synthesis(ws, precision="fp16")
    assert torch.isfinite(out).all()
    layer_out = {}
    G.synthesis.b64.conv1.register_forward_hook(lambda m, i, o: layer_out.update(x=o))
    G.synthesis(ws, precision="fp16")
    assert layer_out["x"].dtype == torch.float16 and layer_out["x"].abs().max().item() <= 256
