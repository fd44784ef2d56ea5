"""Embed images into the generator's latent space: the VGG16 perceptual-loss projector, in W or W+.

Only the latent is optimised (optionally the noise buffers too); the generator and VGG16 stay frozen. The
schedule is the official StyleGAN2 projector's: Adam (0.9, 0.999), learning rate ramped up over the first 5 % of
the steps and cosine-ramped down over the last 25 %, Gaussian noise on the latent of ``w_std *
initial_noise_factor * max(0, 1 - t / 0.75)**2``. The loss per frame is ``perceptual + pixel_weight * MSE``
(Image2StyleGAN's combination), plus the official noise regulariser when noise is optimised.

Frames are optimised as a batch (Adam is element-wise, so each frame follows its own trajectory), and each frame
stops on its own when it reaches ``stop_loss`` or stops improving (``plateau_patience``). With warm start, each
batch begins from the previous batch's last solution, which keeps a video's latents coherent and needs fewer
steps. Alphabet: targets ``[B, 3, H, W]`` in [-1, 1]; latents ``[B, 1, w_dim]`` (W) or ``[B, num_ws, w_dim]`` (W+).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputError
from ..models.stylegan2 import Generator
from ..models.vgg16 import PerceptualDistance
from ..shapes import assert_shape

SPACES = ("w", "w+")


@dataclass(frozen=True)
class ProjectorConfig:
    space: str = "w"
    # 300, not the official projector's 1000: on digiface-64's own faces 300 steps reach 42-45 dB PSNR (RMSE under
    # 2/255) against 47 dB at 1000, in 30 % of the time (README, "Embedding frames").
    steps: int = 300
    initial_lr: float = 0.1
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    initial_noise_factor: float = 0.05
    noise_ramp: float = 0.75
    perceptual_weight: float = 1.0
    pixel_weight: float = 1.0
    optimize_noise: bool = False
    noise_reg_weight: float = 1e5
    w_avg_samples: int = 10000
    stop_loss: float | None = None
    plateau_patience: int | None = None
    plateau_min_delta: float = 1e-3
    amp: bool = False  # autocast the forward pass: float16 on CUDA, bfloat16 on the CPU
    seed: int = 0

    def validate(self) -> "ProjectorConfig":
        if self.space not in SPACES:
            raise ConfigError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.perceptual_weight < 0 or self.pixel_weight < 0:
            raise ConfigError(f"loss weights must be >= 0, got perceptual {self.perceptual_weight}, "
                              f"pixel {self.pixel_weight}")
        for name in ("initial_lr", "lr_rampup", "lr_rampdown", "noise_ramp"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.plateau_patience is not None and self.plateau_patience < 1:
            raise ConfigError(f"plateau_patience must be >= 1, got {self.plateau_patience}")
        return self

    def replace(self, **changes) -> "ProjectorConfig":
        return dataclasses.replace(self, **changes).validate()


@dataclass
class Projection:
    ws: torch.Tensor  # [B, num_ws, w_dim], the solution broadcast to every layer for space "w"
    latent: torch.Tensor  # [B, 1, w_dim] or [B, num_ws, w_dim], what was optimised
    loss: np.ndarray  # [B] final loss of each frame, measured without latent noise
    steps: np.ndarray  # [B] steps each frame ran before it stopped
    history: np.ndarray  # [steps_run, B] loss per step
    noise: dict[str, torch.Tensor] | None = None  # optimised noise buffers (batch of one), when asked


def lr_at(step: int, steps: int, cfg: ProjectorConfig) -> float:
    """The official projector's learning-rate schedule."""
    t = step / steps
    ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp = ramp * min(1.0, t / cfg.lr_rampup)
    return cfg.initial_lr * ramp


