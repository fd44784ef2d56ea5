"""VGG16: torchvision layout, the weight files it loads (never running their code), the perceptual distances."""
from __future__ import annotations

import zipfile

import pytest
import torch
import torch.nn.functional as F

from stylemotion.checkpoints.torchscript import read_torchscript_tensors
from stylemotion.checkpoints.vgg16 import load_vgg16
from stylemotion.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from stylemotion.models.vgg16 import CONV_INDEX, LPIPS_CHANNELS, PerceptualDistance, random_vgg16


class LpipsLike(torch.nn.Module):
    """Shaped like NVIDIA's LPIPS vgg16.pt: VGG16 convs under other names, plus 5 [1, C, 1, 1] linear weights."""

    def __init__(self, vgg):
        super().__init__()
        self.slices = torch.nn.ModuleList([vgg.features[:16], vgg.features[16:]])
        for i, c in enumerate(LPIPS_CHANNELS):
            self.register_buffer(f"lin{i}", torch.rand(1, c, 1, 1, generator=torch.Generator().manual_seed(i)))

    def forward(self, x):
        return self.slices[1](self.slices[0](x)) * self.lin4.mean()


def test_torchvision_layout_and_named_layers():
    vgg = random_vgg16(0)
    keys = [k for k in vgg.state_dict() if k.endswith("weight")]
    assert keys == [f"features.{i}.weight" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]
    x = torch.randn(1, 3, 32, 32)
    out = vgg(x, ["conv1_1", "conv3_2", "conv5_3"])
    assert out["conv1_1"].shape == (1, 64, 32, 32) and out["conv3_2"].shape == (1, 256, 8, 8)
    assert out["conv5_3"].shape == (1, 512, 2, 2) and (out["conv1_1"] >= 0).all()  # post-ReLU
    ref = F.relu(F.conv2d(x, vgg.features[0].weight, vgg.features[0].bias, padding=1))
    assert torch.allclose(out["conv1_1"], ref, atol=1e-6)
    with pytest.raises(ConfigError, match="unknown VGG16 layers"):
        vgg(x, ["conv6_1"])


def test_random_weights_are_seeded_and_declared():
    state = torch.random.get_rng_state()
    a, b = random_vgg16(3), random_vgg16(3)
    assert torch.equal(torch.random.get_rng_state(), state), "random_vgg16 must not touch the global RNG"
    assert a.random_weights and all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_loads_a_torchvision_state_dict(tmp_path):
    vgg = random_vgg16(1)
    sd = dict(vgg.state_dict(), **{"classifier.0.weight": torch.zeros(4096, 25088)[:2]})
    torch.save(sd, tmp_path / "vgg16-397923af.pth")
    loaded, lpips = load_vgg16(tmp_path / "vgg16-397923af.pth")
    assert not loaded.random_weights and lpips is None and loaded.source.startswith("torchvision:")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in vgg.state_dict().items())
    bad = dict(vgg.state_dict())
    bad["features.12.weight"] = torch.zeros(256, 128, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"bad\.pth: key 'features\.12\.weight' has shape \[256, 128, 3, 3\]"):
        load_vgg16(tmp_path / "bad.pth")


def test_reads_an_lpips_torchscript_file_without_running_it(tmp_path):
    vgg = random_vgg16(2)
    scripted = torch.jit.script(LpipsLike(vgg))
    scripted.save(str(tmp_path / "vgg16.pt"))
    loaded, lpips = load_vgg16(tmp_path / "vgg16.pt")
    assert loaded.source.startswith("lpips-torchscript:")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in vgg.state_dict().items())
    assert [w.numel() for w in lpips] == list(LPIPS_CHANNELS)
    assert torch.equal(lpips[0], scripted.lin0.reshape(-1))


def test_torchscript_with_a_foreign_global_is_refused(tmp_path):
    scripted = torch.jit.script(LpipsLike(random_vgg16(0)))
    scripted.save(str(tmp_path / "vgg16.pt"))
    src = zipfile.ZipFile(tmp_path / "vgg16.pt")
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."
            dst.writestr(item, data)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pt: .*os\.system"):
        read_torchscript_tensors(tmp_path / "evil.pt")


