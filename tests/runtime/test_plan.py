"""The planner on its own: live changes are all-or-nothing, survive odd timings, and keep batches whole."""
from __future__ import annotations

import pytest
import torch

from stylemotion.errors import ConfigError
from stylemotion.pipeline.directions import random_directions
from stylemotion.runtime import StreamSettings, make_planner

from ..helpers import make_generator


@pytest.fixture(scope="module")
def G():
    return make_generator()


@pytest.fixture(scope="module")
def dirs(G):
    return random_directions(G.w_dim, seed=1)


def planner(G, dirs, fps=30.0, **kw):
    return make_planner(G, torch.device("cpu"), StreamSettings(fps=fps), directions=dirs, **kw)


def drain(p, size=4):
    sizes = []
    while (b := p.next_batch(size)) is not None:
        sizes.append(len(b))
    return sizes


def test_a_speed_change_mid_script_never_makes_an_empty_segment(G, dirs):
    for start in range(0, 12, 2):  # the timings that once rounded a re-planned item to zero frames
        p = planner(G, dirs, script="happy:0.5,sad:0.05,surprise:0.05,fear:0.5")
        p.next_batch(start) if start else None
        p.control(speed=2.0)
        assert sum(drain(p)) > 0


def test_a_failing_control_changes_nothing(G, dirs):
    p = planner(G, dirs, script="happy:1,sad:1")
    p.next_batch(3)
    before = (p.settings, p.generation, p.plan)
    with pytest.raises(ConfigError, match="seed must be"):
        p.control(speed=3.0, seed=-1)
    assert (p.settings, p.generation, p.plan) == before


def test_follow_lstm_keeps_a_finite_prediction(G, dirs):
    from stylemotion.models.emotion_lstm import EmotionLSTM, LSTMConfig

    lstm = EmotionLSTM(LSTMConfig(hidden=8, layers=4))
    p = make_planner(G, torch.device("cpu"), StreamSettings(fps=8, seconds=1.0), directions=dirs, lstm=lstm,
                     predict=4)
    p.next_batch(4)
    p.control(follow_lstm=True)
    assert 4 + sum(drain(p)) == 32  # all four predicted emotions still play


def test_batches_run_on_across_plan_boundaries(G, dirs):
    p = make_planner(G, torch.device("cpu"), StreamSettings(fps=30), directions=dirs, live=True)  # endless
    sizes = [len(p.next_batch(8)) for _ in range(3)]
    p.control(emotion="happy", transition=0.1)  # a new plan mid-stream
    sizes += [len(p.next_batch(8)) for _ in range(6)]
    assert sizes == [8] * 9  # one batch size for the engine (one CUDA graph), whatever the planner did
