"""Average Content Distance (ACD) and latent smoothness.

ACD is the mean, over consecutive frame pairs, of the L2 distance between the two frames' representations:

* ``pixels``: frames scaled to [0, 1]; the distance is the root mean square of the difference over all
  ``H * W * 3`` values (the L2 norm divided by ``sqrt(H * W * 3)``), so it does not grow with resolution;
* ``vgg``: the L2 distance between VGG16 conv5_3 features (post-ReLU, global-average-pooled, 512-D) of frames
  resized to 224 and ImageNet-normalised;
* an ONNX model (``--features face.onnx``): the L2 distance between its outputs, the way MoCoGAN measures ACD with
  a face-embedding network. Frames are given as NCHW float32 RGB in [0, 1], resized to the model's input size.

Lower ACD means a steadier identity/content from frame to frame.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .._optional import require
from ..errors import ConfigError, InputError

Extractor = Callable[[np.ndarray], np.ndarray]  # frames [N, H, W, 3] uint8 -> features [N, D]


def pixel_features(frames: np.ndarray) -> np.ndarray:
    """Frames as flat vectors in [0, 1] scaled by ``1/sqrt(H*W*3)`` (so L2 distance = RMS difference)."""
    flat = frames.reshape(len(frames), -1).astype(np.float64) / 255.0
    return flat / np.sqrt(flat.shape[1])


def vgg_extractor(vgg=None) -> Extractor:
    from ..models.vgg16 import random_vgg16

    vgg = vgg or random_vgg16(0)
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)

    def extract(frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        with torch.no_grad():
            f = vgg((x - mean) / std, ["conv5_3"])["conv5_3"]
        return f.mean(dim=(2, 3)).double().numpy()

    return extract


def onnx_extractor(path: str | os.PathLike) -> Extractor:
    ort = require("onnxruntime", extra="onnx")
    where = str(path)
    try:
        session = ort.InferenceSession(where, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise InputError(f"{where}: cannot load the ONNX feature model ({exc})") from exc
    inp = session.get_inputs()[0]
    shape = inp.shape
    if len(shape) != 4 or shape[1] not in (3, "C", None) or not all(isinstance(d, int) for d in shape[2:]):
        raise InputError(f"{where}: input {inp.name!r} must be NCHW RGB with fixed H and W, got {shape}")
    h, w = shape[2], shape[3]
    one_at_a_time = shape[0] == 1  # many face-embedding exports fix the batch at 1

    def run(x: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(session.run(None, {inp.name: x})[0], np.float64).reshape(len(x), -1)
        except Exception as exc:  # onnxruntime's own exception types
            raise InputError(f"{where}: the feature model failed on input {list(x.shape)} ({exc})") from exc

    def extract(frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).numpy().astype(np.float32)
        if one_at_a_time:
            return np.concatenate([run(x[i:i + 1]) for i in range(len(x))])
        return run(x)

    return extract


class ACD:
    """Streaming ACD: feed batches of frames in order; ``value`` is the mean consecutive distance so far."""

    def __init__(self, extractor: Extractor = pixel_features):
        self.extractor = extractor
        self._last: np.ndarray | None = None
        self.total, self.pairs = 0.0, 0

    def update(self, frames: np.ndarray) -> None:
        if len(frames) == 0:
            return
        feats = self.extractor(frames)
        if self._last is not None:
            feats_all = np.concatenate([self._last[None], feats])
        else:
            feats_all = feats
        d = np.linalg.norm(feats_all[1:] - feats_all[:-1], axis=1)
        self.total += float(d.sum())
        self.pairs += len(d)
        self._last = feats[-1]

    @property
    def value(self) -> float:
        if self.pairs == 0:
            raise ConfigError("ACD needs at least two frames")
        return self.total / self.pairs


def acd(frames: Iterable[np.ndarray], extractor: Extractor = pixel_features) -> float:
    """ACD of frame batches (each ``[N, H, W, 3]`` uint8), in order."""
    meter = ACD(extractor)
    for batch in frames:
        meter.update(batch)
    return meter.value


def read_video_frames(path: str | os.PathLike, batch: int = 32) -> Iterable[np.ndarray]:
    """Batches of a video's frames (``[N, H, W, 3]`` uint8) for ACD."""
    from .video_io import iter_frames

    chunk: list[np.ndarray] = []
    for frame in iter_frames(path):
        chunk.append(frame.rgb)
        if len(chunk) == batch:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)
