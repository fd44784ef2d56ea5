"""The projector: self-consistency (PSNR >= 30 dB from known W and W+ latents), W+ below W, warm starts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stylemotion.errors import ConfigError, InputError, ShapeError
from stylemotion.models.vgg16 import PerceptualDistance, random_vgg16
from stylemotion.pipeline.embed import Projector, ProjectorConfig, embed_frames, lr_at
from stylemotion.pipeline.latents_io import read_latents
from stylemotion.pipeline.video_io import Frame
from tests.helpers import make_image_generator, psnr


@pytest.fixture(scope="module")
def G():
    return make_image_generator()


@pytest.fixture(scope="module")
def perceptual():
    return PerceptualDistance(random_vgg16(0), "lpips")


@pytest.fixture(scope="module")
def known(G):
    """Targets rendered from known W latents and from known W+ latents (rows drawn apart from each other)."""
    with torch.no_grad():
        ws = G.mapping(torch.randn(3, 32, generator=torch.Generator().manual_seed(3)))
        rows = G.mapping(torch.randn(3 * G.num_ws, 32, generator=torch.Generator().manual_seed(4)))[:, 0]
        wplus = ws + 0.3 * (rows.reshape(3, G.num_ws, 32) - ws)
        return {"w": (ws, G.synthesis(ws)), "w+": (wplus, G.synthesis(wplus))}


@pytest.fixture(scope="module")
def results(G, perceptual, known):
    out = {}
    for space, target_kind, steps in (("w", "w", 100), ("w+", "w+", 200), ("w", "w+", 200)):
        projector = Projector(G, perceptual, ProjectorConfig(space=space, steps=steps, w_avg_samples=2000))
        out[(space, target_kind)] = projector.project(known[target_kind][1])
    return out


def test_recovers_a_known_w_latent(G, known, results):
    r = results[("w", "w")]
    with torch.no_grad():
        recon = G.synthesis(r.ws)
    assert psnr(recon, known["w"][1]).min().item() >= 30
    assert r.ws.shape == (3, G.num_ws, 32) and r.latent.shape == (3, 1, 32)


def test_recovers_a_known_wplus_latent(G, known, results):
    r = results[("w+", "w+")]
    with torch.no_grad():
        recon = G.synthesis(r.ws)
    assert psnr(recon, known["w+"][1]).min().item() >= 30
    assert r.latent.shape == (3, G.num_ws, 32)


def test_loss_decreases_and_wplus_beats_w(results):
    for r in results.values():
        assert r.history.shape[1] == 3
        assert (r.history[-10:].mean(axis=0) < r.history[:10].mean(axis=0) * 0.5).all()
    assert (results[("w+", "w+")].loss < results[("w", "w+")].loss).all()


def test_final_loss_is_measured_on_the_returned_latent(G, perceptual, known, results):
    r = results[("w", "w")]
    projector = Projector(G, perceptual, ProjectorConfig(w_avg_samples=2000))
    with torch.no_grad():
        again = projector.frame_losses(G.synthesis(r.ws), known["w"][1], perceptual.features(known["w"][1]))
    np.testing.assert_allclose(again.numpy(), r.loss, rtol=1e-4, atol=1e-7)


def test_warm_start_needs_fewer_steps_on_a_slow_sequence(G, perceptual):
    """A slowly drifting latent: each frame starting from the last solution reaches the same loss sooner."""
    with torch.no_grad():
        a, b = G.mapping(torch.randn(2, 32, generator=torch.Generator().manual_seed(9)))
        ws = torch.stack([a + (b - a) * (0.04 * i) for i in range(5)])
        targets = G.synthesis(ws)
    cfg = ProjectorConfig(steps=150, stop_loss=2e-3, w_avg_samples=2000)
    projector = Projector(G, perceptual, cfg)
    cold = [int(projector.project(targets[i:i + 1]).steps[0]) for i in range(1, 5)]
    first = projector.project(targets[:1])
    warm, previous = [], first.ws
    for i in range(1, 5):
        r = projector.project(targets[i:i + 1], init=previous, noise_factor=0.0)
        assert r.loss[0] <= 2e-3 * 1.5
        warm.append(int(r.steps[0]))
        previous = r.ws
    assert sum(warm) < 0.6 * sum(cold), f"warm {warm} vs cold {cold}"


def test_plateau_stops_each_frame_on_its_own(G, perceptual, known):
    projector = Projector(G, perceptual, ProjectorConfig(steps=400, plateau_patience=5, plateau_min_delta=0.5,
                                                         w_avg_samples=500))
    r = projector.project(known["w"][1])
    assert (r.steps < 400).all() and len(r.history) == r.steps.max()


def test_optimize_noise_restores_the_generator(G, perceptual, known):
    before = {k: v.clone() for k, v in G.synthesis.named_buffers() if k.endswith("noise_const")}
    projector = Projector(G, perceptual, ProjectorConfig(steps=5, optimize_noise=True, w_avg_samples=500))
    r = projector.project(known["w"][1][:1])
    assert set(r.noise) == set(before)
    after = dict(G.synthesis.named_buffers())
    assert all(torch.equal(after[k], v) and not after[k].requires_grad for k, v in before.items())
    with pytest.raises(ConfigError, match="one frame at a time"):
        projector.project(known["w"][1])


def test_lr_schedule_matches_the_official_ramp():
    cfg = ProjectorConfig(steps=1000)
    assert lr_at(0, 1000, cfg) == 0.0
    assert lr_at(50, 1000, cfg) == pytest.approx(0.1)
    assert lr_at(500, 1000, cfg) == pytest.approx(0.1)
    assert lr_at(875, 1000, cfg) == pytest.approx(0.05)
    assert lr_at(999, 1000, cfg) < 1e-4


def test_bad_configuration_and_shapes(G, perceptual):
    with pytest.raises(ConfigError, match="space"):
        ProjectorConfig(space="z").validate()
    with pytest.raises(ConfigError, match="no loss"):
        Projector(G, None, ProjectorConfig(pixel_weight=0.0, w_avg_samples=10))
    projector = Projector(G, perceptual, ProjectorConfig(steps=2, w_avg_samples=10))
    with pytest.raises(ShapeError, match="targets dimension 2 must be 16, got 32"):
        projector.project(torch.zeros(1, 3, 32, 32))


def _frames(G, n, seed=0, source="clip.mp4"):
    with torch.no_grad():
        ws = G.mapping(torch.randn(n, 32, generator=torch.Generator().manual_seed(seed)))
        imgs = ((G.synthesis(ws).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Frame(i, imgs[i], source) for i in range(n)]


def test_embed_frames_writes_resumes_and_keeps_work_on_error(tmp_path, G, perceptual):
    frames = _frames(G, 5)
    out = tmp_path / "lat.npz"
    projector = Projector(G, perceptual, ProjectorConfig(steps=20, w_avg_samples=500))

    def failing():
        yield from frames[:3]
        raise InputError("clip.mp4: decoder failed at frame 3")

    with pytest.raises(InputError, match="frame 3"):
        embed_frames(G, failing(), out, projector=projector, batch_size=2, progress=False)
    kept = read_latents(out)
    assert list(kept["frame_index"]) == [0, 1]  # the finished batch survived the error
    summary = embed_frames(G, frames, out, projector=projector, batch_size=2, warm_start=True, warm_steps=10,
                           preview=tmp_path / "lat.png", progress=False)
    assert (summary.resumed, summary.embedded) == (2, 3)
    data = read_latents(out)
    assert list(data["frame_index"]) == [0, 1, 2, 3, 4] and set(data["source"]) == {"clip.mp4"}
    assert data["ws"].shape == (5, G.num_ws, 32) and str(data["space"]) == "w"
    assert list(data["steps"][2:]) == [10, 10, 10]  # warm-started batches ran warm_steps
    from PIL import Image

    assert Image.open(tmp_path / "lat.png").size[1] == 2 * 128 + 2  # originals above reconstructions, enlarged
    with pytest.raises(InputError, match="not 'w\\+'"):
        embed_frames(G, frames, out, projector=Projector(G, perceptual, ProjectorConfig(space="w+", steps=2,
                                                                                        w_avg_samples=10)),
                     progress=False)


def test_amp_forward_still_converges(G, perceptual, known):
    """Autocast (bfloat16 on the CPU, float16 on CUDA) for the forward pass; the loss still falls."""
    projector = Projector(G, perceptual, ProjectorConfig(steps=60, amp=True, w_avg_samples=500))
    r = projector.project(known["w"][1][:2])
    assert np.isfinite(r.history).all()
    assert (r.history[-5:].mean(axis=0) < 0.5 * r.history[:5].mean(axis=0)).all()
