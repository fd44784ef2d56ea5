"""Train and sample the emotion LSTM; measure it against a uniform and a first-order Markov baseline.

Sequences come from the labeler's JSON lines; ``null`` (no face) splits a sequence into runs, because what
happened in a gap is unknown. Runs are split into training and held-out sets (whole runs, never windows of the
same run on both sides). Training uses teacher forcing on windows; the held-out report gives next-step accuracy
and perplexity for the LSTM, the uniform baseline (perplexity = number of emotions) and a Markov chain counted
from the training runs (add-one smoothing).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoints.native import read_safetensors, write_safetensors
from ..errors import CheckpointError, ConfigError, InputError
from ..models.emotion_cnn import EMOTIONS
from ..models.emotion_lstm import EmotionLSTM, LSTMConfig
from .labeling import EmotionSequence

FORMAT_NAME = "stylemotion.emotion_lstm"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    window: int = 32
    batch_size: int = 64
    lr: float = 3e-3
    held_out: float = 0.2
    seed: int = 0

    def validate(self) -> "TrainConfig":
        if self.epochs < 1 or self.window < 2 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(f"invalid training config {self}")
        if not 0 < self.held_out < 1:
            raise ConfigError(f"held_out must be in (0, 1), got {self.held_out}")
        return self


def runs_from_sequences(sequences: Sequence[EmotionSequence], min_len: int = 2) -> list[list[int]]:
    """Split each sequence at ``null`` (faceless frames); keep runs of at least ``min_len`` ids."""
    runs: list[list[int]] = []
    for seq in sequences:
        current: list[int] = []
        for e in list(seq.emotions) + [None]:
            if e is None:
                if len(current) >= min_len:
                    runs.append(current)
                current = []
            else:
                current.append(int(e))
    return runs


class MarkovBaseline:
    """First-order Markov chain with add-``alpha`` smoothing, counted from training runs."""

    def __init__(self, runs: Sequence[Sequence[int]], num_emotions: int = len(EMOTIONS), alpha: float = 1.0):
        counts = np.full((num_emotions, num_emotions), alpha)
        for run in runs:
            for a, b in zip(run[:-1], run[1:]):
                counts[a, b] += 1
        self.transition = counts / counts.sum(axis=1, keepdims=True)

    def evaluate(self, runs: Sequence[Sequence[int]]) -> dict:
        nll, hits, n = 0.0, 0, 0
        for run in runs:
            for a, b in zip(run[:-1], run[1:]):
                nll -= math.log(self.transition[a, b])
                hits += int(self.transition[a].argmax() == b)
                n += 1
        return {"accuracy": hits / n, "perplexity": math.exp(nll / n), "transitions": n}


def _windows(runs: Sequence[Sequence[int]], window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``[W, window]`` and next-id targets ``[W, window]`` (padding targets are -100, ignored)."""
    xs, ys = [], []
    for run in runs:
        for start in range(0, max(len(run) - 1, 1), max(window // 2, 1)):
            chunk = run[start:start + window + 1]
            if len(chunk) < 2:
                continue
            x = chunk[:-1] + [0] * (window - len(chunk) + 1)
            y = chunk[1:] + [-100] * (window - len(chunk) + 1)
            xs.append(x)
            ys.append(y)
    return torch.tensor(xs, dtype=torch.long), torch.tensor(ys, dtype=torch.long)


def split_runs(runs: list[list[int]], held_out: float, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    if len(runs) < 2:
        raise InputError(f"need at least 2 runs of 2+ labelled frames to hold some out, got {len(runs)}")
    order = np.random.default_rng(seed).permutation(len(runs))
    n_test = min(max(1, round(held_out * len(runs))), len(runs) - 1)
    test = [runs[i] for i in order[:n_test]]
    return [runs[i] for i in order[n_test:]], test


@torch.no_grad()
def evaluate_lstm(model: EmotionLSTM, runs: Sequence[Sequence[int]]) -> dict:
    model.eval()
    nll, hits, n = 0.0, 0, 0
    for run in runs:
        logits, _ = model(torch.tensor(run[:-1])[None])
        target = torch.tensor(run[1:])
        logp = logits[0].log_softmax(dim=-1)
        nll -= float(logp.gather(1, target[:, None]).sum())
        hits += int((logp.argmax(dim=-1) == target).sum())
        n += len(target)
    return {"accuracy": hits / n, "perplexity": math.exp(nll / n), "transitions": n}


def train_lstm(runs: list[list[int]], *, model_config: LSTMConfig = LSTMConfig(),
               config: TrainConfig = TrainConfig(), progress: bool = True) -> tuple[EmotionLSTM, dict]:
    """Train on most runs, report on the held-out ones (LSTM, uniform and Markov)."""
    from tqdm.auto import tqdm

    config = config.validate()
    train, test = split_runs(runs, config.held_out, config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = EmotionLSTM(model_config)
    x, y = _windows(train, config.window)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    bar = tqdm(range(config.epochs), desc="train-lstm", unit="epoch", disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            idx = order[start:start + config.batch_size]
            logits, _ = model(x[idx])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[idx].reshape(-1), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            total += float(loss.detach()) * len(idx)
        bar.set_postfix(loss=f"{total / len(x):.4f}", refresh=False)
    model.eval()
    report = {"lstm": evaluate_lstm(model, test), "markov": MarkovBaseline(train).evaluate(test),
              "uniform": {"accuracy": 1 / model_config.num_emotions, "perplexity": float(model_config.num_emotions)},
              "train_runs": len(train), "held_out_runs": len(test), "train_config": asdict(config)}
    return model, report


def save_lstm(model: EmotionLSTM, path: str | os.PathLike, report: dict | None = None) -> Path:
    meta = {"format": FORMAT_NAME, "config": json.dumps(model.config.to_dict()), "report": json.dumps(report or {})}
    return write_safetensors(path, model.state_dict(), meta)


def load_lstm(path: str | os.PathLike) -> EmotionLSTM:
    where = str(path)
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{where}: not an emotion LSTM (format {meta.get('format')!r})")
    try:
        model = EmotionLSTM(LSTMConfig(**json.loads(meta["config"])))
        model.load_state_dict(tensors, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError, ConfigError) as exc:
        raise CheckpointError(f"{where}: config or weights are not a valid emotion LSTM ({exc})") from exc
    return model.eval()


class EmotionSampler:
    """Emotion ids one at a time from the LSTM, continuing ``prime``; the temperature may change between calls
    (live control). ``sample_emotions`` is this sampler run to a length."""

    def __init__(self, model: EmotionLSTM, prime: Sequence[int], *, seed: int = 0):
        if not prime:
            raise ConfigError("prime needs at least one emotion id")
        bad = [p for p in prime if not 0 <= int(p) < model.config.num_emotions]
        if bad:
            raise ConfigError(f"prime holds unknown emotion ids {bad}")
        self.model = model.eval()
        self.generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            logits, self.state = model(torch.tensor([int(p) for p in prime])[None])
        self.logits = logits[0, -1]

    def next(self, temperature: float = 1.0) -> int:
        """The next id, sampled at ``temperature`` (0: the most likely)."""
        check_temperature(temperature)
        if temperature == 0:
            nxt = int(self.logits.argmax())
        else:
            nxt = int(torch.multinomial((self.logits / temperature).softmax(-1), 1, generator=self.generator))
        with torch.no_grad():
            last, self.state = self.model.step(torch.tensor([nxt]), self.state)
        self.logits = last[0]
        return nxt


def check_temperature(temperature: float) -> float:
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ConfigError(f"temperature must be a finite number >= 0, got {temperature}")
    return float(temperature)


@torch.no_grad()
def sample_emotions(model: EmotionLSTM, prime: Sequence[int], length: int, *, temperature: float = 1.0,
                    seed: int = 0) -> list[int]:
    """Continue ``prime`` (at least one id) to ``length`` ids in all, sampling with ``temperature`` (0: argmax)."""
    check_temperature(temperature)
    sampler = EmotionSampler(model, prime, seed=seed)
    out = [int(p) for p in prime]
    while len(out) < length:
        out.append(sampler.next(temperature))
    return out[:max(length, len(prime))]


# A hand-written model of how expressions follow each other, for a model that ships without labelled videos:
# weights of the next (different) emotion after each one, in EMOTIONS order (angry, disgust, fear, happy, sad,
# surprise, neutral). Expressions mostly pass through neutral; happy and surprise, sad and angry, fear and
# surprise neighbour each other.
_SYNTHETIC_NEXT = np.array([
    [0, 2, 1, 0.5, 3, 1, 5],   # angry
    [4, 0, 1, 0.5, 2, 1, 5],   # disgust
    [1, 1, 0, 0.5, 2, 4, 5],   # fear
    [0.3, 0.2, 0.3, 0, 0.7, 3, 6],  # happy
    [2, 1, 2, 1, 0, 0.5, 6],   # sad
    [0.5, 0.5, 2, 4, 0.5, 0, 5],  # surprise
    [1, 0.5, 1, 4, 2, 2, 0],   # neutral
])


def synthetic_sequences(n: int, *, length: int = 60, emotions: Sequence[str] | None = None,
                        seed: int = 0) -> list[EmotionSequence]:
    """``n`` SYNTHETIC emotion sequences of ``length`` labels at 1 label per second (``source`` says so): segments
    of 1-4 seconds (geometric), the next segment's emotion drawn from ``_SYNTHETIC_NEXT`` restricted to
    ``emotions`` (default all). Not observed behaviour: a stand-in so a model can ship an LSTM."""
    names = list(emotions) if emotions is not None else list(EMOTIONS)
    unknown = [e for e in names if e not in EMOTIONS]
    if unknown or len(names) < 2:
        raise ConfigError(f"synthetic sequences need at least two known emotions, got {names} (unknown {unknown})")
    if n < 1 or length < 2:
        raise ConfigError(f"need n >= 1 sequences of length >= 2, got n={n}, length={length}")
    ids = [EMOTIONS.index(e) for e in names]
    table = _SYNTHETIC_NEXT[np.ix_(ids, ids)]
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        seq: list[int] = []
        cur = ids.index(EMOTIONS.index("neutral")) if "neutral" in names else int(rng.integers(len(ids)))
        while len(seq) < length:
            seq += [ids[cur]] * int(min(rng.geometric(0.5), 4))
            weights = table[cur] + 1e-3 * (np.arange(len(ids)) != cur)  # never stuck when a row is all zero
            weights[cur] = 0
            cur = int(rng.choice(len(ids), p=weights / weights.sum()))
        seq = seq[:length]
        out.append(EmotionSequence(f"synthetic-{k}", 1.0, list(range(length)), seq))
    return out
