"""The OpenVINO engine: float32 unless asked, the precision read back, the same images as PyTorch, from either
graph; the factory's CPU choice by measurement with real engines; the fast and reference PyTorch plans."""
from __future__ import annotations

import pytest
import torch

from stylemotion.engines import open_engine
from stylemotion.engines.torch_engine import TorchEngine
from stylemotion.errors import ConfigError, EngineError
from tests.helpers import make_generator


@pytest.fixture(scope="module")
def G():
    return make_generator()


def reference(G, ws):
    with torch.no_grad():
        return G.synthesis(ws, precision="fp32")


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("batch", [1, 3])
def test_openvino_fp32_equals_pytorch_and_reads_its_precision_back(G, batch):
    pytest.importorskip("openvino")
    engine = open_engine(G, backend="openvino")
    assert engine.info.backend == "openvino" and engine.info.precision == "fp32"
    assert "runs f32 (read back)" in engine.info.detail and engine.precision_read_back == "f32"
    ws = G.mapping(torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(batch)))
    assert rel_err(engine.run(ws), reference(G, ws)) < 1e-4


def test_openvino_from_an_onnx_file_and_bad_files(G, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxscript")
    from stylemotion.engines.ov_engine import OpenVinoEngine
    from stylemotion.export.networks import synthesis_cpu_spec, synthesis_spec
    from stylemotion.export.onnx_export import export_onnx

    onnx_file = export_onnx(synthesis_cpu_spec(G), tmp_path, batches=[1, 2])
    engine = open_engine(G, backend="openvino", onnx_path=onnx_file)
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(9)))
    assert rel_err(engine.run(ws), reference(G, ws)) < 1e-4
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(EngineError, match=r"broken\.onnx: OpenVINO cannot read it"):
        open_engine(G, backend="openvino", onnx_path=bad)
    other = synthesis_spec(make_generator(z_dim=32, w_dim=32, img_resolution=32))
    with pytest.raises(EngineError, match=r"expected one input ws \[batch, 8, 32\]"):
        OpenVinoEngine(onnx_file, other)


def test_bf16_is_opt_in_and_never_a_quiet_fallback(G):
    pytest.importorskip("openvino")
    from stylemotion.engines.ov_engine import cpu_capabilities

    if "BF16" in cpu_capabilities():
        engine = open_engine(G, backend="openvino", precision="bf16")
        assert engine.precision_read_back == "bf16" and engine.info.precision == "bf16"
        ws = G.mapping(torch.randn(2, G.z_dim))
        from stylemotion.benchmark import psnr

        assert psnr(engine.run(ws), reference(G, ws)) > 25
    else:
        with pytest.raises(EngineError, match="no bf16 support"):
            open_engine(G, backend="openvino", precision="bf16")
    from stylemotion.engines.ov_engine import OpenVinoEngine
    from stylemotion.export.networks import synthesis_spec

    with pytest.raises(ConfigError, match="OpenVINO precision must be one of"):
        OpenVinoEngine(G.synthesis, synthesis_spec(G), precision="fp16")
    with pytest.raises(EngineError, match="bf16 is an OpenVINO preview precision"):
        open_engine(G, backend="torch", precision="bf16")


def test_auto_on_the_cpu_measures_the_real_engines(G, tmp_path):
    """The fastest by the figures in its detail, whatever this CPU's flags; the same images either way."""
    pytest.importorskip("openvino")
    import re

    from stylemotion.engines.cache import EngineCache

    engine = open_engine(G, device="cpu", cache=EngineCache(tmp_path))
    figures = dict(re.findall(r"([a-z-]+) ([0-9.e+-]+) ms", engine.info.detail.split(";")[0]))
    assert set(figures) == {"torch-fast", "openvino-fast"}, engine.info.detail
    fastest = min(figures, key=lambda n: float(figures[n]))
    assert engine.info.backend == fastest.split("-")[0] and "(measured, batch 1" in engine.info.detail
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(3)))
    assert rel_err(engine.run(ws), reference(G, ws)) < 1e-4


def test_openvino_reference_graph_equals_pytorch(G):
    pytest.importorskip("openvino")
    from stylemotion.engines.factory import openvino_engine

    engine = openvino_engine(G, None, graph="reference")
    assert "converted from _Synthesis" in engine.info.detail and "reference graph" in engine.info.detail
    ws = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(4)))
    assert rel_err(engine.run(ws), reference(G, ws)) < 1e-4
    with pytest.raises(ConfigError, match="graph must be one of"):
        openvino_engine(G, None, graph="winograd")


def test_openvino_missing_is_said(G, monkeypatch):
    import importlib.util

    import stylemotion.engines.factory as factory

    real = importlib.util.find_spec
    monkeypatch.setattr(factory.importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    with pytest.raises(EngineError, match=r"openvino is not installed \(pip install 'stylemotion\[openvino\]'\)"):
        open_engine(G, backend="openvino")


def test_torch_plans(G):
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(5)))
    ref = reference(G, ws)
    fast = TorchEngine(G, plan="fast")
    assert fast.plan == "fast" and "fast plan" in fast.info.detail
    assert rel_err(fast.run(ws), ref) < 1e-4
    official = TorchEngine(G, plan="reference", retain_memory=False)
    assert official.plan == "reference" and "freed memory" not in official.info.detail
    assert torch.allclose(official.run(ws), ref, rtol=1e-5, atol=1e-6)
    assert TorchEngine(G, noise_mode="random").plan == "reference"  # only constant noise is planned
    with pytest.raises(ConfigError, match="fast plan renders float32 with constant noise"):
        TorchEngine(G, plan="fast", noise_mode="none")
    with pytest.raises(ConfigError, match="plan must be one of"):
        TorchEngine(G, plan="turbo")
