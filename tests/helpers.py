"""Helpers shared by tests: where the reference data lives, small seeded generators, checking a written video."""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from stylemotion.checkpoints import random_generator
from stylemotion.models.stylegan2 import Generator, GeneratorConfig

DATA = Path(__file__).parent / "data"


def make_generator(seed: int = 0, **overrides) -> Generator:
    """A small seeded random generator (16x16, narrow) with non-zero noise strengths and biases."""
    cfg = dict(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16, mapping_layers=2)
    cfg.update(overrides)
    G = random_generator(GeneratorConfig(**cfg), seed=seed)
    rng = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or (name.endswith("bias") and "mapping" not in name):
                p.add_(0.3 * torch.randn(p.shape, generator=rng))
    return G


def make_image_generator(res: int = 16, seed: int = 5) -> Generator:
    """A small generator whose images stay in about [-1.5, 1] like a trained one (ToRGB weights scaled down)."""
    G = make_generator(img_resolution=res, channel_base=res * 32, channel_max=32, z_dim=32, w_dim=32, seed=seed)
    with torch.no_grad():
        for block in G.synthesis.blocks():
            block.torgb.weight.mul_(0.2)
    return G


def psnr(a: torch.Tensor, b: torch.Tensor, peak_to_peak: float = 2.0) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (``[N, C, H, W]``)."""
    mse = (a.float() - b.float()).square().mean(dim=(1, 2, 3))
    return 10 * torch.log10(peak_to_peak ** 2 / mse.clamp_min(1e-20))


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe_video`` found in a video file's first video stream."""
    codec: str          # the stored codec, e.g. "h264"
    pix_fmt: str        # e.g. "yuv420p"
    width: int
    height: int
    fps: Fraction       # exact: 30000/1001 for NTSC
    frames: int         # frames decoded, every one of them


_STREAM = re.compile(r"Stream #0:\d+\S*: Video: (\w+)[^,]*, (\w+)")


def probe_video(path) -> VideoInfo:
    """Decode every frame of ``path``'s first video stream with the ffmpeg that the ``imageio-ffmpeg`` package ships
    (no system ffmpeg/ffprobe needed); fails, naming the file and ffmpeg's complaint, on a torn or unreadable file."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info",
           "-i", str(path), "-map", "0:v:0", "-f", "framecrc", "-"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    errors = [line for line in out.stderr.splitlines() if "[error]" in line or "[fatal]" in line]
    assert out.returncode == 0 and not errors, f"{path}: ffmpeg cannot decode it (exit {out.returncode}): " + \
        "\n".join((errors or out.stderr.splitlines())[-8:])
    stream = _STREAM.search(out.stderr)
    assert stream, f"{path}: no video stream in ffmpeg's report:\n{out.stderr[-2000:]}"
    header = dict(line[1:].split(": ", 1) for line in out.stdout.splitlines() if line.startswith("#") and ": " in line)
    tb_num, tb_den = header["tb 0"].split("/")
    width, height = header["dimensions 0"].split("x")
    frames = sum(1 for line in out.stdout.splitlines() if line and not line.startswith("#"))
    return VideoInfo(codec=stream.group(1), pix_fmt=stream.group(2), width=int(width), height=int(height),
                     fps=Fraction(int(tb_den), int(tb_num)), frames=frames)


def count_frames(path) -> int:
    """Frames in ``path`` that decode (every one is decoded: a torn file fails rather than counting short)."""
    return probe_video(path).frames
