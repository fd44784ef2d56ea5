"""The DCGAN teacher's loader and the distillation loop (tiny students, a few steps: the mechanics, not quality;
the shipped model's quality is checked in test_bundled.py). Runs on the CPU; the CUDA path has its own gpu test."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from stylemotion.checkpoints.dcgan import default_teacher_path, load_dcgan
from stylemotion.errors import CheckpointError, ConfigError, MissingDependencyError
from stylemotion.models.dcgan import DCGANGenerator
from stylemotion.models.stylegan2 import GeneratorConfig
from stylemotion.pipeline.distill import (DistillConfig, Distiller, fer_input, held_out_z, load_classifier,
                                          load_teacher, resolve_amp, resolve_device)
from stylemotion.runtime.jobs import compare_to_teacher

TINY_STUDENT = GeneratorConfig(z_dim=100, w_dim=16, img_resolution=64, mapping_layers=2, mapping_lr_multiplier=0.1,
                               channels_per_res={4: 16, 8: 16, 16: 8, 32: 8, 64: 8})


@pytest.fixture(scope="module")
def teacher() -> DCGANGenerator:
    try:
        default_teacher_path()
    except Exception as exc:
        pytest.skip(f"gan_face_generate is not installed ({exc}); `make test` installs it")
    return load_dcgan()


@pytest.fixture(scope="module")
def classifier():
    from stylemotion.checkpoints.emotion_cnn import load_emotion_cnn

    return load_emotion_cnn()


def test_teacher_matches_its_file_key_for_key(teacher):
    state = torch.load(default_teacher_path(), map_location="cpu", weights_only=True)["netG_state_dict"]
    assert set(state) == set(teacher.state_dict())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, state[key]), key
    images = teacher(held_out_z(4))
    assert images.shape == (4, 3, 64, 64)
    assert images.min() >= -1 and images.max() <= 1 and images.std() > 0.2  # tanh output, not a flat image


def test_teacher_reads_as_data_and_names_what_is_wrong(tmp_path, teacher):
    good = torch.load(default_teacher_path(), map_location="cpu", weights_only=True)
    bad = {"netG_state_dict": dict(good["netG_state_dict"])}
    bad["netG_state_dict"]["main.3.weight"] = torch.zeros(512, 256, 3, 3)
    torch.save(bad, tmp_path / "shape.tar")
    with pytest.raises(CheckpointError, match=r"main\.3\.weight.*\(512, 256, 3, 3\)"):
        load_dcgan(tmp_path / "shape.tar")
    torch.save({"generator": {}}, tmp_path / "key.tar")
    with pytest.raises(CheckpointError, match="netG_state_dict"):
        load_dcgan(tmp_path / "key.tar")
    del bad["netG_state_dict"]["main.12.weight"]
    torch.save(bad, tmp_path / "missing.tar")
    with pytest.raises(CheckpointError, match=r"missing \['main\.12\.weight'\]"):
        load_dcgan(tmp_path / "missing.tar")
    (tmp_path / "trunc.tar").write_bytes(default_teacher_path().read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="trunc.tar"):
        load_dcgan(tmp_path / "trunc.tar")


def test_fer_input_is_opencv_grey():
    import cv2
    import numpy as np

    rgb = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1
    ours = (fer_input(x)[:, 0] + 1) * 127.5
    theirs = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb]).astype(np.float32)
    assert np.abs(ours.numpy() - theirs).max() <= 0.51  # OpenCV rounds to uint8


def test_distill_learns_checkpoints_and_resumes(tmp_path, teacher, classifier):
    cfg = DistillConfig(kimg=0.16, batch=8, lr=5e-3, checkpoint_every=10, warmup_steps=1)
    run = Distiller(tmp_path / "run", cfg, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT,
                  device="cpu")
    z = torch.randn(16, 100, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        before = (run.G(z, noise_mode="none") - teacher(z)).abs().mean()
    assert run.run(progress=False, max_seconds=0) == 1  # stops after one step, checkpointed
    assert (tmp_path / "run" / "train-state.pt").is_file() and (tmp_path / "run" / "progress.png").is_file()
    again = Distiller(tmp_path / "run", cfg, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT,
                    device="cpu")
    assert again.step == 1
    assert torch.equal(again.rng.get_state(), run.rng.get_state())
    assert again.run(progress=False) == cfg.total_steps == 20
    with torch.no_grad():
        after = (again.G(z, noise_mode="none") - teacher(z)).abs().mean()
    assert after < 0.8 * before  # 20 steps of a tiny student: the L1 to the teacher falls
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 10, 20] and {"l1", "l1_low", "fer_kl"} <= set(log[-1])
    G = again.finished_student()
    assert not G.training and G.mapping.w_avg.abs().sum() > 0
    report = compare_to_teacher(G, teacher, classifier, n=10, batch=5)
    assert report["n"] == 10 and 0 <= report["fer_agreement"] <= 1 and report["psnr_mean"] > 0
    assert sum(report["teacher_emotions"].values()) == 10
    other = DistillConfig(kimg=0.16, batch=8, objective="both")
    with pytest.raises(ConfigError, match="objective 'recon' is in this folder, not 'both'"):
        Distiller(tmp_path / "run", other, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT,
                  device="cpu")


def test_adversarial_objective_trains_a_discriminator(tmp_path, teacher, classifier):
    cfg = DistillConfig(kimg=0.016, batch=4, objective="both", r1_every=1, warmup_steps=1, checkpoint_every=2)
    run = Distiller(tmp_path / "adv", cfg, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT,
                    init=None, device="cpu")
    d_before = [p.clone() for p in run.D.parameters()]
    run.run(progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(d_before, run.D.parameters()))
    log = [json.loads(line) for line in (tmp_path / "adv" / "log.jsonl").read_text().splitlines()]
    assert {"g_adv", "d", "r1", "l1"} <= set(log[-1])
    # --init: a new run that starts from another's student
    fine = Distiller(tmp_path / "fine", DistillConfig(kimg=0.016, batch=4), teacher=teacher, classifier=classifier,
                     student_config=TINY_STUDENT, init=tmp_path / "adv" / "train-state.pt", device="cpu")
    for a, b in zip(fine.G.parameters(), run.G.parameters()):
        assert torch.equal(a, b)
    # ... or from a generator file (a shipped model): student and EMA both start from it
    from stylemotion.checkpoints import save_generator

    save_generator(run.finished_student(), tmp_path / "g.safetensors")
    again = Distiller(tmp_path / "again", DistillConfig(kimg=0.016, batch=4), teacher=teacher,
                      classifier=classifier, student_config=TINY_STUDENT, init=tmp_path / "g.safetensors", device="cpu")
    for a, b, c in zip(again.G.parameters(), again.G_ema.parameters(), run.G_ema.parameters()):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_bad_settings_are_named(tmp_path, teacher, classifier):
    with pytest.raises(ConfigError, match="objective"):
        DistillConfig(objective="gan").validate()
    with pytest.raises(ConfigError, match="batch"):
        DistillConfig(batch=0).validate()
    with pytest.raises(ConfigError, match="teacher's z"):
        Distiller(tmp_path, DistillConfig(), teacher=teacher, classifier=classifier,
                  student_config=GeneratorConfig(z_dim=64, w_dim=16, img_resolution=64, mapping_layers=1,
                                                 channel_base=256, channel_max=16), device="cpu")
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "train-state.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CheckpointError, match="train-state.pt"):
        Distiller(tmp_path / "torn", DistillConfig(), teacher=teacher, classifier=classifier,
                  student_config=TINY_STUDENT, device="cpu")


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.slow
def test_resumed_run_equals_an_unbroken_one(tmp_path, teacher, classifier):
    """N steps in one go == N/2 steps, a new Distiller on the same folder, N/2 more: same z stream (the sampler's
    state is in the training state), same student, EMA and discriminator (whose init is seeded too)."""
    # r1_gamma=0: R1's double backward costs seconds per step on a CPU (test_adversarial_objective covers it)
    cfg = DistillConfig(kimg=0.016, batch=4, lr=5e-3, objective="both", r1_gamma=0, warmup_steps=2,
                        checkpoint_every=100, seed=3)
    whole = Distiller(tmp_path / "whole", cfg, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT,
                      device="cpu")
    assert whole.run(progress=False) == cfg.total_steps == 4
    half = Distiller(tmp_path / "half", cfg, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT,
                     device="cpu")
    assert half.run(progress=False, max_steps=2) == 2
    state = torch.load(tmp_path / "half" / "train-state.pt", weights_only=True)
    assert state["step"] == 2 and state["rng_device"] == "cpu" and state["config"]["batch"] == 4
    rest = Distiller(tmp_path / "half", cfg, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT,
                     device="cpu")
    assert rest.step == 2 and torch.equal(rest.rng.get_state(), half.rng.get_state())
    assert rest.run(progress=False) == 4
    assert torch.equal(rest.rng.get_state(), whole.rng.get_state())  # the same number of draws from one stream
    for name in ("G", "G_ema", "D"):
        for a, b in zip(getattr(whole, name).parameters(), getattr(rest, name).parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    log = [json.loads(line) for line in (tmp_path / "half" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4] and all(r["device"] == "cpu" and r["kimg_per_s"] > 0 for r in log)
    assert rest.last_run["steps"] == 2 and rest.last_run["kimg"] == pytest.approx(0.008)
    # the stream is the seed's: another seed draws other z (so the equality above is not vacuous)
    other = Distiller(tmp_path / "other", replace(cfg, seed=4), teacher=teacher, classifier=classifier,
                      student_config=TINY_STUDENT, device="cpu")
    fresh = Distiller(tmp_path / "fresh", cfg, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT,
                      device="cpu")
    z3, z4 = (torch.randn(4, 100, generator=d.rng) for d in (fresh, other))
    assert not torch.equal(z3, z4)


def test_batch_defaults_per_device_and_follows_the_resumed_run(tmp_path, teacher, classifier):
    run = Distiller(tmp_path / "b", DistillConfig(kimg=0.008), teacher=teacher, classifier=classifier,
                    student_config=TINY_STUDENT, device="cpu")
    assert run.cfg.batch == 32 and run.amp_dtype is None
    small = Distiller(tmp_path / "s", DistillConfig(kimg=0.008, batch=2), teacher=teacher, classifier=classifier,
                      student_config=TINY_STUDENT, device="cpu")
    small.run(progress=False, max_steps=1)
    again = Distiller(tmp_path / "s", DistillConfig(kimg=0.008), teacher=teacher, classifier=classifier,
                      student_config=TINY_STUDENT, device="cpu")
    assert again.cfg.batch == 2 and again.step == 1 and again.kimg_done == pytest.approx(0.002)
    with pytest.raises(ConfigError, match="trains with batch 2, not 8; leave --batch out"):
        Distiller(tmp_path / "s", DistillConfig(kimg=0.008, batch=8), teacher=teacher, classifier=classifier,
                  student_config=TINY_STUDENT, device="cpu")
    # a state whose z stream was drawn on another device type: a new stream from seed + step, said in a warning
    state = torch.load(tmp_path / "s" / "train-state.pt", weights_only=True)
    state.update(rng_device="cuda", rng=torch.zeros(16, dtype=torch.uint8))
    torch.save(state, tmp_path / "s" / "train-state.pt")
    with caplog_warning() as records:
        moved = Distiller(tmp_path / "s", DistillConfig(kimg=0.008), teacher=teacher, classifier=classifier,
                          student_config=TINY_STUDENT, device="cpu")
    assert torch.equal(moved.rng.get_state(), torch.Generator().manual_seed(0 + 1).get_state())
    assert any("drawn on cuda and cannot continue on cpu" in r.getMessage() for r in records)


class caplog_warning:
    """The warnings stylemotion.pipeline.distill logs inside the block."""

    def __enter__(self):
        import logging

        self.records, self.logger = [], logging.getLogger("stylemotion.pipeline.distill")
        self.handler = logging.Handler(logging.WARNING)
        self.handler.emit = self.records.append
        self.logger.addHandler(self.handler)
        return self.records

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)


@pytest.mark.slow  # the CPU's bf16 kernels are slow where the processor has no bf16
def test_bf16_autocast_trains_on_the_cpu(tmp_path, teacher, classifier):
    """The autocast path (CUDA's default) runs on the CPU's bf16 autocast too: losses finite, weights float32."""
    cfg = DistillConfig(kimg=0.008, batch=2, objective="both", r1_gamma=0, warmup_steps=1)
    run = Distiller(tmp_path / "amp", cfg, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT,
                    device="cpu", amp="bf16")
    assert run.amp_dtype == torch.bfloat16
    losses = run.train_step()
    assert {"l1", "fer_kl", "g_adv", "d"} <= set(losses)
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    assert all(p.dtype == torch.float32 for p in run.G.parameters())
    assert run.finished_student().mapping.w_avg.dtype == torch.float32


def test_wrong_device_amp_teacher_and_architecture_are_named(tmp_path, teacher, classifier):
    for bad in ("tpu", "cuda:x", "gpu0"):
        with pytest.raises(ConfigError, match=r"--device must be auto, cpu, cuda or cuda:N .*got '" + bad):
            resolve_device(bad)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no CUDA device; use --device cpu"):
            Distiller(tmp_path / "c", DistillConfig(), teacher=teacher, classifier=classifier,
                      student_config=TINY_STUDENT, device="cuda")
    else:
        with pytest.raises(ConfigError, match="pick one of them"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(ConfigError, match="--amp must be one of"):
        resolve_amp("fp8", torch.device("cpu"))
    with pytest.raises(CheckpointError, match=r"nope\.tar: no such teacher file; --teacher takes the DCGAN"):
        load_teacher(tmp_path / "nope.tar")
    with pytest.raises(CheckpointError, match=r"nope\.hdf5: no such classifier file; --classifier takes"):
        load_classifier(tmp_path / "nope.hdf5")
    # a run folder of another architecture: named, with what to do
    Distiller(tmp_path / "arch", DistillConfig(kimg=0.004, batch=4), teacher=teacher, classifier=classifier,
              student_config=TINY_STUDENT, device="cpu").save()
    wider = GeneratorConfig.from_dict({**TINY_STUDENT.to_dict(), "w_dim": 32})
    with pytest.raises(ConfigError, match=r"train-state\.pt: this run folder trains a student of another "
                                          r"architecture \(w_dim: 16 there, 32 here\); use a new --out"):
        Distiller(tmp_path / "arch", DistillConfig(kimg=0.004, batch=4), teacher=teacher, classifier=classifier,
                  student_config=wider, device="cpu")
    with pytest.raises(ConfigError, match="another architecture than this run's .*--init needs"):
        Distiller(tmp_path / "fresh", DistillConfig(kimg=0.004, batch=4), teacher=teacher, classifier=classifier,
                  student_config=wider, device="cpu", init=tmp_path / "arch" / "train-state.pt")


def test_missing_teacher_package_says_what_to_do(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gan_face_generate" else real(name, *a))
    with pytest.raises(MissingDependencyError, match="pip install --no-deps gan_face_generate.*--teacher PATH"):
        load_teacher()


def test_cli_distill_errors_are_one_line_with_exit_2(tmp_path, capsys, teacher):
    from stylemotion.cli import main

    assert main(["distill", "--out", str(tmp_path / "r"), "--device", "tpu"]) == 2
    assert "error: --device must be auto, cpu, cuda or cuda:N" in capsys.readouterr().err
    assert main(["distill", "--out", str(tmp_path / "r"), "--teacher", str(tmp_path / "none.tar")]) == 2
    assert "none.tar: no such teacher file" in capsys.readouterr().err


@pytest.mark.gpu
def test_cuda_run_keeps_everything_on_the_device_and_leaves_the_callers_modules(tmp_path, teacher, classifier):
    cfg = DistillConfig(kimg=0.016, batch=8, objective="both", r1_every=1, warmup_steps=1, checkpoint_every=1)
    run = Distiller(tmp_path / "gpu", cfg, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT,
                    device="cuda")
    assert run.amp_dtype == torch.bfloat16 and run.rng.device.type == "cuda"
    for module in (run.teacher, run.classifier, run.G, run.G_ema, run.D):
        assert all(p.device.type == "cuda" for p in module.parameters())
    assert next(teacher.parameters()).device.type == "cpu" and next(classifier.parameters()).device.type == "cpu"
    run.run(progress=False, max_steps=2)
    again = Distiller(tmp_path / "gpu", cfg, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT,
                      device="cuda")
    assert again.step == 2 and torch.equal(again.rng.get_state(), run.rng.get_state())
    G = again.finished_student()
    assert next(G.parameters()).device.type == "cpu"


def test_perceptual_objective_matches_features_without_a_discriminator(tmp_path, teacher, classifier):
    from stylemotion.pipeline.distill import feature_distance

    cfg = DistillConfig(kimg=0.032, batch=8, objective="perceptual", perceptual_weight=0.05, checkpoint_every=2)
    run = Distiller(tmp_path / "p", cfg, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT,
                    device="cpu")
    assert run.D is None, "only adv and both train a discriminator"
    losses = run.train_step()
    assert set(losses) == {"l1", "l1_low", "fer_kl", "percep"} and losses["percep"] > 0
    # the distance is zero for identical activations, grows with the difference, and ignores each position's scale
    faces = fer_input(teacher(held_out_z(4)))
    feats = classifier.features(faces)
    assert feats[-1].shape == (4, 7) and torch.allclose(feats[-1], classifier(faces))
    same = feature_distance(feats[:-1], feats[:-1])
    assert same.shape == (4,) and float(same.max()) < 1e-6
    scaled = feature_distance([f * 3 for f in feats[:-1]], feats[:-1])
    assert float(scaled.max()) < 1e-5
    noisy = classifier.features(faces + 0.3 * torch.randn_like(faces))
    assert float(feature_distance(noisy[:-1], feats[:-1]).min()) > 0.01
    with pytest.raises(ConfigError, match="perceptual.*classifier"):
        Distiller(tmp_path / "q", replace(cfg, fer_weight=0.0), teacher=teacher, classifier=None,
                  student_config=TINY_STUDENT, device="cpu")


def test_width_scales_the_student_and_runs_keep_their_architecture(tmp_path, teacher, classifier):
    from stylemotion.checkpoints import save_generator
    from stylemotion.pipeline.distill import DIGIFACE_CONFIG, student_config

    wide = student_config(1.5)
    assert dict(wide.channels_per_res) == {4: 384, 8: 384, 16: 192, 32: 96, 64: 48}
    assert student_config(1.0) == DIGIFACE_CONFIG
    with pytest.raises(ConfigError, match="--width"):
        student_config(0)
    cfg = DistillConfig(kimg=0.016, batch=8, checkpoint_every=1, fer_weight=0.0)
    half = student_config(0.25)
    run = Distiller(tmp_path / "w", cfg, teacher=teacher, classifier=None, student_config=half, device="cpu")
    run.run(progress=False)
    # resumed without an architecture: the saved one
    again = Distiller(tmp_path / "w", cfg, teacher=teacher, classifier=None, device="cpu")
    assert again.G.config == half
    # --init from a generator file takes that generator's architecture; another width is refused by name
    save_generator(run.finished_student(), tmp_path / "g.safetensors")
    init = Distiller(tmp_path / "i", cfg, teacher=teacher, classifier=None, init=tmp_path / "g.safetensors",
                     device="cpu")
    assert init.G.config.channels_per_res == half.channels_per_res
    with pytest.raises(ConfigError, match="another architecture"):
        Distiller(tmp_path / "j", cfg, teacher=teacher, classifier=None, init=tmp_path / "g.safetensors",
                  student_config=student_config(0.5), device="cpu")


def test_sharpness_tells_a_blurred_student_from_a_sharp_one(teacher, classifier):
    from stylemotion.runtime.jobs import laplacian_energy

    images = teacher(held_out_z(8)).clamp(-1, 1)
    blurred = torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    sharp, soft = laplacian_energy(images), laplacian_energy(blurred)
    assert sharp.shape == (8,) and bool((soft < 0.5 * sharp).all())
