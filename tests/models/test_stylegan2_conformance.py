"""Our generator against the official NVlabs outputs in tests/data (see tests/data/README.md)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from stylemotion.models.stylegan2 import Generator, GeneratorConfig

from tests.helpers import DATA

TOL = 1e-4


def _harness():
    spec = importlib.util.spec_from_file_location("conformance_check", DATA / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "batch_independent"])
def test_every_official_case_within_tolerance(fused):
    def build(sd_path, init_kwargs):
        G = Generator(GeneratorConfig.from_init_kwargs(init_kwargs))
        G.load_state_dict(torch.load(sd_path, map_location="cpu", weights_only=True), strict=True)
        return (lambda z, truncation_psi=1.0: G.mapping(z, truncation_psi=truncation_psi),
                lambda ws, noise_mode="const": G.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused))

    results = _harness().run_checks(build, data_dir=str(DATA), tol=TOL, verbose=False)["tiny"]
    assert len(results) == 9
    bad = {case: v for case, v in results.items() if not (isinstance(v, float) and v <= TOL)}
    assert not bad, f"cases outside {TOL}: {bad}"


def test_per_layer_activations_match(tiny_generator, tiny_io):
    """Every intermediate the official code recorded (rows 0, 1; psi 1; const noise) matches ours."""
    ref = torch.load(DATA / "tiny_intermediates.pt", map_location="cpu", weights_only=True)
    G = tiny_generator
    got: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(module, inputs, output):
            got[name] = output[1] if name.endswith(".img") else output
        return hook

    for idx in range(G.mapping.num_layers):
        getattr(G.mapping, f"fc{idx}").register_forward_hook(keep(f"mapping.fc{idx}.out"))
    for block in G.synthesis.blocks():
        prefix = f"synthesis.b{block.resolution}"
        for layer in ("conv0", "conv1", "torgb"):
            if hasattr(block, layer):
                getattr(block, layer).register_forward_hook(keep(f"{prefix}.{layer}.out"))
                getattr(block, layer).affine.register_forward_hook(keep(f"{prefix}.{layer}.affine.out"))
        block.register_forward_hook(lambda m, i, o, p=prefix: got.update({f"{p}.x": o[0], f"{p}.img": o[1]}))

    z = tiny_io["z"][:2]
    with torch.no_grad():
        G.synthesis(G.mapping(z), noise_mode="const")
    missing = sorted(set(ref) - set(got))
    assert not missing, f"activations not captured: {missing}"
    for key, value in ref.items():
        diff = (got[key] - value).abs().max().item()
        assert diff < TOL, f"{key}: max abs diff {diff:.3e}"
