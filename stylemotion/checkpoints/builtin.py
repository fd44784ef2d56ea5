"""Built-in model names: the config-f architecture with seeded random weights, so demos and benchmarks run with
nothing downloaded. Images from them are not faces; every caller is told (``CheckpointInfo.random_weights``)."""
from __future__ import annotations

import torch

from ..models.stylegan2 import Generator, GeneratorConfig
from ..models.stylegan2_ops import setup_filter

# Config-f as trained on FFHQ by stylegan2-ada-pytorch (cbase 32768, cmax 512, 8 mapping layers, FP16 in the
# 4 highest resolutions with the activation clamp at 256).
BUILTIN_CONFIGS: dict[str, GeneratorConfig] = {
    f"ffhq-{res}": GeneratorConfig(img_resolution=res, num_fp16_res=4, conv_clamp=256.0) for res in (256, 512, 1024)
}
BUILTIN_SEED = 0
W_AVG_SAMPLES = 4096


def random_generator(config: GeneratorConfig, *, seed: int = BUILTIN_SEED) -> Generator:
    """A generator with the official initialisation drawn from a seeded generator (the global RNG is untouched).

    Weights, constant input and noise buffers are ``randn`` (mapping weights divided by their lr multiplier, as
    the official init stores them); biases as the official init (affine biases 1, others 0); noise strengths 0.
    ``w_avg`` is the mean of ``W_AVG_SAMPLES`` mapped latents, so truncation behaves as in a trained model.
    """
    with torch.device("meta"):
        G = Generator(config)
    G.to_empty(device="cpu")
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in G.named_modules():
            for pname, param in module.named_parameters(recurse=False):
                if pname == "weight" and hasattr(module, "weight_gain") and hasattr(module, "bias_gain"):
                    param.copy_(torch.randn(param.shape, generator=rng) / module.bias_gain)
                elif pname in ("weight", "const"):
                    param.copy_(torch.randn(param.shape, generator=rng))
                elif pname == "bias":
                    param.fill_(1.0 if name.endswith("affine") else 0.0)
                else:  # noise_strength
                    param.zero_()
            for bname, buf in module.named_buffers(recurse=False):
                if bname == "noise_const":
                    buf.copy_(torch.randn(buf.shape, generator=rng))
                elif bname == "resample_filter":
                    buf.copy_(setup_filter([1, 3, 3, 1]))
        z = torch.randn([W_AVG_SAMPLES, config.z_dim], generator=rng)
        G.mapping.w_avg.zero_()
        c = None
        if config.c_dim:
            labels = torch.randint(config.c_dim, [W_AVG_SAMPLES], generator=rng)
            c = torch.nn.functional.one_hot(labels, config.c_dim).float()
        G.mapping.w_avg.copy_(G.mapping(z, c)[:, 0].mean(dim=0))
    return G.requires_grad_(False).eval()