def test_not_a_vgg_archive(tmp_path):
    scripted = torch.jit.script(torch.nn.Conv2d(3, 4, 3))
    scripted.save(str(tmp_path / "conv.pt"))
    with pytest.raises(CheckpointError, match=r"conv\.pt: .*not VGG16's 13 conv layers"):
        load_vgg16(tmp_path / "conv.pt")
    with pytest.raises(CheckpointError, match="no such VGG16"):
        load_vgg16(tmp_path / "missing.pt")


@pytest.mark.parametrize("kind", ["lpips", "image2stylegan"])
def test_perceptual_distance_properties(kind):
    d = PerceptualDistance(random_vgg16(0), kind)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(3, 3, 32, 32, generator=g)).clamp(-1, 1)
    # Zero to float rounding: oneDNN may pick other kernels for the two copies (alignment), so not bit-exact.
    assert d(a, a).abs().max() < 1e-6
    dist = d(a, b)
    assert dist.shape == (3,) and (dist > 0).all()
    assert torch.allclose(d(a, b)[1:], d(a[1:], b[1:]))  # per image, independent of the batch
    assert d(a, a + 0.05).mean() < d(a, b).mean()


def test_lpips_distance_by_hand():
    vgg = random_vgg16(0)
    weights = [torch.rand(c) for c in LPIPS_CHANNELS]
    d = PerceptualDistance(vgg, "lpips", weights)
    a, b = torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
    shift = torch.tensor([-0.030, -0.088, -0.188]).reshape(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).reshape(1, 3, 1, 1)
    names = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")
    fa, fb = vgg((a - shift) / scale, names), vgg((b - shift) / scale, names)
    total = 0.0
    for w, name in zip(weights, names):
        na = fa[name] / (fa[name].norm(dim=1, keepdim=True) + 1e-10)
        nb = fb[name] / (fb[name].norm(dim=1, keepdim=True) + 1e-10)
        total += ((na - nb) ** 2 * w.reshape(1, -1, 1, 1)).sum(dim=1).mean()
    assert torch.allclose(d(a, b), total.reshape(1), rtol=1e-5)
    assert CONV_INDEX["conv5_3"] == 28
    with pytest.raises(ConfigError, match="lpips_weights"):
        PerceptualDistance(vgg, "lpips", weights[:4])


def _archive_with_data(tmp_path, name: str, data_pkl: bytes, storages: dict[str, bytes] | None = None):
    """A TorchScript-shaped zip (code/ folder, data.pkl, data/<key>) holding hand-made pickle bytes."""
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/code/__torch__.py", "# never read\n")
        zf.writestr("a/data.pkl", data_pkl)
        for key, raw in (storages or {}).items():
            zf.writestr(f"a/data/{key}", raw)
    return path


def test_torchscript_reader_refuses_tampering_cycles_and_oversized_views(tmp_path):
    import pickle

    defaults = torch._utils._rebuild_tensor_v2.__defaults__
    body = pickle.dumps((None, {"__defaults__": ({"neg": True},)}), protocol=2)[2:-1]
    tamper = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n" + body + b"b."
    with pytest.raises(UnsafeCheckpointError, match=r"tamper\.pt: .*_rebuild_tensor"):
        read_torchscript_tensors(_archive_with_data(tmp_path, "tamper.pt", tamper))
    assert torch._utils._rebuild_tensor_v2.__defaults__ == defaults
    # a list that contains itself: ] (empty list), memo 0, get 0, append, stop
    cycle = b"\x80\x02]q\x00h\x00a."
    with pytest.raises(CheckpointError, match=r"cycle\.pt: .*contains itself"):
        read_torchscript_tensors(_archive_with_data(tmp_path, "cycle.pt", cycle))
    # one stored float viewed as 1000x1000 through stride 0
    view = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
            b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00M\xe8\x03M\xe8\x03\x86K\x00K\x00\x86\x89"
            b"ccollections\nOrderedDict\n)RtR.")
    with pytest.raises(CheckpointError, match=r"view\.pt: tensor view of 1000000 elements"):
        read_torchscript_tensors(_archive_with_data(tmp_path, "view.pt", view, {"0": b"\x00\x00\x80\x3f"}))
