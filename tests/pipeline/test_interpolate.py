"""Schedules: exact frame counts, exact keyframe hits, slerp, and the smooth mode's continuous velocity."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stylemotion.errors import ConfigError, ShapeError
from stylemotion.pipeline.directions import Directions, random_directions
from stylemotion.pipeline.interpolate import Schedule, build_segments, latent_acceleration, slerp
from stylemotion.pipeline.keyframes import check_directions, make_keyframes, parse_script
from tests.helpers import make_generator


def test_durations_add_up_to_exact_frame_counts():
    items = parse_script("happy:1,surprise:1.5,neutral:0.5")
    segs = build_segments([i.seconds for i in items], 10, transition=0.5)
    assert [s.frames for s in segs] == [10, 15, 5] and sum(s.frames for s in segs) == 30
    segs = build_segments([1 / 3] * 9, 10, transition=0.1)  # cumulative rounding: no drift
    assert sum(s.frames for s in segs) == 30
    assert [i.coefficient for i in parse_script("happy:1:4.5,sad:2")] == [4.5, None]


@pytest.mark.parametrize("mode", ["linear", "smooth", "slerp"])
def test_keyframes_are_hit_exactly(mode):
    keys = torch.randn(4, 6, 8, dtype=torch.float64)
    segs = build_segments([0.5, 1.0, 0.3], 20, transition=0.25)
    sched = Schedule(keys, segs, mode)
    lat = sched.latents(0, sched.num_frames)
    ends = np.cumsum([s.frames for s in segs])
    for k, (seg, end) in enumerate(zip(segs, ends)):
        start = end - seg.frames
        assert torch.equal(lat[start + seg.transition - 1], keys[k + 1])  # t = 1
        assert torch.equal(lat[end - 1], keys[k + 1])  # held to the segment's end
        if k > 0:  # t = 0 of this transition is the previous segment's last frame: the previous keyframe
            assert torch.equal(lat[start - 1], keys[k])
    assert torch.equal(lat[0], keys[0])  # the video opens on the identity
    assert not torch.equal(lat[1], keys[0]) and not torch.equal(lat[1], keys[1])
    batched = torch.cat([b for _, b in sched.batches(7)])
    torch.testing.assert_close(batched, lat, rtol=1e-12, atol=1e-12)  # float64; vectorised tails may round apart


def test_rendered_frames_equal_keyframe_renders():
    G = make_generator()
    dirs = random_directions(G.w_dim, seed=1)
    items = parse_script("happy:0.5,sad:0.5")
    keys = make_keyframes(G, torch.randn(1, G.z_dim), dirs, items, coefficient=2.0)
    sched = Schedule(keys, build_segments([0.5, 0.5], 10, 0.3), "smooth")
    lat = sched.latents(0, sched.num_frames)
    assert torch.equal(lat[2], keys[1]) and torch.equal(lat[9], keys[2]) and torch.equal(lat[4], keys[1])
    with torch.no_grad():
        def render(x):
            return G.synthesis(x[None])
        # Equal latents render equal frames to float rounding (convolutions are not bit-reproducible across
        # buffers: oneDNN picks kernels by alignment).
        same = dict(rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(render(lat[2]), render(keys[1]), **same)  # t = 1
        torch.testing.assert_close(render(lat[9]), render(keys[2]), **same)
        torch.testing.assert_close(render(lat[4]), render(keys[1]), **same)  # the hold
        assert (render(lat[6]) - render(keys[1])).abs().max() > 1e-3  # moving towards 'sad'


def test_smooth_has_continuous_velocity_and_less_acceleration():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(6, 16, generator=g, dtype=torch.float64)
    for transition in (1.0, 0.4):  # no holds (Catmull-Rom through keyframes) and with holds (ease in/out)
        segs = build_segments([1.0] * 5, 20, transition)
        lin = Schedule(keys, segs, "linear").latents(0, 100)
        smo = Schedule(keys, segs, "smooth").latents(0, 100)
        assert latent_acceleration(smo) < 0.9 * latent_acceleration(lin)
        vel = smo[1:] - smo[:-1]
        jumps = (vel[1:] - vel[:-1]).norm(dim=1)
        assert jumps.max() < 0.7 * (lin[2:] - 2 * lin[1:-1] + lin[:-2]).norm(dim=1).max()


def test_slerp_keeps_to_the_great_circle():
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    mid = slerp(a, b, torch.tensor([[0.5]]))
    assert torch.allclose(mid, torch.tensor([[3 / 2 ** 0.5, 3 / 2 ** 0.5]]), atol=1e-5)
    assert torch.allclose(slerp(a, b, torch.tensor([[0.0]])), a) and torch.allclose(slerp(a, b, torch.tensor([[1.0]])), b)


def test_bad_scripts_and_directions_fail_before_rendering():
    from stylemotion.errors import InputError

    with pytest.raises(InputError, match="unknown emotion 'grumpy'"):
        parse_script("happy:1,grumpy:2")
    with pytest.raises(ConfigError, match="duration must be positive"):
        parse_script("happy:-1")
    with pytest.raises(ConfigError, match="emotion:seconds"):
        parse_script("happy")
    with pytest.raises(ConfigError, match="coefficient must be a finite"):
        parse_script("happy:1:nan")
    with pytest.raises(ConfigError, match="transition must be a finite"):
        build_segments([1.0], 10, float("nan"))
    G = make_generator()
    other = random_directions(G.w_dim + 4)
    with pytest.raises(ShapeError, match="directions of another model"):
        check_directions(G, other, ["happy"])
    some = Directions(["happy"], np.ones((1, G.w_dim)) / 4, "w", np.ones(1), np.ones(1), np.ones(1))
    with pytest.raises(ConfigError, match=r"no direction for \['sad'\]"):
        check_directions(G, some, ["happy", "sad"])
    with pytest.raises(ConfigError, match="shorter than one frame"):
        build_segments([0.01], 10, 0.1)
