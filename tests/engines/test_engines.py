"""Every engine available here returns the PyTorch float32 images for the same ws; the factory says why."""
from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from stylemotion.engines import open_engine
from stylemotion.engines.cache import EngineCache
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


def snapshot(G):
    """What an engine must not change: every parameter and buffer (device, dtype, requires_grad, values) and
    every module's training flag."""
    return ({n: (p.device, p.dtype, p.requires_grad, p.detach().clone()) for n, p in G.named_parameters()},
            {n: (b.device, b.dtype, b.clone()) for n, b in G.named_buffers()},
            [m.training for m in G.modules()])


def assert_unchanged(G, before):
    params, buffers, training = snapshot(G)
    assert training == before[2], "an engine changed the caller's training flags"
    assert params.keys() == before[0].keys() and buffers.keys() == before[1].keys()
    for n, (device, dtype, grad, value) in before[0].items():
        p = params[n]
        assert (p[0], p[1], p[2]) == (device, dtype, grad), f"parameter {n} moved, changed dtype or requires_grad"
        assert torch.equal(p[3], value), f"parameter {n} changed"  # the weights themselves, not a conv result
    for n, (device, dtype, value) in before[1].items():
        b = buffers[n]
        assert (b[0], b[1]) == (device, dtype) and torch.equal(b[2], value), f"buffer {n} changed"


def a_trainable_generator():
    """A generator as a caller might hold one: training mode, gradients on (engines must leave both alone)."""
    return make_generator().train().requires_grad_(True)


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_ort_cpu_equals_pytorch(G, synthesis_onnx, batch):
    engine = open_engine(G, backend="onnxruntime", onnx_path=synthesis_onnx, device="cpu")
    assert engine.info.backend == "onnxruntime" and "backend asked: ORT CPU" in engine.info.detail
    ws = G.mapping(torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(batch)))
    ref = reference(G, ws)
    out = engine.run(ws)
    assert (out - ref).abs().max() / ref.abs().max() < 1e-4


def test_torch_cpu_engine_and_w_broadcast(G, monkeypatch):
    import stylemotion.engines.factory as factory

    monkeypatch.setattr(factory, "_openvino_missing", lambda req, precision: "not here")  # one candidate left
    engine = open_engine(G, device="cpu")
    assert engine.info.backend == "torch" and "no synthesis.onnx given" in engine.info.detail
    assert engine.info.detail.startswith("auto: torch-fast, the only candidate here") and "openvino: not here" in \
        engine.info.detail
    assert "fast plan" in engine.info.detail
    assert "tensorrt" in engine.info.detail  # says why TensorRT was passed over
    w = G.mapping(torch.randn(2, G.z_dim))[:, 0]
    ref = reference(G, w[:, None].expand(-1, G.num_ws, -1))
    assert torch.allclose(engine.run(w), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())


def test_bad_requests_fail_clearly(G, tmp_path):
    engine = open_engine(G, backend="torch", device="cpu", max_batch=4)
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
    with pytest.raises(ConfigError, match="batch 8 must be between 1 and max_batch 4"):
        open_engine(G, device="cpu", max_batch=4, batch=8)
    with pytest.raises(ConfigError, match="precision must be one of"):
        open_engine(G, device="cpu", precision="int8")


def test_corrupt_or_foreign_onnx_files(G, synthesis_onnx, tmp_path):
    pytest.importorskip("onnxruntime")
    from stylemotion.engines.ort_engine import OrtEngine

    bad = tmp_path / "synthesis.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(EngineError, match=r"synthesis\.onnx: ONNX Runtime cannot load it"):
        open_engine(G, backend="onnxruntime", onnx_path=bad, device="cpu")
    with pytest.raises(EngineError, match=r"synthesis\.onnx: (ONNX Runtime|OpenVINO) cannot (load|read) it"):
        open_engine(G, onnx_path=bad, device="cpu", cache=EngineCache(tmp_path))  # auto: an error, no fall back
    from stylemotion.export.networks import synthesis_spec

    big = synthesis_spec(make_generator(z_dim=32, w_dim=32, img_resolution=32))  # another network's spec
    with pytest.raises(EngineError, match=r"expected one input ws \[batch, 8, 32\]"):
        OrtEngine(synthesis_onnx, big)
    from stylemotion.export.networks import synthesis_fp16_spec
    from stylemotion.export.onnx_export import export_onnx

    Gc = make_generator(conv_clamp=256.0)
    fp16 = export_onnx(synthesis_fp16_spec(Gc), tmp_path / "fp16", batches=[1])
    with pytest.raises(EngineError, match="runs float32 graphs.*not synthesis_fp16.onnx"):
        open_engine(Gc, backend="onnxruntime", onnx_path=fp16, device="cpu")


def test_engines_never_move_or_change_the_generator(synthesis_onnx, tmp_path):
    G = a_trainable_generator()  # the same seeded network as the synthesis_onnx fixture's
    ws = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(7))).detach()
    before = snapshot(G)
    ref = reference(G, ws)
    for kwargs in (dict(backend="torch", device="cpu"), dict(backend="onnxruntime", device="cpu",
                                                              onnx_path=synthesis_onnx),
                   dict(device="cpu", cache=EngineCache(tmp_path))):
        engine = open_engine(G, **kwargs)
        out = engine.run(ws)
        assert not out.requires_grad
        assert (out - ref).abs().max() / ref.abs().max() < 1e-4, kwargs
        assert_unchanged(G, before)
    engine = TorchEngine(G)
    assert engine.G is not G and all(not p.requires_grad for p in engine.G.parameters()) and not engine.G.training
    with torch.no_grad():
        next(G.parameters()).add_(1.0)  # the engine holds its own copy: the caller may go on changing G
    assert (engine.run(ws) - ref).abs().max() / ref.abs().max() < 1e-4


