"""The video job: script -> keyframes -> schedule -> batched rendering -> file, with ACD measured on the way.

Also the evaluation: many videos with random identities, per interpolation mode and against a random latent
walk, reported as a markdown table and a PNG chart.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..models.stylegan2 import Generator, images_to_uint8, z_from_seed
from .interpolate import Schedule, build_segments
from .keyframes import ScriptItem, make_keyframes, ws_from_keyframe_latents
from .metrics import ACD, Extractor, pixel_features


@dataclass
class VideoResult:
    path: Path | None
    frames: int
    render_seconds: float
    acd: float  # pixel ACD (see metrics.py)
    latent_acceleration: float
    sheet: Path | None = None

    @property
    def render_fps(self) -> float:
        return self.frames / self.render_seconds if self.render_seconds else float("inf")


def make_schedule(G: Generator, directions, items: Sequence[ScriptItem], *, seed: int, fps: float,
                  mode: str = "smooth", transition: float = 0.5, coefficient: float = 3.0,
                  truncation_psi: float = 0.7) -> Schedule:
    """Everything checked and planned before the first frame is rendered."""
    if not items:
        raise ConfigError("the script is empty")
    if mode == "slerp" and directions.space != "z":
        raise ConfigError("slerp interpolates Z latents; these directions are in "
                          f"{directions.space!r} (use linear or smooth)")
    segments = build_segments([i.seconds for i in items], fps, transition)
    z = z_from_seed(seed, G.z_dim).to(G.mapping.w_avg.device)
    keys = make_keyframes(G, z, directions, items, coefficient=coefficient, truncation_psi=truncation_psi)
    return Schedule(keys, segments, mode)


def render_video(G: Generator, schedule: Schedule, *, space: str, out: str | os.PathLike | None, fps: float,
                 truncation_psi: float = 0.7, batch_size: int = 8, sheet: str | os.PathLike | None = None,
                 extractor: Extractor = pixel_features, progress: bool = True) -> VideoResult:
    """Render every frame in batches; write them to ``out`` (None: only measure); a contact sheet of 8 frames."""
    from tqdm.auto import tqdm

    from ..imaging import make_grid, save_png
    from .video_io import VideoWriter

    meter = ACD(extractor)
    n = schedule.num_frames
    sheet_at = set(np.linspace(0, n - 1, min(8, n)).round().astype(int).tolist())
    sheet_frames: list[np.ndarray] = []
    accel_sum, accel_n, tail = None, 0, None  # accumulated on the device: no host sync per batch
    t0 = time.perf_counter()
    # The writer finishes the file on success and on Ctrl-C (a playable file of the frames done), and
    # removes its temporary file on any other error.
    with (VideoWriter(out, fps) if out is not None else contextlib.nullcontext()) as writer, \
            tqdm(total=n, desc="video", unit="frame", disable=not progress) as bar:
        for start, latents in schedule.batches(batch_size):
            ws = ws_from_keyframe_latents(G, latents, space, truncation_psi)
            with torch.no_grad():
                frames = images_to_uint8(G.synthesis(ws, noise_mode="const")).cpu().numpy()
            if writer is not None:
                writer.write(frames)
            meter.update(frames)
            flat = ws.reshape(len(ws), -1).double()
            seq = flat if tail is None else torch.cat([tail, flat])
            if len(seq) >= 3:
                accel = (seq[2:] - 2 * seq[1:-1] + seq[:-2]).square().sum()
                accel_sum = accel if accel_sum is None else accel_sum + accel
                accel_n += len(seq) - 2
            tail = seq[-2:]
            sheet_frames += [f for i, f in enumerate(frames, start) if i in sheet_at]
            bar.update(len(frames))
    path = writer.path if writer is not None else None
    seconds = time.perf_counter() - t0
    sheet_path = save_png(sheet, make_grid(np.stack(sheet_frames), cols=len(sheet_frames))) if sheet else None
    total = float(accel_sum) if accel_sum is not None else 0.0
    rms_accel = (total / max(accel_n, 1)) ** 0.5  # as interpolate.latent_acceleration, streamed
    return VideoResult(path, n, seconds, meter.value if n > 1 else 0.0, rms_accel, sheet_path)


def random_walk_schedule(G: Generator, n_keys: int, segments, *, seed: int, truncation_psi: float,
                         mode: str = "linear") -> Schedule:
    """The baseline: keyframes are independent random faces (not emotion edits of one identity)."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn([n_keys, G.z_dim], generator=rng).to(G.mapping.w_avg.device)
    with torch.no_grad():
        keys = G.mapping(z, truncation_psi=truncation_psi)
    return Schedule(keys, segments, mode)


