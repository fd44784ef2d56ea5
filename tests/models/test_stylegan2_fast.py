"""FastSynthesis, the CPU inference plan, computes the official network: against NVlabs' outputs, and each of its
rewrites (Winograd, GEMM upsampling, box-filter FIR, folded constants) against the op it replaces."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stylemotion.errors import ConfigError
from stylemotion.models.stylegan2_fast import (_AT, _BT, FastSynthesis, fir4x4, upsample_conv3x3,
                                               upsample_conv_weight, winograd_conv3x3, winograd_weight)
from stylemotion.models.stylegan2_ops import setup_filter, upfirdn2d

from tests.helpers import make_generator

TOL = 1e-4  # the conformance tolerance (shared/conformance/README.md)

# Every rewrite on: Winograd down to the smallest layer, and each upsample / FIR form.
PLANS = {
    "eager": dict(target="eager"),
    "graph": dict(target="graph"),
    "all-winograd-gemm-box": dict(winograd_min_channels=1, winograd_min_resolution=4, upsample="gemm", fir="box"),
    "all-winograd-transpose-conv": dict(winograd_min_channels=1, winograd_min_resolution=4, upsample="transpose",
                                        fir="conv"),
    "no-winograd": dict(winograd_min_channels=None),
}


@pytest.mark.parametrize("plan", list(PLANS))
def test_plan_matches_the_official_outputs(plan, tiny_generator, tiny_io):
    """The conformance network's const-noise images, psi 1 and 0.7, W+ and style mixing, within 1e-4."""
    fast = FastSynthesis(tiny_generator.synthesis, **PLANS[plan])
    with torch.no_grad():
        for ws_key, img_key in (("ws_psi1", "img_const"), ("ws_psi07", "img_const_psi07"),
                                ("ws_wplus", "img_wplus"), ("ws_mixed", "img_mixed")):
            got = fast(tiny_io[ws_key])
            err = (got - tiny_io[img_key]).abs().max().item()
            assert err <= TOL, f"{plan}: {img_key} differs by {err:.2e}"


def test_the_plan_really_uses_each_rewrite(tiny_generator):
    everything = FastSynthesis(tiny_generator.synthesis, **PLANS["all-winograd-gemm-box"])
    kinds = {entry.split(": ")[1] for entry in everything.plan}
    assert kinds == {"winograd", "upsample"}, everything.plan
    none = FastSynthesis(tiny_generator.synthesis, **PLANS["no-winograd"])
    assert "winograd" not in {entry.split(": ")[1] for entry in none.plan}


def test_default_thresholds_pick_winograd_only_for_wide_layers_at_32_and_up():
    G = make_generator(img_resolution=64, channel_base=64 * 256, channel_max=256)  # 256 channels up to 64x64
    plan = dict(e.split(": ") for e in FastSynthesis(G.synthesis).plan)
    assert plan["b32.conv1"] == "winograd" and plan["b64.conv1"] == "winograd"
    assert plan["b16.conv1"] == "direct" and plan["b4.conv1"] == "direct"
    assert plan["b32.conv0"] == "transpose"  # eager default; the graph target uses the GEMM form
    assert dict(e.split(": ") for e in FastSynthesis(G.synthesis, target="graph").plan)["b32.conv0"] == "upsample"


@pytest.mark.parametrize("shape", [(1, 5, 8, 8), (3, 7, 12, 16), (2, 4, 4, 4)])
def test_winograd_equals_direct_convolution(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=gen)
    w = torch.randn(6, shape[1], 3, 3, generator=gen) / 3
    ref = F.conv2d(x.double(), w.double(), padding=1)
    got = winograd_conv3x3(x, winograd_weight(w), torch.tensor(_BT, dtype=torch.float32),
                           torch.tensor(_AT, dtype=torch.float32))
    assert got.shape == ref.shape
    assert (got.double() - ref).abs().max().item() < 1e-4 * max(1.0, ref.abs().max().item())


def test_gemm_upsampling_equals_the_transposed_convolution():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 6, 7, generator=gen)
    w = torch.randn(4, 5, 3, 3, generator=gen)
    ref = F.conv_transpose2d(x.double(), w.double().transpose(0, 1), stride=2)  # [2, 4, 13, 15]
    got = upsample_conv3x3(x, upsample_conv_weight(w)).double()
    assert got.shape == (2, 4, 14, 16)
    torch.testing.assert_close(got[:, :, :13, :15], ref, rtol=1e-5, atol=1e-5)
    assert got[:, :, 13].abs().max() == 0 and got[:, :, :, 15].abs().max() == 0  # the FIR's zero padding


