"""The GPU inference plan (``CudaSynthesis``) on the CPU: float32 equal to the reference network within float
tolerance across configs, each rearrangement equal to the op it replaces, FP16 close by PSNR, and the fallback for
networks it cannot take."""
from __future__ import annotations

import functools

import pytest
import torch

from stylemotion.checkpoints import load_generator
from stylemotion.engines.torch_engine import TorchEngine
from stylemotion.errors import ConfigError
from stylemotion.models.stylegan2_cuda import (CudaSynthesis, epilogue, folded_up_weight, image_up2,
                                               interleave_phases, post_conv_up, rgb_out)
from stylemotion.models.stylegan2_ops import bias_act, conv2d_resample, setup_filter, upsample2d
from tests.helpers import make_generator, psnr


def ws_for(G, n, seed=0):
    with torch.no_grad():
        return G.mapping(torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)))


def assert_same(out, ref, what):
    err = (out - ref).abs().max().item()
    assert err <= 1e-4 * max(1.0, ref.abs().max().item()), f"{what}: max error {err:.2e}"


@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_upsampling_equals_transpose_then_fir(channels_last):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 7, 6, generator=g)
    weight = torch.randn(4, 5, 3, 3, generator=g)
    f = setup_filter([1, 3, 3, 1])
    ref = conv2d_resample(x, weight, f, up=2, padding=1)  # the official transposed conv + FIR (gain 4)
    z = torch.nn.functional.conv2d(x, folded_up_weight(weight, f), padding=1)
    if channels_last:
        z = z.contiguous(memory_format=torch.channels_last)
    out = interleave_phases(z, channels_last)
    assert out.shape == ref.shape == (2, 4, 14, 12)
    assert_same(out, ref, "folded up convolution")
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_image_up2_equals_upfirdn():
    img = torch.randn(3, 3, 5, 8, generator=torch.Generator().manual_seed(2))
    assert_same(image_up2(img), upsample2d(img, setup_filter([1, 3, 3, 1])), "image upsampling")


def test_epilogue_equals_bias_act():
    g = torch.Generator().manual_seed(3)
    z, d = torch.randn(2, 4, 3, 3, generator=g), torch.rand(2, 4, generator=g) + 0.5
    noise, bias = torch.randn(3, 3, generator=g), torch.randn(4, generator=g)
    ref = bias_act(z * d[:, :, None, None] + noise, bias, act="lrelu", gain=2 ** 0.5, clamp=0.7)
    shift = (2 ** 0.5) * (noise[None, None] + bias[None, :, None, None])
    assert_same(epilogue(z, 2 ** 0.5 * d, shift, 0.7, None), ref, "epilogue")
    s = torch.rand(2, 4, generator=g)
    assert_same(epilogue(z, 2 ** 0.5 * d, shift, 0.7, s), ref * s[:, :, None, None], "epilogue with premod")
    z4 = torch.randn(2, 16, 3, 3, generator=g)  # an up layer's phases: interleaved, then the same epilogue
    shift6 = torch.randn(1, 4, 6, 6, generator=g)
    assert_same(post_conv_up(z4, d, shift6, None, s, False),
                epilogue(interleave_phases(z4, False), d, shift6, None, s), "post_conv_up")


def test_rgb_out_equals_bias_clamp_and_skip():
    g = torch.Generator().manual_seed(4)
    y, img, bias = torch.randn(2, 3, 8, 8, generator=g).half(), torch.randn(2, 3, 4, 4, generator=g), torch.randn(3)
    ref = (y.float() + bias[None, :, None, None]).clamp(-0.5, 0.5) + upsample2d(img, setup_filter([1, 3, 3, 1]))
    assert_same(rgb_out(y, bias, 0.5, img), ref, "rgb_out")


CONFIGS = {  # each built once (config-f 256 takes seconds to initialise); the tests never change them
    "small": functools.cache(lambda: make_generator(img_resolution=32, channel_base=256, channel_max=32,
                                                    num_fp16_res=2, conv_clamp=256)),
    "digiface-64": functools.cache(lambda: load_generator("digiface-64")),
    "ffhq-256": functools.cache(lambda: load_generator("ffhq-256")),
}


@pytest.mark.parametrize("name,batches,channels_last", [("small", (3,), False), ("small", (1,), True),
                                                        ("digiface-64", (3,), True), ("ffhq-256", (1, 3), True)])
def test_plan_equals_reference_fp32(name, batches, channels_last):
    G = CONFIGS[name]()
    plan = CudaSynthesis(G.synthesis, fp16_blocks="none", channels_last=channels_last)
    for batch in batches:
        ws = ws_for(G, batch, seed=batch)
        with torch.no_grad():
            ref = G.synthesis(ws, precision="fp32")
            out = plan(ws)
        assert out.dtype == torch.float32 and out.shape == ref.shape
        assert_same(out, ref, f"{name} batch {batch}")


def test_plan_fp16_close_to_fp32():
    G = CONFIGS["small"]()
    ws = ws_for(G, 2)
    with torch.no_grad():
        ref = G.synthesis(ws, precision="fp32")
        official = CudaSynthesis(G.synthesis, fp16_blocks="official")(ws)
        everything = CudaSynthesis(G.synthesis, fp16_blocks="all")(ws)
    assert (official - ref).abs().max() > 1e-5, "the FP16 blocks ran"
    assert float(psnr(official, ref).min()) >= 40 and float(psnr(everything, ref).min()) >= 40


def test_engine_uses_the_plan_and_falls_back_visibly():
    G = CONFIGS["small"]()
    ws = ws_for(G, 2)
    engine = TorchEngine(G, plan="cuda")
    assert "cuda plan" in engine.info.detail
    assert_same(engine.run(ws), G.synthesis(ws, precision="fp32"), "engine")
    odd = make_generator(img_resolution=32, channel_base=256, channel_max=32, num_fp16_res=2, conv_clamp=256)
    with torch.no_grad():
        for block in odd.synthesis.blocks():  # a non-binomial FIR: the plan cannot fold it
            block.resample_filter.copy_(setup_filter([1, 2, 1, 1]))
    with pytest.raises(ConfigError, match=r"\[1, 3, 3, 1\]"):
        CudaSynthesis(odd.synthesis)
    fallback = TorchEngine(odd, plan="cuda")
    assert fallback.plan == "reference" and "cuda plan cannot take it" in fallback.info.detail
    with pytest.raises(ConfigError, match="constant noise"):
        TorchEngine(G, plan="cuda", noise_mode="random")
    with pytest.raises(ConfigError, match="fp16_blocks"):
        TorchEngine(G, plan="cuda", fp16_blocks="most")
