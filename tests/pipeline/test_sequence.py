"""The emotion LSTM learns a known Markov chain; baselines; the single-step form; save/load; bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stylemotion.errors import CheckpointError, ConfigError, InputError
from stylemotion.models.emotion_lstm import EmotionLSTM, LSTMConfig
from stylemotion.pipeline.labeling import EmotionSequence
from stylemotion.pipeline.sequence import (MarkovBaseline, TrainConfig, load_lstm, runs_from_sequences,
                                           sample_emotions, save_lstm, train_lstm)

# A sticky chain over the 7 emotions: stay with 0.7, else a few preferred neighbours.
P = np.full((7, 7), 0.02)
for s in range(7):
    P[s, s] = 0.7
    P[s, (s + 1) % 7] += 0.12
    P[s, (s + 3) % 7] += 0.06
P /= P.sum(axis=1, keepdims=True)


def markov_runs(n=240, length=50, seed=0):
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(n):
        s = [int(rng.integers(7))]
        for _ in range(length - 1):
            s.append(int(rng.choice(7, p=P[s[-1]])))
        runs.append(s)
    return runs


@pytest.fixture(scope="module")
def trained():
    runs = markov_runs()
    model, report = train_lstm(runs, model_config=LSTMConfig(hidden=32, layers=4, dropout=0.0),
                               config=TrainConfig(epochs=12, window=24, lr=1e-2), progress=False)
    return model, report


def test_learns_the_markov_chain(trained):
    model, report = trained
    assert model.lstm.num_layers == 4
    lstm, markov, uniform = report["lstm"], report["markov"], report["uniform"]
    assert lstm["perplexity"] < uniform["perplexity"] * 0.6
    assert lstm["perplexity"] <= markov["perplexity"] * 1.05, report  # truly Markov data: at most 5 % worse
    # Its next-step distribution, averaged over contexts ending in each state, matches the true row.
    runs = markov_runs(n=40, seed=1)
    sums, counts = np.zeros((7, 7)), np.zeros(7)
    with torch.no_grad():
        for run in runs:
            probs = model(torch.tensor(run)[None])[0][0].softmax(-1).numpy()
            for s, p in zip(run, probs):
                sums[s] += p
                counts[s] += 1
    q = sums / counts[:, None]
    kl = float((P * np.log(P / q)).sum(axis=1).mean())
    assert kl < 0.05, f"mean KL(true || lstm) = {kl:.4f}"


def test_step_form_equals_the_sequence_form(trained):
    model, _ = trained
    ids = torch.tensor([[3, 3, 4, 6, 6, 0]])
    full, _ = model(ids)
    state = model.initial_state(1)
    for t in range(ids.shape[1]):
        logits, state = model.step(ids[:, t], state)
        assert torch.allclose(logits, full[:, t], atol=1e-5)
    assert state[0].shape == (4, 1, 32)


def test_sampling_and_round_trip(tmp_path, trained):
    model, report = trained
    seq = sample_emotions(model, [3, 3, 6], 40, temperature=0.8, seed=1)
    assert len(seq) == 40 and seq[:3] == [3, 3, 6] and all(0 <= s < 7 for s in seq)
    assert seq == sample_emotions(model, [3, 3, 6], 40, temperature=0.8, seed=1)
    stays = np.mean([a == b for a, b in zip(seq[:-1], seq[1:])])
    assert stays > 0.4  # the chain is sticky and so are samples from the model
    loaded = load_lstm(save_lstm(model, tmp_path / "lstm.safetensors", report))
    assert sample_emotions(loaded, [1], 20, temperature=0, seed=0) == sample_emotions(model, [1], 20, temperature=0)
    with pytest.raises(ConfigError, match="unknown emotion ids"):
        sample_emotions(model, [9], 5)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"junk\.safetensors"):
        load_lstm(tmp_path / "junk.safetensors")


def test_runs_split_at_faceless_frames_and_baseline():
    seqs = [EmotionSequence("a", 5.0, list(range(7)), [3, 3, None, 4, None, 6, 6])]
    assert runs_from_sequences(seqs) == [[3, 3], [6, 6]]
    base = MarkovBaseline([[0, 1, 0, 1]])
    assert base.transition[0, 1] > base.transition[0, 0]
    with pytest.raises(InputError, match="at least 2 runs"):
        train_lstm([[1, 2, 3]], progress=False)
    with pytest.raises(ConfigError):
        EmotionLSTM(LSTMConfig(layers=0))
