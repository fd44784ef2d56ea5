"""Export specs of every network: thin wrappers that fix what the graph bakes in, plus their I/O descriptions."""
from __future__ import annotations

import torch
from torch import nn

from ..models.emotion_cnn import EMOTIONS, INPUT_SIZE, EmotionCNN
from ..models.emotion_lstm import EmotionLSTM
from ..models.stylegan2 import Generator
from ..models.vgg16 import VGG16
from .spec import BatchProfile, ExportSpec, TensorSpec


class _Synthesis(nn.Module):
    """ws -> images with the batch-independent modulated conv, constant noise, float32 (DESIGN.md section 5)."""

    def __init__(self, G: Generator):
        super().__init__()
        self.G = G

    fused_modconv = False

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.G.synthesis(ws, noise_mode="const", precision="fp32", fused_modconv=self.fused_modconv)


class OfficialSynthesis(_Synthesis):
    """ws -> images in NVlabs' official inference form (grouped per-sample weights, the reference element-wise ops):
    the graph a user gets by exporting the official generator. Fixed batch only (one convolution group per
    sample); the benchmark runs it on OpenVINO as the peer to beat."""

    fused_modconv = True


class _FastSynthesis(nn.Module):
    """ws -> images through the CPU inference plan (``FastSynthesis``, box-filter FIRs): the graph ONNX Runtime and
    OpenVINO run fastest on a CPU. Same function as ``_Synthesis`` to float32 rounding."""

    def __init__(self, G: Generator):
        super().__init__()
        from ..models.stylegan2_fast import FastSynthesis

        self.plan = FastSynthesis(G.synthesis, target="graph")

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.plan(ws)