@pytest.mark.parametrize("how", ["conv", "box"])
def test_fir_forms_equal_the_reference_filter(how):
    x = torch.randn(2, 3, 11, 9, generator=torch.Generator().manual_seed(2))
    f = setup_filter([1, 3, 3, 1])
    ref = upfirdn2d(x, f, gain=4.0)
    torch.testing.assert_close(fir4x4(x, f, how), ref, rtol=1e-5, atol=1e-5)


def test_plan_handles_clamp_and_orig_architecture():
    for overrides in (dict(conv_clamp=0.05), dict(architecture="orig")):
        G = make_generator(**overrides)
        ws = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(3)))
        with torch.no_grad():
            ref = G.synthesis(ws, noise_mode="const")
            got = FastSynthesis(G.synthesis, **PLANS["all-winograd-gemm-box"])(ws)
        assert (got - ref).abs().max().item() < TOL, overrides


def test_plan_keeps_its_own_copy_of_the_weights():
    G = make_generator()
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(4)))
    fast = FastSynthesis(G.synthesis)
    with torch.no_grad():
        before = fast(ws)
        for p in G.parameters():
            p.mul_(2)
        after = fast(ws)
    assert torch.equal(before, after)


def test_bad_settings_are_refused():
    G = make_generator()
    with pytest.raises(ConfigError, match="target"):
        FastSynthesis(G.synthesis, target="gpu")
    with pytest.raises(ConfigError, match="upsample"):
        FastSynthesis(G.synthesis, upsample="nearest")
    with pytest.raises(ConfigError, match="fir"):
        FastSynthesis(G.synthesis, fir="fft")
    G.synthesis.b4.resample_filter.fill_(1 / 16)
    with pytest.raises(ConfigError, match="resample filter"):
        FastSynthesis(G.synthesis)


def _kernels_built() -> bool:
    from stylemotion import extension

    return bool(extension.status()["cpu"])


@pytest.mark.skipif(not _kernels_built(), reason="cpp_ext is not built (python -m stylemotion.extension build)")
def test_cpp_ext_winograd_transforms_match_the_official_outputs(tiny_generator, tiny_io):
    fast = FastSynthesis(tiny_generator.synthesis, winograd_min_channels=1, winograd_min_resolution=4, kernels=True)
    assert fast.kernels and sum("winograd" in e for e in fast.plan) == 4
    with torch.no_grad():
        for ws_key, img_key in (("ws_psi1", "img_const"), ("ws_wplus", "img_wplus")):
            err = (fast(tiny_io[ws_key]) - tiny_io[img_key]).abs().max().item()
            assert err <= TOL, f"{img_key} differs by {err:.2e}"
    G = make_generator(conv_clamp=0.05)  # the clamp inside the fused epilogue
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(6)))
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode="const")
        got = FastSynthesis(G.synthesis, winograd_min_channels=1, winograd_min_resolution=4, kernels=True)(ws)
    assert (got - ref).abs().max().item() < TOL


@pytest.mark.skipif(not _kernels_built(), reason="cpp_ext is not built (python -m stylemotion.extension build)")
def test_cpp_ext_winograd_ops_refuse_bad_shapes():
    ops = torch.ops.stylemotion
    with pytest.raises(RuntimeError, match="multiples of 4"):
        ops.winograd_input(torch.zeros(1, 2, 6, 8), torch.zeros(1, 2))
    with pytest.raises(RuntimeError, match=r"styles must be \[N, C\]"):
        ops.winograd_input(torch.zeros(1, 2, 8, 8), torch.zeros(1, 3))
    with pytest.raises(RuntimeError, match="float32 CPU tensor"):
        ops.winograd_input(torch.zeros(1, 2, 8, 8, dtype=torch.float64), torch.zeros(1, 2))
    with pytest.raises(RuntimeError, match=r"m must be \[36, N, K, 4\]"):
        ops.winograd_output(torch.zeros(36, 1, 2, 5), torch.zeros(1, 2), torch.zeros(1, 2, 8, 8), 8, 8, 0.2, None)
    with pytest.raises(RuntimeError, match=r"shift must be \[1, 2, 8, 8\]"):
        ops.winograd_output(torch.zeros(36, 1, 2, 4), torch.zeros(1, 2), torch.zeros(1, 2, 4, 4), 8, 8, 0.2, None)


def test_kernels_cannot_go_into_a_graph():
    with pytest.raises(ConfigError, match="kernels=True needs target='eager'"):
        FastSynthesis(make_generator().synthesis, target="graph", kernels=True)
