"""The engine cache (keys, atomic writes, corrupt or mismatched plans rebuilt) and the TensorRT logic that needs
no TensorRT; the TensorRT build itself runs only where the package and a GPU exist."""
from __future__ import annotations

import json
import os

import pytest
import torch

from stylemotion.engines.cache import CacheKey, EngineCache
from stylemotion.engines.factory import tensorrt_key
from stylemotion.errors import ConfigError, EngineError, MissingDependencyError
from stylemotion.export.networks import lstm_specs, synthesis_spec
from stylemotion.export.spec import BatchProfile
from stylemotion.models.emotion_lstm import EmotionLSTM
from tests.helpers import make_generator


def key(**changes):
    base = dict(name="synthesis", onnx_sha256="ab" * 32, backend="tensorrt", backend_version="10.9.0",
                gpu="NVIDIA H100", compute_capability="9.0", precision="fp16", profile=(1, 8, 32))
    base.update(changes)
    return CacheKey(**base)


def test_store_load_and_every_key_field_matters(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store(key(), b"plan-bytes")
    assert cache.load(key()) == b"plan-bytes"
    for change in (dict(onnx_sha256="cd" * 32), dict(backend_version="10.10.0"), dict(gpu="NVIDIA H200"),
                   dict(compute_capability="8.9"), dict(precision="fp32"), dict(profile=(1, 4, 16))):
        assert cache.load(key(**change)) is None, change
    assert not list(tmp_path.glob(".*")), "temporary files left behind"
    entries = cache.entries()
    assert len(entries) == 1 and entries[0]["key"]["gpu"] == "NVIDIA H100" and entries[0]["bytes"] == 10


def test_a_corrupt_or_mismatched_entry_is_dropped_not_trusted(tmp_path):
    cache = EngineCache(tmp_path)
    plan, sidecar = cache.paths(key())
    cache.store(key(), b"plan-bytes")
    plan.write_bytes(b"plan-bytez")  # corrupted on disk
    assert cache.load(key()) is None and not plan.exists() and not sidecar.exists()
    cache.store(key(), b"plan-bytes")
    meta = json.loads(sidecar.read_text())
    meta["key"]["gpu"] = "another GPU"  # a plan copied from another machine under this name
    sidecar.write_text(json.dumps(meta))
    assert cache.load(key()) is None and not plan.exists()
    cache.store(key(), b"plan-bytes")
    sidecar.write_text("{not json")
    assert cache.load(key()) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_cache_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(EngineError, match="not writable.*STYLEMOTION_CACHE_DIR"):
        EngineCache(ro / "cache")


def test_unwritable_cache_folder_even_as_root(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(EngineError, match="engine cache folder is not writable"):
        EngineCache(tmp_path / "file" / "cache")


def test_cache_dir_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEMOTION_CACHE_DIR", str(tmp_path / "c"))
    assert EngineCache().root == tmp_path / "c"


def test_optimization_profile_shapes_come_from_the_spec():
    from stylemotion.engines.trt_build import profile_shapes

    G = make_generator()
    shapes = profile_shapes(synthesis_spec(G), BatchProfile(1, 8, 32))
    assert shapes == {"ws": ((1, 6, 16), (8, 6, 16), (32, 6, 16))}
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        profile_shapes(synthesis_spec(G), BatchProfile(4, 2, 8))
    with pytest.raises(ConfigError, match=r"dynamic axes \['time'\]"):
        profile_shapes(lstm_specs(EmotionLSTM())[0], BatchProfile())


def test_key_names_the_onnx_content_and_profile(tmp_path):
    f = tmp_path / "synthesis.onnx"
    f.write_bytes(b"graph-1")
    a = tensorrt_key(f, precision="fp16", profile=BatchProfile(1, 8, 32), device="cpu", trt_version="10.9")
    f.write_bytes(b"graph-2")
    b = tensorrt_key(f, precision="fp16", profile=BatchProfile(1, 8, 32), device="cpu", trt_version="10.9")
    assert a.onnx_sha256 != b.onnx_sha256 and a.digest() != b.digest() and a.profile == (1, 8, 32)
    data = tmp_path / "synthesis.onnx.data"  # same graph, new weights: a different model
    data.write_bytes(b"weights-1")
    c = tensorrt_key(f, precision="fp16", profile=BatchProfile(1, 8, 32), device="cpu", trt_version="10.9")
    data.write_bytes(b"weights-2")
    d = tensorrt_key(f, precision="fp16", profile=BatchProfile(1, 8, 32), device="cpu", trt_version="10.9")
    assert len({b.onnx_sha256, c.onnx_sha256, d.onnx_sha256}) == 3


def test_tensorrt_paths_say_what_to_install(tmp_path):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    from stylemotion.engines.trt_build import build_plan

    with pytest.raises(MissingDependencyError, match=r"stylemotion\[tensorrt\]"):
        build_plan(tmp_path / "x.onnx", synthesis_spec(make_generator()))


def test_build_and_engines_commands(tmp_path, capsys):
    from stylemotion.cli import main

    cache = EngineCache(tmp_path / "cache")
    cache.store(key(), b"plan")
    assert main(["engines", "--cache", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "1 cached engine(s)" in out and "NVIDIA H100" in out and "fp16" in out
    assert main(["build", "ffhq-256", "--onnx", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 2
    assert "no such ONNX file" in capsys.readouterr().err
    assert main(["build", "ffhq-256", "--onnx", str(tmp_path), "--backend", "torch"]) == 2
    assert "only TensorRT plans are prebuilt" in capsys.readouterr().err
    (tmp_path / "cache" / "stray.json").write_text("[1, 2]")  # not a sidecar: listed as such, no crash
    assert main(["engines", "--cache", str(tmp_path / "cache")]) == 0
    assert "stray.plan: not an engine sidecar" in capsys.readouterr().out
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        from stylemotion.checkpoints import save_generator

        ckpt = save_generator(make_generator(), tmp_path / "g.safetensors")
        (tmp_path / "synthesis.onnx").write_bytes(b"graph")
        assert main(["build", str(ckpt), "--onnx", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 2
        assert "pip install 'stylemotion[tensorrt]'" in capsys.readouterr().err


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_fp16_plan_matches_pytorch(tmp_path):
    from stylemotion.engines import open_engine
    from stylemotion.export.onnx_export import export_onnx

    G = make_generator(img_resolution=64, channel_base=2048, channel_max=64, num_fp16_res=2, conv_clamp=256)
    onnx_file = export_onnx(synthesis_spec(G), tmp_path / "onnx", batches=[1, 2])
    cache = EngineCache(tmp_path / "cache")
    engine = open_engine(G.cuda(), backend="tensorrt", onnx_path=onnx_file, cache=cache,
                         profile=BatchProfile(1, 4, 16))
    assert "plan built and cached" in engine.info.detail
    for n in (1, 3, 16):
        ws = G.mapping(torch.randn(n, G.z_dim, device="cuda"))
        ref = G.synthesis(ws, precision="fp32")
        out = engine.run(ws)
        mse = (out.float() - ref).square().mean().item()
        peak = (ref.max() - ref.min()).item()
        assert 10 * torch.log10(torch.tensor(peak ** 2 / mse)).item() >= 35
    again = open_engine(G, backend="tensorrt", onnx_path=onnx_file, cache=cache, profile=BatchProfile(1, 4, 16))
    assert "plan from the cache" in again.info.detail
