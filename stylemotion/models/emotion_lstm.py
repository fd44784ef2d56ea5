"""The emotion-sequence model: a 4-layer LSTM over FER-2013 emotion ids predicting the next emotion.

``forward(ids [B, T]) -> logits [B, T, 7]`` (teacher forcing: position t predicts id t+1) and the single-step
form ``step(ids [B], state) -> (logits [B, 7], state)`` with an explicit ``(h, c)``, each ``[layers, B, hidden]``,
which the streaming runtime carries from frame to frame.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .emotion_cnn import EMOTIONS


@dataclass(frozen=True)
class LSTMConfig:
    num_emotions: int = len(EMOTIONS)
    embed_dim: int = 16
    hidden: int = 64
    layers: int = 4
    dropout: float = 0.1

    def validate(self) -> "LSTMConfig":
        for name in ("num_emotions", "embed_dim", "hidden", "layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        # A file's config could ask for any size: bound it before anything is allocated (make fuzz found a
        # config of 2.6 million layers that kept the constructor busy for minutes).
        limits = {"num_emotions": 1024, "embed_dim": 4096, "hidden": 8192, "layers": 64}
        for name, limit in limits.items():
            if getattr(self, name) > limit:
                raise ConfigError(f"{name} must be at most {limit}, got {getattr(self, name)}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


class EmotionLSTM(nn.Module):
    def __init__(self, config: LSTMConfig = LSTMConfig()):
        super().__init__()
        self.config = config.validate()
        self.embed = nn.Embedding(config.num_emotions, config.embed_dim)
        self.lstm = nn.LSTM(config.embed_dim, config.hidden, num_layers=config.layers, batch_first=True,
                            dropout=config.dropout if config.layers > 1 else 0.0)
        self.out = nn.Linear(config.hidden, config.num_emotions)

    def forward(self, ids: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``ids [B, T]`` -> ``(logits [B, T, E], (h, c))``."""
        y, state = self.lstm(self.embed(ids), state)
        return self.out(y), state

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.config.layers, batch, self.config.hidden)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def step(self, ids: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One step: ``ids [B]`` and ``(h, c)`` -> ``(logits [B, E], (h, c))``."""
        logits, state = self.forward(ids[:, None], state)
        return logits[:, 0], state