@pytest.mark.gpu
def test_cuda_engines_never_move_or_change_the_generator():
    for G in (a_trainable_generator(), a_trainable_generator().cuda()):  # a CPU and a CUDA caller
        before = snapshot(G)
        ws = torch.randn(2, G.num_ws, G.w_dim)
        ref = reference(G, ws.to(next(G.parameters()).device)).cpu()
        for kwargs in (dict(precision="fp32", cuda_graphs=False), dict(precision="fp32", cuda_graphs=True),
                       dict(precision="fp16", cuda_graphs=True)):
            engine = open_engine(G, backend="torch", device="cuda", **kwargs)
            out = engine.run(ws)  # CPU ws: the engine moves its input, never the caller's module
            assert out.device.type == "cuda" and engine.info.device.startswith("cuda")
            # a sanity bound only (TF32 convolutions on the GPU against a CPU reference); exactness is tested above
            assert (out.float().cpu() - ref).abs().max() / ref.abs().max() < 2e-2, kwargs
            assert_unchanged(G, before)


def test_ort_cuda_without_the_cuda_provider_says_so(G, synthesis_onnx, monkeypatch):
    import stylemotion.engines.factory as factory

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # reach the CUDA branch on this CPU machine
    monkeypatch.setattr(factory, "_ort_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(EngineError, match=r"ONNX Runtime CUDA engine unavailable on cuda: .*no "
                                          r"CUDAExecutionProvider.*install onnxruntime-gpu"):
        open_engine(G, backend="onnxruntime", device="cuda", onnx_path=synthesis_onnx)
    monkeypatch.setattr(factory, "_ort_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(EngineError, match="ONNX Runtime CUDA engine unavailable on cuda:0: no synthesis.onnx given"):
        open_engine(G, backend="onnxruntime", device="cuda:0")
    with pytest.raises(EngineError, match="fp16 asked"):
        open_engine(G, backend="onnxruntime", device="cuda", onnx_path=synthesis_onnx, precision="fp16")


def test_engines_take_io_names_from_the_export_spec(G, synthesis_onnx):
    from stylemotion.engines import ort_engine, trt_engine
    from stylemotion.engines.ort_engine import OrtEngine
    from stylemotion.export.networks import synthesis_spec
    from stylemotion.export.spec import TensorSpec

    spec = synthesis_spec(G)
    engine = OrtEngine(synthesis_onnx, spec)
    assert (engine.input_name, engine.output_name) == (spec.inputs[0].name, spec.outputs[0].name)
    assert (engine.info.num_ws, engine.info.w_dim, engine.info.resolution) == (G.num_ws, G.w_dim, G.img_resolution)
    renamed = dataclasses.replace(spec, inputs=(TensorSpec("latents", spec.inputs[0].shape),))
    with pytest.raises(EngineError, match=r"expected one input latents \[batch, 6, 16\], found \[\('ws'"):
        OrtEngine(synthesis_onnx, renamed)
    renamed = dataclasses.replace(spec, outputs=(TensorSpec("rgb", spec.outputs[0].shape),))
    with pytest.raises(EngineError, match=r"expected an output rgb \[batch, 3, 16, 16\], found \[\('images'"):
        OrtEngine(synthesis_onnx, renamed)
    half = dataclasses.replace(spec, inputs=(TensorSpec("ws", spec.inputs[0].shape, "float16"),))
    with pytest.raises(ConfigError, match="engines take and return float32, ws is float16"):
        OrtEngine(synthesis_onnx, half)
    for module in (ort_engine, trt_engine):  # no I/O name spelled out where the spec should be read
        source = inspect.getsource(module)
        assert '"ws"' not in source and '"images"' not in source, module.__name__


@pytest.mark.gpu
def test_cuda_engines_match_fp32(G):
    Gc = make_generator(img_resolution=64, channel_base=2048, channel_max=64, num_fp16_res=2, conv_clamp=256).cuda()
    ws = Gc.mapping(torch.randn(4, Gc.z_dim, device="cuda"))
    ref = reference(Gc, ws)
    graphs = open_engine(Gc, backend="torch", device="cuda", precision="fp16", cuda_graphs=True)
    out = graphs.run(ws).clone()
    again = graphs.run(ws).clone()  # a replay: the same images up to cuDNN's choice of algorithm,
    ws2 = Gc.mapping(torch.randn(4, Gc.z_dim, device="cuda"))  # never bit equality of convolutions
    other = graphs.run(ws2).clone()  # new input into the same static buffer: other images
    changed = (other - out).abs().max().item()
    assert changed > 0.05, "the replay ignored its new input"
    assert (again - out).abs().max().item() <= 1e-2 * changed, "a replay of the same input differs"
    ref2 = reference(Gc, ws2)
    assert 10 * torch.log10(torch.tensor((ref2.max() - ref2.min()).item() ** 2
                                         / (other.float() - ref2).square().mean().item())).item() >= 35
    mse = (out.float() - ref).square().mean().item()
    peak = (ref.max() - ref.min()).item()
    assert 10 * torch.log10(torch.tensor(peak ** 2 / mse)).item() >= 35
    fp32 = open_engine(Gc, backend="torch", device="cuda", precision="fp32", cuda_graphs=False)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # float32 as float32 in both (the engine's
        exact = reference(Gc, ws)                                      # plan orders its sums its own way)
        assert (fp32.run(ws) - exact).abs().max() / exact.abs().max() < 1e-4
