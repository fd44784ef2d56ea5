"""Every exported graph passes onnx's full check, shape inference and ONNX Runtime against PyTorch."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

from stylemotion.errors import ExportError  # noqa: E402
from stylemotion.export.networks import (emotion_cnn_spec, lstm_specs, mapping_spec, synthesis_spec,  # noqa: E402
                                         vgg16_spec)
from stylemotion.export.onnx_export import export_onnx, verify_onnx  # noqa: E402
from stylemotion.models.emotion_cnn import EmotionCNN  # noqa: E402
from stylemotion.models.emotion_lstm import EmotionLSTM, LSTMConfig  # noqa: E402
from stylemotion.models.vgg16 import random_vgg16  # noqa: E402
from tests.helpers import make_generator  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    G = make_generator()
    torch.manual_seed(0)
    specs = [synthesis_spec(G), mapping_spec(G), *lstm_specs(EmotionLSTM(LSTMConfig(hidden=16))),
             emotion_cnn_spec(EmotionCNN().eval())]
    return out, G, {spec.name: (spec, export_onnx(spec, out)) for spec in specs}


def test_every_graph_is_checked_and_recorded(exported):
    out, _, files = exported
    assert set(files) == {"synthesis", "mapping", "lstm_seq", "lstm_step", "emotion_cnn"}
    for name, (spec, path) in files.items():
        assert path.exists()
        sidecar = json.loads((out / f"{name}.json").read_text())
        assert sidecar["opset"] >= 17 and sidecar["checks"]["onnx_checker_full"]
        errors = sidecar["checks"]["ort_relative_error"]
        assert set(errors) == {"1", "3", "16"} and max(errors.values()) < 1e-4, (name, errors)
        assert [i["name"] for i in sidecar["inputs"]] == [s.name for s in spec.inputs]
    assert not list(out.glob(".*.tmp.export"))


def test_one_synthesis_file_serves_batch_1_3_and_16(exported):
    out, G, files = exported
    session = ort.InferenceSession(str(files["synthesis"][1]), providers=["CPUExecutionProvider"])
    for n in (1, 3, 16):
        ws = G.mapping(torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(n)))
        with torch.no_grad():
            ref = G.synthesis(ws).numpy()
        got = session.run(None, {"ws": ws.numpy()})[0]
        assert got.shape == (n, 3, 16, 16)
        assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4


def test_mapping_takes_psi_as_an_input(exported):
    _, G, files = exported
    session = ort.InferenceSession(str(files["mapping"][1]), providers=["CPUExecutionProvider"])
    z = torch.randn(2, G.z_dim)
    for psi in (1.0, 0.5):
        got = session.run(None, {"z": z.numpy(), "psi": np.array([psi], np.float32)})[0]
        np.testing.assert_allclose(got, G.mapping(z, truncation_psi=psi).numpy(), rtol=1e-4, atol=1e-5)


def test_vgg16_features_export(tmp_path):
    spec = vgg16_spec(random_vgg16(0))
    path = export_onnx(spec, tmp_path, batches=[1, 2])
    assert json.loads((tmp_path / "vgg16.json").read_text())["outputs"][0]["shape"] == ["batch", 512]
    assert path.exists()


def test_a_graph_that_disagrees_with_pytorch_is_refused(exported, tmp_path):
    out, G, files = exported
    spec = files["synthesis"][0]
    other = synthesis_spec(make_generator(seed=3))  # same I/O, other weights
    errors = verify_onnx(files["synthesis"][1], other, [2])
    assert errors["2"] > 1e-2
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(spec, tmp_path, tolerance=0.0)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*.tmp.export"))


def test_fp16_synthesis_graph_checked_by_psnr(tmp_path):
    from stylemotion.export.networks import synthesis_fp16_spec

    G = make_generator(num_fp16_res=2, conv_clamp=256.0)
    path = export_onnx(synthesis_fp16_spec(G), tmp_path, batches=[1, 3])
    sidecar = json.loads((tmp_path / "synthesis_fp16.json").read_text())
    assert sidecar["inputs"][0]["dtype"] == "float16"
    assert min(sidecar["checks"]["ort_psnr_db_vs_fp32"].values()) >= 35
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"
    with pytest.raises(ExportError, match="needs conv_clamp"):
        synthesis_fp16_spec(make_generator())


def test_noise_input_variant_reproduces_const_noise(tmp_path):
    from stylemotion.export.networks import synthesis_noise_spec

    G = make_generator()
    spec = synthesis_noise_spec(G)
    assert [t.name for t in spec.inputs][:3] == ["ws", "noise_b4_conv1", "noise_b8_conv0"]
    path = export_onnx(spec, tmp_path, batches=[1, 3])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ws = G.mapping(torch.randn(2, G.z_dim))
    feeds = {"ws": ws.numpy()}
    for name, buf in G.synthesis.named_buffers():
        if name.endswith("noise_const"):  # "b8.conv0.noise_const" -> input "noise_b8_conv0"
            key = "noise_" + name.rsplit(".", 1)[0].replace(".", "_")
            feeds[key] = buf[None, None].expand(2, 1, -1, -1).numpy().copy()
    got = session.run(None, feeds)[0]
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode="const").numpy()
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4


def test_export_of_a_module_that_requires_grad_and_a_read_only_target(tmp_path):
    G = make_generator().requires_grad_(True)  # as a library caller might hand it over
    export_onnx(mapping_spec(G), tmp_path / "ok", batches=[1])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="cannot create the export folder|cannot write the export"):
        export_onnx(mapping_spec(G), tmp_path / "file" / "sub")