class _Mapping(nn.Module):
    """z, psi -> ws: truncation ``w_avg + psi * (w - w_avg)`` with psi as an input (shape [1])."""

    def __init__(self, G: Generator):
        super().__init__()
        self.G = G

    def forward(self, z: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        ws = self.G.mapping(z)
        w_avg = self.G.mapping.w_avg
        return w_avg + psi.reshape(1, 1, 1) * (ws - w_avg)


class _VGGFeatures(nn.Module):
    """RGB in [0, 1] at 224x224 -> the 512-D conv5_3 features ACD uses (ImageNet normalisation inside)."""

    def __init__(self, vgg: VGG16):
        super().__init__()
        self.vgg = vgg
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vgg((images - self.mean) / self.std, ["conv5_3"])["conv5_3"].mean(dim=(2, 3))


class _LSTMSeq(nn.Module):
    def __init__(self, lstm: EmotionLSTM):
        super().__init__()
        self.lstm = lstm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lstm(ids)[0]


class _LSTMStep(nn.Module):
    def __init__(self, lstm: EmotionLSTM):
        super().__init__()
        self.lstm = lstm

    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        logits, (h2, c2) = self.lstm.step(ids, (h, c))
        return logits, h2, c2


class _EmotionProbs(nn.Module):
    def __init__(self, model: EmotionCNN):
        super().__init__()
        self.model = model

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.model.probabilities(faces)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def synthesis_spec(G: Generator, profile: BatchProfile = BatchProfile()) -> ExportSpec:
    res, c = G.img_resolution, G.img_channels
    return ExportSpec(
        "synthesis", _Synthesis(G), (TensorSpec("ws", ("batch", G.num_ws, G.w_dim)),),
        (TensorSpec("images", ("batch", c, res, res)),),
        lambda n, s=0: (G.mapping(torch.randn(n, G.z_dim, generator=_gen(s)).to(G.mapping.w_avg.device)),),
        profile, "ws [batch, num_ws, w_dim] float32 -> images [batch, C, H, W] float32 in about [-1, 1]")


def synthesis_cpu_spec(G: Generator, profile: BatchProfile = BatchProfile()) -> ExportSpec:
    """``synthesis_cpu.onnx``: the synthesis network as the CPU inference plan (Winograd, GEMM upsampling, folded
    constants; ``models/stylegan2_fast.py``), for ONNX Runtime or OpenVINO on a CPU. GPUs take ``synthesis``."""
    base = synthesis_spec(G, profile)
    return ExportSpec("synthesis_cpu", _FastSynthesis(G), base.inputs, base.outputs, base.sample, profile,
                      base.description + "; CPU plan (Winograd F(4x4,3x3), GEMM upsampling, folded constants)")


class _SynthesisNoise(nn.Module):
    """ws plus one noise map per layer -> images (the variant with noise inputs)."""

    def __init__(self, G: Generator):
        super().__init__()
        self.G = G
        self.layers = list(G.synthesis.noise_layers())

    def forward(self, ws: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
        return self.G.synthesis(ws, noise_mode="none", precision="fp32", fused_modconv=False,
                                noise=dict(zip(self.layers, noise)))


def synthesis_noise_spec(G: Generator, profile: BatchProfile = BatchProfile()) -> ExportSpec:
    """Synthesis with explicit noise inputs ``noise_b8_conv0 [batch, 1, 8, 8]`` ... (unit Gaussian maps, before
    each layer's noise strength), for callers that animate or seed the noise themselves."""
    res, c = G.img_resolution, G.img_channels
    layers = G.synthesis.noise_layers()
    noise_specs = tuple(TensorSpec("noise_" + name.replace(".", "_"), ("batch", 1, r, r)) for name, r in layers.items())

    def sample(n, s=0):
        gen = _gen(s)
        ws = G.mapping(torch.randn(n, G.z_dim, generator=gen).to(G.mapping.w_avg.device))
        return (ws, *(torch.randn(n, 1, r, r, generator=gen).to(ws.device) for r in layers.values()))

    return ExportSpec("synthesis_noise", _SynthesisNoise(G),
                      (TensorSpec("ws", ("batch", G.num_ws, G.w_dim)),) + noise_specs,
                      (TensorSpec("images", ("batch", c, res, res)),), sample, profile,
                      "ws [batch, num_ws, w_dim] + noise_<layer> [batch, 1, r, r] -> images [batch, C, H, W]")


def synthesis_fp16_spec(G: Generator, profile: BatchProfile = BatchProfile(), min_psnr: float = 35.0) -> ExportSpec:
    """The whole synthesis network in FP16 (ws and images float16), the activation clamp kept; checked by PSNR
    against the float32 network. Needs ``conv_clamp`` (FP16 activations overflow without it)."""
    import copy

    from ..errors import ExportError

    if G.config.conv_clamp is None:
        raise ExportError("an FP16 synthesis graph needs conv_clamp (e.g. 256) so activations cannot overflow")
    half = copy.deepcopy(G).half()
    res, c = G.img_resolution, G.img_channels
    return ExportSpec(
        "synthesis_fp16", _Synthesis(half), (TensorSpec("ws", ("batch", G.num_ws, G.w_dim), "float16"),),
        (TensorSpec("images", ("batch", c, res, res), "float16"),),
        lambda n, s=0: (G.mapping(torch.randn(n, G.z_dim, generator=_gen(s)).to(G.mapping.w_avg.device)).half(),),
        profile, "ws [batch, num_ws, w_dim] float16 -> images [batch, C, H, W] float16; clamp kept",
        reference=_Synthesis(G), min_psnr=min_psnr)


def mapping_spec(G: Generator, profile: BatchProfile = BatchProfile()) -> ExportSpec:
    return ExportSpec(
        "mapping", _Mapping(G), (TensorSpec("z", ("batch", G.z_dim)), TensorSpec("psi", (1,))),
        (TensorSpec("ws", ("batch", G.num_ws, G.w_dim)),),
        lambda n, s=0: (torch.randn(n, G.z_dim, generator=_gen(s)), torch.tensor([0.7])),
        profile, "z [batch, z_dim], psi [1] -> ws [batch, num_ws, w_dim], truncated toward w_avg")


def vgg16_spec(vgg: VGG16, profile: BatchProfile = BatchProfile()) -> ExportSpec:
    return ExportSpec(
        "vgg16", _VGGFeatures(vgg), (TensorSpec("images", ("batch", 3, 224, 224)),),
        (TensorSpec("features", ("batch", 512)),),
        lambda n, s=0: (torch.rand(n, 3, 224, 224, generator=_gen(s)),),
        profile, "RGB [batch, 3, 224, 224] in [0, 1] -> conv5_3 features [batch, 512]")


def lstm_specs(lstm: EmotionLSTM, profile: BatchProfile = BatchProfile()) -> list[ExportSpec]:
    cfg = lstm.config
    seq = ExportSpec(
        "lstm_seq", _LSTMSeq(lstm), (TensorSpec("ids", ("batch", "time"), "int64"),),
        (TensorSpec("logits", ("batch", "time", cfg.num_emotions)),),
        lambda n, s=0: (torch.randint(cfg.num_emotions, (n, 12), generator=_gen(s)),),
        profile, "emotion ids [batch, time] int64 -> next-emotion logits [batch, time, E]")
    state = (cfg.layers, "batch", cfg.hidden)
    step = ExportSpec(
        "lstm_step", _LSTMStep(lstm),
        (TensorSpec("ids", ("batch",), "int64"), TensorSpec("h", state), TensorSpec("c", state)),
        (TensorSpec("logits", ("batch", cfg.num_emotions)), TensorSpec("h_out", state), TensorSpec("c_out", state)),
        lambda n, s=0: (torch.randint(cfg.num_emotions, (n,), generator=_gen(s)),
                        torch.randn(cfg.layers, n, cfg.hidden, generator=_gen(s + 1)),
                        torch.randn(cfg.layers, n, cfg.hidden, generator=_gen(s + 2))),
        profile, "one step: ids [batch], h, c [layers, batch, hidden] -> logits [batch, E], h_out, c_out")
    return [seq, step]


def emotion_cnn_spec(model: EmotionCNN, profile: BatchProfile = BatchProfile()) -> ExportSpec:
    return ExportSpec(
        "emotion_cnn", _EmotionProbs(model), (TensorSpec("faces", ("batch", 1, INPUT_SIZE, INPUT_SIZE)),),
        (TensorSpec("probabilities", ("batch", len(EMOTIONS))),),
        lambda n, s=0: (torch.rand(n, 1, INPUT_SIZE, INPUT_SIZE, generator=_gen(s)) * 2 - 1,),
        profile, "grayscale faces [batch, 1, 64, 64] in [-1, 1] -> FER-2013 probabilities [batch, 7]")