def noise_regularization(bufs: list[torch.Tensor]) -> torch.Tensor:
    """The official projector's penalty on spatial autocorrelation of the noise maps, over a pyramid."""
    total = bufs[0].new_zeros(())
    for buf in bufs:
        noise = buf[None, None]
        while True:
            total = total + (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            total = total + (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


class Projector:
    """Projects batches of images into ``G``'s latent space. Holds the frozen networks and W statistics.

    ``perceptual``: the VGG16 distance (None: pixel loss only, which then needs ``pixel_weight > 0``).
    """

    def __init__(self, G: Generator, perceptual: PerceptualDistance | None,
                 config: ProjectorConfig | None = None):
        config = (config or ProjectorConfig()).validate()
        self.G, self.config = G, config
        if perceptual is None or config.perceptual_weight == 0:
            perceptual = None
            if config.pixel_weight == 0:
                raise ConfigError("no loss to optimise: give a perceptual distance or a positive pixel_weight")
        self.perceptual = perceptual
        self.device = G.mapping.w_avg.device
        G.requires_grad_(False).eval()
        rng = torch.Generator().manual_seed(config.seed)
        z = torch.randn([config.w_avg_samples, G.z_dim], generator=rng).to(self.device)
        with torch.no_grad():
            w = torch.cat([G.mapping(chunk)[:, :1] for chunk in z.split(4096)])  # [S, 1, w_dim]
        self.w_avg = w.mean(dim=0, keepdim=True)  # [1, 1, w_dim]
        self.w_std = float(((w - self.w_avg).square().sum() / config.w_avg_samples) ** 0.5)

    def initial_latent(self, n: int) -> torch.Tensor:
        rows = 1 if self.config.space == "w" else self.G.num_ws
        return self.w_avg.expand(n, rows, -1).clone()

    def frame_losses(self, images: torch.Tensor, targets: torch.Tensor, target_feats) -> torch.Tensor:
        loss = images.new_zeros(images.shape[0])
        if self.perceptual is not None:
            loss = loss + self.config.perceptual_weight * self.perceptual.distance(target_feats, images)
        if self.config.pixel_weight:
            loss = loss + self.config.pixel_weight * (images - targets).square().mean(dim=(1, 2, 3))
        return loss

    def project(self, targets: torch.Tensor, *, init: torch.Tensor | None = None, steps: int | None = None,
                noise_factor: float | None = None,
                on_step: Callable[[int, np.ndarray], None] | None = None) -> Projection:
        """Optimise latents for ``targets [B, 3, H, W]`` (in [-1, 1], the generator's resolution).

        ``init``: starting latents (``[B, 1|num_ws, w_dim]`` or ``[B, w_dim]``), default ``w_avg``. ``steps`` and
        ``noise_factor`` override the config (warm starts use fewer steps and no exploration noise).
        """
        cfg, G = self.config, self.G
        res = G.img_resolution
        assert_shape("targets", targets, [None, G.img_channels, res, res])
        n = targets.shape[0]
        if steps is not None and steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        steps = steps or cfg.steps
        noise_factor = cfg.initial_noise_factor if noise_factor is None else noise_factor
        targets = targets.to(self.device, torch.float32)
        latent = self._start(init, n)
        latent.requires_grad_(True)
        params = [latent]
        noise_bufs: dict[str, torch.Tensor] = {}
        saved: dict[str, torch.Tensor] = {}
        if cfg.optimize_noise:
            if n != 1:
                raise ConfigError("optimize_noise shares the generator's noise buffers: project one frame at a time")
            gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
            for name, buf in G.synthesis.named_buffers():
                if name.endswith("noise_const"):
                    saved[name] = buf.detach().clone()
                    buf.copy_(torch.randn(buf.shape, generator=gen).to(buf.device))
                    buf.requires_grad_(True)
                    noise_bufs[name] = buf
            params += list(noise_bufs.values())
        optimizer = torch.optim.Adam(params, betas=(0.9, 0.999), lr=cfg.initial_lr)
        with torch.no_grad():
            target_feats = self.perceptual.features(targets) if self.perceptual is not None else None
        best = np.full(n, np.inf)
        since_best = np.zeros(n, dtype=np.int64)
        done = np.zeros(n, dtype=bool)
        steps_run = np.zeros(n, dtype=np.int64)
        history = []
        gen_noise = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
        try:
            for step in range(steps):
                t = step / steps
                w_noise_scale = self.w_std * noise_factor * max(0.0, 1.0 - t / cfg.noise_ramp) ** 2
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, steps, cfg)
                w_noise = torch.randn(latent.shape, generator=gen_noise).to(self.device) * w_noise_scale
                ws = (latent + w_noise).expand(-1, G.num_ws, -1)
                with self._autocast():
                    # The batch-independent modulated conv back-propagates faster than the grouped one (the
                    # official training path uses it too); measured in bench/embed.py.
                    images = G.synthesis(ws, noise_mode="const", precision="fp32", fused_modconv=False)
                    losses = self.frame_losses(images, targets, target_feats).float()
                loss = losses.sum()
                if noise_bufs:
                    loss = loss + cfg.noise_reg_weight * noise_regularization(list(noise_bufs.values()))
                frozen = latent.detach().clone()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                current = losses.detach().cpu().numpy()
                history.append(current)
                steps_run[~done] += 1
                improved = current < best * (1 - cfg.plateau_min_delta)
                since_best = np.where(improved, 0, since_best + 1)
                best = np.minimum(best, current)
                if cfg.stop_loss is not None:
                    done |= current <= cfg.stop_loss
                if cfg.plateau_patience is not None:
                    done |= since_best >= cfg.plateau_patience
                with torch.no_grad():
                    if done.any():  # a stopped frame keeps the latent whose loss was just measured
                        mask = torch.from_numpy(done).to(self.device)
                        latent.data[mask] = frozen[mask]
                    for buf in noise_bufs.values():
                        buf -= buf.mean()
                        buf *= buf.square().mean().rsqrt()
                if on_step is not None:
                    on_step(step, current)
                if done.all():
                    break
            with torch.no_grad():
                final = latent.detach()
                images = G.synthesis(final.expand(-1, G.num_ws, -1), noise_mode="const", precision="fp32")
                final_loss = self.frame_losses(images, targets, target_feats).cpu().numpy()
            noise_out = {k: v.detach().clone() for k, v in noise_bufs.items()} or None
        finally:
            with torch.no_grad():
                for name, buf in noise_bufs.items():
                    buf.requires_grad_(False)
                    buf.copy_(saved[name])
        return Projection(ws=final.expand(-1, G.num_ws, -1).contiguous(), latent=final.clone(), loss=final_loss,
                          steps=steps_run, history=np.stack(history), noise=noise_out)

    def _autocast(self):
        if not self.config.amp:
            return contextlib.nullcontext()
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _start(self, init: torch.Tensor | None, n: int) -> torch.Tensor:
        if init is None:
            return self.initial_latent(n)
        G = self.G
        init = init.detach().to(self.device, torch.float32)
        if init.ndim == 2:
            init = init[:, None]
        if init.shape[0] == 1 and n > 1:
            init = init.expand(n, -1, -1)
        rows = 1 if self.config.space == "w" else G.num_ws
        if init.shape[1] == rows:
            out = init
        elif rows == 1:
            out = init.mean(dim=1, keepdim=True)  # a W+ latent's mean row starts a W search
        elif init.shape[1] == 1:
            out = init.expand(-1, rows, -1)
        else:
            raise ConfigError(f"init has {init.shape[1]} rows; expected 1 or {G.num_ws}")
        assert_shape("init", out, [n, rows, G.w_dim])
        return out.clone()


def thumbnail(rgb: np.ndarray, *, min_side: int = 128, max_side: int = 256) -> np.ndarray:
    """A preview tile: small images enlarged (nearest, pixels stay visible), large ones reduced (Lanczos)."""
    from PIL import Image

    side = rgb.shape[0]
    if side < min_side:
        k = -(-min_side // side)
        return np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)
    if side > max_side:
        return np.asarray(Image.fromarray(rgb).resize((max_side, max_side), Image.LANCZOS))
    return rgb


def images_to_targets(frames: list[np.ndarray]) -> torch.Tensor:
    """``[H, W, 3] uint8`` frames -> targets ``[B, 3, H, W]`` float in [-1, 1]."""
    arr = np.stack(frames).astype(np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


@dataclass
class EmbedSummary:
    path: Path
    embedded: int  # frames embedded in this run
    resumed: int  # frames found already done in the output file
    mean_loss: float
    mean_steps: float
    preview: Path | None


def embed_frames(G: Generator, frames, out: str | os.PathLike, *, projector: Projector, batch_size: int = 8,
                 warm_start: bool = False, warm_steps: int | None = None, resume: bool = True,
                 preview: str | os.PathLike | None = None, progress: bool = True) -> EmbedSummary:
    """Embed ``frames`` (an iterable of video_io.Frame) into ``out`` (a latents .npz), batch by batch.

    The output is rewritten atomically after every batch, so an interrupted run keeps every frame it finished;
    with ``resume`` a rerun skips the frames already in ``out`` (same source and frame index). With
    ``warm_start`` each batch starts from the last solution (``warm_steps`` steps, no exploration noise).
    """
    from tqdm.auto import tqdm

    from ..imaging import make_grid, save_png
    from ..models.stylegan2 import images_to_uint8
    from .latents_io import read_latents, write_latents
    from .video_io import fit_to_resolution

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(out)
    cfg = projector.config
    perceptual_kind = projector.perceptual.kind if projector.perceptual is not None else "none"
    rows: dict[str, list] = {"ws": [], "frame_index": [], "source": [], "loss": [], "steps": []}
    resumed = 0
    if resume and out.exists():
        old = read_latents(out)
        if old["ws"].shape[1:] != (G.num_ws, G.w_dim):
            raise InputError(f"{out}: holds latents of shape {list(old['ws'].shape[1:])}, this generator makes "
                             f"[{G.num_ws}, {G.w_dim}]; use another --out or --no-resume")
        if "space" in old and str(old["space"]) != cfg.space:
            raise InputError(f"{out}: was embedded in space {str(old['space'])!r}, not {cfg.space!r}; "
                             "use another --out or --no-resume")
        for key in rows:
            rows[key] = list(old[key]) if key in old else [0] * len(old["ws"])
        resumed = len(old["ws"])
    done = set(zip(map(str, rows["source"]), map(int, rows["frame_index"])))
    previous = torch.from_numpy(np.asarray(rows["ws"][-1]))[None] if warm_start and rows["ws"] else None
    shown: list[tuple[np.ndarray, np.ndarray]] = []
    embedded = 0
    bar = tqdm(desc="embed", unit="frame", disable=not progress)

    def flush(batch: list) -> None:
        nonlocal previous, embedded
        targets = images_to_targets([rgb for _, rgb in batch])
        init = previous if warm_start else None
        result = projector.project(targets, init=init, steps=(warm_steps if init is not None else None),
                                   noise_factor=(0.0 if init is not None else None),
                                   on_step=lambda s, l: bar.set_postfix(step=s, loss=f"{float(l.mean()):.4f}", refresh=False))
        ws = result.ws.cpu().numpy()
        for (frame, _), w, loss, steps in zip(batch, ws, result.loss, result.steps):
            rows["ws"].append(w)
            rows["frame_index"].append(frame.index)
            rows["source"].append(frame.source)
            rows["loss"].append(float(loss))
            rows["steps"].append(int(steps))
        write_latents(out, ws=np.stack(rows["ws"]), frame_index=np.array(rows["frame_index"]),
                      source=np.array(rows["source"], dtype=str), loss=np.array(rows["loss"]),
                      steps=np.array(rows["steps"], dtype=np.int32), space=np.array(cfg.space),
                      config=np.array(json.dumps(dataclasses.asdict(cfg))), perceptual=np.array(perceptual_kind))
        if len(shown) < 8:
            with torch.no_grad():
                recon = images_to_uint8(G.synthesis(result.ws[:1], noise_mode="const", precision="fp32"))[0]
            shown.append((thumbnail(batch[0][1]), thumbnail(recon.cpu().numpy())))
        previous = result.ws[-1:].detach()
        embedded += len(batch)
        bar.update(len(batch))

    batch: list = []
    resized: set[str] = set()  # sources whose resizing was reported (once per source, not per frame)
    try:
        for frame in frames:
            if (frame.source, frame.index) in done:
                continue
            rgb = fit_to_resolution(frame.rgb, G.img_resolution, where=f"{frame.source}#{frame.index}",
                                    warn=frame.source not in resized)
            resized.add(frame.source)
            batch.append((frame, rgb))
            if len(batch) == batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    finally:
        bar.close()
    preview_path = None
    if preview is not None and shown:
        top = make_grid(np.stack([o for o, _ in shown]), cols=len(shown))
        bottom = make_grid(np.stack([r for _, r in shown]), cols=len(shown))
        preview_path = save_png(preview, np.concatenate([top, np.zeros_like(top[:2]), bottom]))
    if not rows["ws"]:
        raise InputError("no frames to embed")
    return EmbedSummary(out, embedded, resumed, float(np.mean(rows["loss"])), float(np.mean(rows["steps"])),
                        preview_path)
