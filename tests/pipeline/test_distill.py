"""The DCGAN teacher's loader and the distillation loop (tiny students, a few steps: the mechanics, not quality;
the shipped model's quality is checked in test_bundled.py)."""
from __future__ import annotations

import json

import pytest
import torch

from stylemotion.checkpoints.dcgan import default_teacher_path, load_dcgan
from stylemotion.errors import CheckpointError, ConfigError
from stylemotion.models.dcgan import DCGANGenerator
from stylemotion.models.stylegan2 import GeneratorConfig
from stylemotion.pipeline.distill import DistillConfig, Distiller, fer_input, held_out_z
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
    run = Distiller(tmp_path / "run", cfg, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT)
    z = torch.randn(16, 100, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        before = (run.G(z, noise_mode="none") - teacher(z)).abs().mean()
    assert run.run(progress=False, max_seconds=0) == 1  # stops after one step, checkpointed
    assert (tmp_path / "run" / "train-state.pt").is_file() and (tmp_path / "run" / "progress.png").is_file()
    again = Distiller(tmp_path / "run", cfg, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT)
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
    with pytest.raises(ConfigError, match="objective 'recon'"):
        Distiller(tmp_path / "run", other, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT)


def test_adversarial_objective_trains_a_discriminator(tmp_path, teacher, classifier):
    cfg = DistillConfig(kimg=0.016, batch=4, objective="both", r1_every=1, warmup_steps=1, checkpoint_every=2)
    run = Distiller(tmp_path / "adv", cfg, teacher=teacher, classifier=classifier, student_config=TINY_STUDENT,
                    init=None)
    d_before = [p.clone() for p in run.D.parameters()]
    run.run(progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(d_before, run.D.parameters()))
    log = [json.loads(line) for line in (tmp_path / "adv" / "log.jsonl").read_text().splitlines()]
    assert {"g_adv", "d", "r1", "l1"} <= set(log[-1])
    # --init: a new run that starts from another's student
    fine = Distiller(tmp_path / "fine", DistillConfig(kimg=0.016, batch=4), teacher=teacher, classifier=classifier,
                     student_config=TINY_STUDENT, init=tmp_path / "adv" / "train-state.pt")
    for a, b in zip(fine.G.parameters(), run.G.parameters()):
        assert torch.equal(a, b)
    # ... or from a generator file (a shipped model): student and EMA both start from it
    from stylemotion.checkpoints import save_generator

    save_generator(run.finished_student(), tmp_path / "g.safetensors")
    again = Distiller(tmp_path / "again", DistillConfig(kimg=0.016, batch=4), teacher=teacher,
                      classifier=classifier, student_config=TINY_STUDENT, init=tmp_path / "g.safetensors")
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
                                                 channel_base=256, channel_max=16))
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "train-state.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CheckpointError, match="train-state.pt"):
        Distiller(tmp_path / "torn", DistillConfig(), teacher=teacher, classifier=classifier,
                  student_config=TINY_STUDENT)
