"""Every engine available here returns the PyTorch float32 images for the same ws; the factory says why."""
from __future__ import annotations

import pytest
import torch

from stylemotion.engines import open_engine
from stylemotion.engines.torch_engine import TorchEngine
from stylemotion.errors import ConfigError, EngineError, ShapeError
from tests.helpers import make_generator


@pytest.fixture(scope="module")
def G():
    return make_generator()


@pytest.fixture(scope="module")
def synthesis_onnx(G, tmp_path_factory):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from stylemotion.export.networks import synthesis_spec
    from stylemotion.export.onnx_export import export_onnx

    return export_onnx(synthesis_spec(G), tmp_path_factory.mktemp("onnx"), batches=[1, 2])


def reference(G, ws):
    with torch.no_grad():
        return G.synthesis(ws, precision="fp32")


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_ort_cpu_equals_pytorch(G, synthesis_onnx, batch):
    engine = open_engine(G, onnx_path=synthesis_onnx, device="cpu")
    assert engine.info.backend == "onnxruntime" and "chosen: ORT CPU" in engine.info.detail
    ws = G.mapping(torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(batch)))
    ref = reference(G, ws)
    out = engine.run(ws)
    assert (out - ref).abs().max() / ref.abs().max() < 1e-4


def test_torch_cpu_engine_and_w_broadcast(G):
    engine = open_engine(G, device="cpu")
    assert engine.info.backend == "torch" and "no synthesis.onnx given" in engine.info.detail
    assert "tensorrt" in engine.info.detail  # says why TensorRT was passed over
    w = G.mapping(torch.randn(2, G.z_dim))[:, 0]
    assert torch.equal(engine.run(w), reference(G, w[:, None].expand(-1, G.num_ws, -1)))


def test_bad_requests_fail_clearly(G, tmp_path):
    engine = open_engine(G, device="cpu", max_batch=4)
    with pytest.raises(ShapeError, match="ws dimension 1 must be 6"):
        engine.run(torch.zeros(1, 5, G.w_dim))
    with pytest.raises(ShapeError, match="outside this engine's range 1..4"):
        engine.run(torch.zeros(5, G.num_ws, G.w_dim))
    with pytest.raises(EngineError, match="TensorRT engine unavailable"):
        open_engine(G, backend="tensorrt")
    with pytest.raises(EngineError, match=r"nope\.onnx: no such ONNX file"):
        open_engine(G, onnx_path=tmp_path / "nope.onnx")
    with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device"):
        TorchEngine(G, cuda_graphs=True)
    with pytest.raises(EngineError, match="fp16 needs CUDA"):
        open_engine(G, device="cpu", precision="fp16")


def test_corrupt_or_foreign_onnx_files(G, synthesis_onnx, tmp_path):
    pytest.importorskip("onnxruntime")
    from stylemotion.engines.ort_engine import OrtEngine

    bad = tmp_path / "synthesis.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(EngineError, match=r"synthesis\.onnx: ONNX Runtime cannot load it"):
        open_engine(G, onnx_path=bad, device="cpu")
    with pytest.raises(EngineError, match=r"expected one input ws \[batch, 14, 512\]"):
        OrtEngine(synthesis_onnx, num_ws=14, w_dim=512, resolution=256)
    from stylemotion.export.networks import synthesis_fp16_spec
    from stylemotion.export.onnx_export import export_onnx

    Gc = make_generator(conv_clamp=256.0)
    fp16 = export_onnx(synthesis_fp16_spec(Gc), tmp_path / "fp16", batches=[1])
    with pytest.raises(EngineError, match="runs float32 graphs.*not synthesis_fp16.onnx"):
        open_engine(Gc, onnx_path=fp16, device="cpu")


@pytest.mark.gpu
def test_cuda_engines_match_fp32(G):
    Gc = make_generator(img_resolution=64, channel_base=2048, channel_max=64, num_fp16_res=2, conv_clamp=256).cuda()
    ws = Gc.mapping(torch.randn(4, Gc.z_dim, device="cuda"))
    ref = reference(Gc, ws)
    graphs = open_engine(Gc, backend="torch", device="cuda", precision="fp16", cuda_graphs=True)
    out = graphs.run(ws).clone()
    again = graphs.run(ws)  # replay of the captured graph
    assert torch.equal(out, again)
    ws2 = Gc.mapping(torch.randn(4, Gc.z_dim, device="cuda"))  # new input into the same static buffer
    other = graphs.run(ws2)
    assert not torch.equal(other, out)
    ref2 = reference(Gc, ws2)
    assert 10 * torch.log10(torch.tensor((ref2.max() - ref2.min()).item() ** 2
                                         / (other.float() - ref2).square().mean().item())).item() >= 35
    mse = (out.float() - ref).square().mean().item()
    peak = (ref.max() - ref.min()).item()
    assert 10 * torch.log10(torch.tensor(peak ** 2 / mse)).item() >= 35
    fp32 = open_engine(Gc, backend="torch", device="cuda", precision="fp32", cuda_graphs=False)
    assert (fp32.run(ws) - ref).abs().max() / ref.abs().max() < 1e-4