def bar_chart(path: str | os.PathLike, labels: Sequence[str], values: Sequence[float], errors: Sequence[float],
              title: str) -> Path:
    """A small PNG bar chart (mean +/- std) drawn with Pillow."""
    from PIL import Image, ImageDraw

    from ..imaging import save_png

    width, height, margin = 120 * len(labels) + 80, 320, 40
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    top = max(v + e for v, e in zip(values, errors)) or 1.0
    scale = (height - 2 * margin - 20) / top
    draw.text((margin, 8), title, fill="black")
    base = height - margin
    draw.line([(margin - 5, base), (width - 10, base)], fill="black")
    for i, (label, v, e) in enumerate(zip(labels, values, errors)):
        x0 = margin + 20 + 120 * i
        draw.rectangle([x0, base - v * scale, x0 + 60, base], fill=(70, 110, 180))
        draw.line([(x0 + 30, base - (v + e) * scale), (x0 + 30, base - max(v - e, 0) * scale)], fill="black", width=2)
        draw.text((x0, base + 6), label, fill="black")
        draw.text((x0, base - (v + e) * scale - 14), f"{v:.4f}", fill="black")
    return save_png(path, np.asarray(img))


def evaluate(G: Generator, directions, *, videos: int, emotions_per_video: int = 4, seconds: float = 1.0,
             fps: float = 10.0, modes: Sequence[str] = ("linear", "smooth"), transition: float = 0.5,
             coefficient: float = 3.0, truncation_psi: float = 0.7, lstm=None, batch_size: int = 8,
             progress: bool = True) -> dict[str, dict[str, float]]:
    """ACD and latent acceleration over ``videos`` random identities (seeds 0..N-1), per interpolation mode, and
    for a random latent walk with the same timing. Sequences come from ``lstm`` when given, else uniformly at
    random (seeded). Returns ``{row: {acd_mean, acd_std, accel_mean, accel_std}}``."""
    from tqdm.auto import tqdm

    from ..models.emotion_cnn import EMOTIONS
    from .sequence import sample_emotions

    from .interpolate import MODES

    if videos < 1 or emotions_per_video < 1:
        raise ConfigError("videos and emotions_per_video must be >= 1")
    unknown = [m for m in modes if m not in MODES]
    if unknown or ("slerp" in modes and directions.space != "z"):
        raise ConfigError(f"modes {list(modes)}: each must be one of {MODES}, and slerp needs Z directions")
    available = [EMOTIONS.index(e) for e in directions.emotions if e in EMOTIONS]
    if lstm is None and not available:
        raise ConfigError("the directions file has no FER-2013 emotions to draw from")
    rows: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    rows["random walk"] = []
    rng = np.random.default_rng(0)
    for v in tqdm(range(videos), desc="eval", unit="video", disable=not progress):
        if lstm is not None:
            ids = sample_emotions(lstm, [6], emotions_per_video + 1, temperature=0.8, seed=v)[1:]
        else:
            ids = rng.choice(available, emotions_per_video).tolist()
        items = [ScriptItem(EMOTIONS[i], seconds) for i in ids]
        for mode in modes:
            sched = make_schedule(G, directions, items, seed=v, fps=fps, mode=mode, transition=transition,
                                  coefficient=coefficient, truncation_psi=truncation_psi)
            r = render_video(G, sched, space=directions.space, out=None, fps=fps, truncation_psi=truncation_psi,
                             batch_size=batch_size, progress=False)
            rows[mode].append((r.acd, r.latent_acceleration))
        walk = random_walk_schedule(G, len(items) + 1, sched.segments, seed=10_000 + v, truncation_psi=truncation_psi)
        r = render_video(G, walk, space="w", out=None, fps=fps, batch_size=batch_size, progress=False)
        rows["random walk"].append((r.acd, r.latent_acceleration))
    out = {}
    for name, values in rows.items():
        a = np.array(values)
        out[name] = {"acd_mean": float(a[:, 0].mean()), "acd_std": float(a[:, 0].std()),
                     "accel_mean": float(a[:, 1].mean()), "accel_std": float(a[:, 1].std())}
    return out
