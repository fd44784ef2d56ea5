"""``backend="auto"`` picks by measurement: the faster candidate whatever the order, a cache hit measures nothing,
the key names everything the choice depends on, a corrupt record is measured again, a named backend is never
measured. Fake engines (sleeping a fixed time per run) stand in for real ones, so this runs on any CPU."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import time

import pytest
import torch

import stylemotion.engines.factory as factory
import stylemotion.engines.selection as selection
from stylemotion.engines import open_engine
from stylemotion.engines.base import EngineInfo
from stylemotion.engines.cache import EngineCache
from stylemotion.engines.selection import Candidate, Measurement, choice_key, choose
from stylemotion.errors import EngineError
from tests.helpers import make_generator

QUICK = Measurement(warmup=1, runs=3, min_seconds=0.0, max_seconds=5.0)


class FakeEngine:
    def __init__(self, name: str, seconds: float, counts: dict):
        self.info = EngineInfo(name, "fp32", "cpu", 1, 64, 16, 6, 16, f"fake {name}")
        self.seconds, self.counts, self.name = seconds, counts, name

    def run(self, ws):
        self.counts[f"run {self.name}"] = self.counts.get(f"run {self.name}", 0) + 1
        time.sleep(self.seconds)
        return torch.zeros(ws.shape[0], 3, 16, 16)


def fake(name: str, seconds: float, counts: dict) -> Candidate:
    def build():
        counts[f"build {name}"] = counts.get(f"build {name}", 0) + 1
        return FakeEngine(name, seconds, counts)
    return Candidate(name, build)


def key_for(candidates, **changes):
    key = choice_key(device="cpu", threads=2, model="ab" * 32, batch=1, precision="fp32", candidates=candidates)
    return dataclasses.replace(key, **changes)


WS = torch.zeros(1, 6, 16)


@pytest.mark.parametrize("order", [("slow", "fast"), ("fast", "slow")])
def test_the_faster_candidate_wins_whatever_the_order(tmp_path, order):
    counts: dict = {}
    seconds = {"slow": 0.03, "fast": 0.003}
    candidates = [fake(n, seconds[n], counts) for n in order]
    engine, choice = choose(candidates, key_for(candidates), WS, cache=EngineCache(tmp_path), settings=QUICK)
    assert engine.name == "fast" and choice.chosen == "fast" and not choice.cached
    assert choice.ms["fast"] < choice.ms["slow"]
    assert counts["run slow"] >= 1 + QUICK.runs and counts["run fast"] >= 1 + QUICK.runs  # warm-up + timed
    text = choice.describe()
    assert text.startswith("auto: fast ") and " ms < slow " in text and "(measured, batch 1, median of" in text


def test_a_cache_hit_builds_only_the_choice_and_measures_nothing(tmp_path):
    counts: dict = {}
    candidates = [fake("slow", 0.03, counts), fake("fast", 0.003, counts)]
    cache = EngineCache(tmp_path)
    choose(candidates, key_for(candidates), WS, cache=cache, settings=QUICK)
    counts.clear()
    engine, choice = choose(candidates, key_for(candidates), WS, cache=cache, settings=QUICK)
    assert engine.name == "fast" and choice.cached
    assert counts == {"build fast": 1}, "a cache hit must build the chosen engine only and run nothing"
    assert "(cached from " in choice.describe() and "fast" in choice.describe()
    (entry,) = cache.choices()
    assert entry["choice"]["chosen"] == "fast" and entry["key"]["candidates"] == ["slow", "fast"]
    assert not list(tmp_path.rglob(".*")), "temporary files left behind"


def test_the_key_names_machine_versions_batch_precision_threads_and_model(monkeypatch):
    candidates = [Candidate("a", lambda: None), Candidate("b", lambda: None)]
    base = key_for(candidates)
    changed = [key_for(candidates, batch=4), key_for(candidates, precision="bf16"),
               key_for(candidates, threads=1), key_for(candidates, model_sha256="cd" * 32),
               key_for(candidates[::-1])]
    monkeypatch.setattr(selection, "library_versions", lambda: (("torch", "9.9.9"), ("openvino", "2099.1")))
    changed.append(key_for(candidates))
    monkeypatch.undo()
    monkeypatch.setattr(selection, "cpu_model", lambda: "Intel(R) Xeon(R) Platinum 8480+")
    changed.append(key_for(candidates))
    monkeypatch.setattr(selection, "cpu_flags", lambda: {"avx512f", "amx_bf16"})
    changed.append(key_for(candidates))
    digests = {k.digest() for k in changed}
    assert base.digest() not in digests and len(digests) == len(changed)
    monkeypatch.undo()
    assert key_for(candidates) == base, "the key of one machine and one model is stable"
    assert dict(base.versions)["torch"] == importlib.metadata.version("torch")


def test_another_key_is_a_miss_and_is_measured(tmp_path):
    counts: dict = {}
    candidates = [fake("slow", 0.02, counts), fake("fast", 0.002, counts)]
    cache = EngineCache(tmp_path)
    choose(candidates, key_for(candidates), WS, cache=cache, settings=QUICK)
    for other in (key_for(candidates, batch=8), key_for(candidates, versions=(("torch", "0.0"),)),
                  key_for(candidates, machine="NVIDIA H200 sm9.0")):
        counts.clear()
        _, choice = choose(candidates, other, WS, cache=cache, settings=QUICK)
        assert not choice.cached and counts["run slow"] > 1, other
    assert len(cache.choices()) == 4


@pytest.mark.parametrize("corrupt", ["{not json", "[]", json.dumps({"key": {}, "choice": {}}), "record"])
def test_a_corrupt_record_is_measured_again_never_trusted(tmp_path, corrupt):
    counts: dict = {}
    candidates = [fake("slow", 0.02, counts), fake("fast", 0.002, counts)]
    cache = EngineCache(tmp_path)
    key = key_for(candidates)
    choose(candidates, key, WS, cache=cache, settings=QUICK)
    path = cache.choice_path(key)
    if corrupt == "record":  # the right key, but figures that do not make "slow" the fastest
        meta = json.loads(path.read_text())
        meta["choice"]["chosen"] = "slow"
        text = json.dumps(meta)
    else:
        text = corrupt
    path.write_text(text)
    counts.clear()
    engine, choice = choose(candidates, key, WS, cache=cache, settings=QUICK)
    assert engine.name == "fast" and not choice.cached and counts["run slow"] > 1
    assert json.loads(path.read_text())["choice"]["chosen"] == "fast", "the record is written again"


def test_a_record_naming_an_engine_no_longer_offered_is_not_trusted(tmp_path):
    counts: dict = {}
    candidates = [fake("slow", 0.02, counts), fake("fast", 0.002, counts)]
    cache = EngineCache(tmp_path)
    key = key_for(candidates)
    path = cache.store_choice(key, {"chosen": "gone", "ms": {"gone": 1.0}, "batch": 1, "runs": 3, "when": "x"})
    engine, choice = choose(candidates, key, WS, cache=cache, settings=QUICK)
    assert engine.name == "fast" and not choice.cached and path.exists()


def test_a_candidate_that_fails_is_an_error_not_a_quiet_fall_back(tmp_path):
    counts: dict = {}

    def broken():
        raise EngineError("synthesis.onnx: this library cannot read it")

    candidates = [fake("works", 0.001, counts), Candidate("broken", broken)]
    with pytest.raises(EngineError, match="synthesis.onnx: this library cannot read it"):
        choose(candidates, key_for(candidates), WS, cache=EngineCache(tmp_path), settings=QUICK)
    assert not EngineCache(tmp_path).choices()


def test_measurement_is_bounded_in_seconds():
    counts: dict = {}
    engines = {"a": FakeEngine("a", 0.05, counts), "b": FakeEngine("b", 0.05, counts)}
    t0 = time.perf_counter()
    times = selection.measure(engines, WS, Measurement(warmup=1, runs=100, max_seconds=0.2))
    assert time.perf_counter() - t0 < 2.0
    assert 1 <= len(times["a"]) < 100 and len(times["a"]) == len(times["b"])


# ---------------------------------------------------------------- through open_engine, on the tiny model


@pytest.fixture(scope="module")
def G():
    return make_generator()


@pytest.fixture()
def fake_openvino(monkeypatch):
    """OpenVINO as a candidate without its seconds of conversion (tests/engines/test_openvino.py builds real ones)."""
    built = []

    def openvino_engine(G, onnx_file, *, precision="fp32", threads=None, max_batch=64, graph="fast", detail=""):
        built.append(graph)
        engine = FakeEngine("openvino", 0.0, {})
        engine.info = dataclasses.replace(engine.info, detail=f"fake OpenVINO {detail}".strip())
        return engine

    monkeypatch.setattr(factory, "_openvino_missing", lambda req, precision: None)
    monkeypatch.setattr(factory, "openvino_engine", openvino_engine)
    return built


def fixed_times(ms: dict[str, float]):
    """A stand-in for ``selection.measure`` that returns fixed figures and counts its calls."""
    calls = []

    def measure(engines, ws, settings=None):
        calls.append(sorted(engines))
        return {n: [ms[n] / 1e3] * 3 for n in engines}
    return measure, calls


@pytest.mark.parametrize("faster", ["torch-fast", "openvino-fast"])
def test_auto_on_the_cpu_follows_the_measurement_not_the_cpu_flags(G, tmp_path, monkeypatch, fake_openvino,
                                                                   faster):
    measure, calls = fixed_times({"torch-fast": 10.0 if faster == "torch-fast" else 30.0,
                                  "openvino-fast": 10.0 if faster == "openvino-fast" else 30.0})
    monkeypatch.setattr(selection, "measure", measure)
    cache = EngineCache(tmp_path)
    engine = open_engine(G, device="cpu", cache=cache)
    assert engine.info.backend == ("torch" if faster == "torch-fast" else "openvino")
    slower = "openvino-fast" if faster == "torch-fast" else "torch-fast"
    assert engine.info.detail.startswith(f"auto: {faster} 10 ms < {slower} 30 ms (measured, batch 1")
    assert "onnxruntime cpu: no synthesis.onnx given" in engine.info.detail
    assert calls == [["openvino-fast", "torch-fast"]]
    again = open_engine(G, device="cpu", cache=cache)
    assert len(calls) == 1, "the second open must come from the cache"
    assert again.info.backend == engine.info.backend and "(cached from " in again.info.detail
    open_engine(G, device="cpu", cache=cache, batch=4)
    assert len(calls) == 2, "another batch size is measured on its own"


def test_a_named_backend_is_never_measured(G, tmp_path, monkeypatch, fake_openvino):
    def no(*a, **k):
        raise AssertionError("a backend asked for by name must not be measured")

    monkeypatch.setattr(selection, "measure", no)
    monkeypatch.setattr(factory, "choose", no)
    engine = open_engine(G, backend="torch", device="cpu", cache=EngineCache(tmp_path))
    assert engine.info.backend == "torch" and "backend asked: PyTorch CPU" in engine.info.detail
    engine = open_engine(G, backend="openvino", cache=EngineCache(tmp_path))
    assert engine.info.backend == "openvino" and "backend asked: OpenVINO CPU" in engine.info.detail
    assert not EngineCache(tmp_path).choices()


def test_one_candidate_is_not_measured(G, tmp_path, monkeypatch):
    measure, calls = fixed_times({})
    monkeypatch.setattr(selection, "measure", measure)
    engine = open_engine(G, device="cpu", noise_mode="random", cache=EngineCache(tmp_path))
    assert engine.info.backend == "torch" and not calls
    assert engine.info.detail.startswith("auto: torch-reference, the only candidate here")
    assert "noise_mode 'random' needs the torch backend" in engine.info.detail


def test_an_unwritable_cache_still_measures_and_says_so(G, tmp_path, monkeypatch, fake_openvino):
    measure, calls = fixed_times({"torch-fast": 10.0, "openvino-fast": 30.0})
    monkeypatch.setattr(selection, "measure", measure)
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("STYLEMOTION_CACHE_DIR", str(tmp_path / "file" / "cache"))
    engine = open_engine(G, device="cpu")
    assert engine.info.backend == "torch" and len(calls) == 1
    assert "choice not cached: " in engine.info.detail and "engine cache folder is not writable" in engine.info.detail


@pytest.mark.parametrize("faster", ["reference", "fast"])
def test_the_bf16_preview_takes_the_faster_graph(G, tmp_path, monkeypatch, faster):
    """Whichever graph OpenVINO bf16 runs faster on this CPU (the reference graph was 1.5x faster on AMD Zen 4)."""
    import stylemotion.engines.ov_engine as ov_engine

    monkeypatch.setattr(factory, "_openvino_missing", lambda req, precision: None)
    monkeypatch.setattr(ov_engine, "cpu_capabilities", lambda: ["FP32", "BF16"])
    counts: dict = {}
    seconds = {"reference": 0.002 if faster == "reference" else 0.02, "fast": 0.002 if faster == "fast" else 0.02}

    def openvino_engine(G, onnx_file, *, precision, threads, max_batch, graph="fast", detail=""):
        assert precision == "bf16" and onnx_file is None
        return FakeEngine(f"bf16 {graph}", seconds[graph], counts)

    monkeypatch.setattr(factory, "openvino_engine", openvino_engine)
    engine = open_engine(G, backend="openvino", precision="bf16", cache=EngineCache(tmp_path), measurement=QUICK)
    assert engine.name == f"bf16 {faster}"
    assert engine.info.detail.startswith(f"auto: openvino-bf16-{faster} ")
    assert "backend asked: OpenVINO bf16" in engine.info.detail
    assert open_engine(G, precision="bf16", device="cpu", cache=EngineCache(tmp_path)).name == f"bf16 {faster}"


def test_the_cuda_candidates_come_from_what_is_installed(G, tmp_path, monkeypatch):
    """The candidate list on a GPU, built without one: PyTorch with and without CUDA graphs always, ONNX Runtime
    CUDA where onnxruntime-gpu and a synthesis.onnx are at hand, TensorRT where its package is; then the same
    choice as on the CPU (fake engines stand in for the GPU ones)."""
    onnx_file = tmp_path / "synthesis.onnx"
    onnx_file.write_bytes(b"graph")

    def request(**changes):
        base = dict(G=G, cuda=True, device="cuda", device_id=0, precision=None, onnx_file=None, cuda_graphs=None,
                    max_batch=64, threads=None, profile=None, cache=None, noise_mode="const", plan="auto", batch=8)
        base.update(changes)
        return factory._Request(**base)

    passed: list[str] = []
    names = [c.name for c in factory._auto_candidates(request(), passed)]
    assert names[-2:] == ["torch-cuda-fp16-graphs", "torch-cuda-fp16-eager"]
    assert any(p.startswith("onnxruntime cuda: ") for p in passed) and any(p.startswith("tensorrt: ") for p in passed)
    assert [c.name for c in factory._auto_candidates(request(cuda_graphs=False, precision="fp32"), [])][-1:] == \
        ["torch-cuda-fp32-eager"]
    monkeypatch.setattr(factory, "_ort_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    candidates = factory._auto_candidates(request(onnx_file=onnx_file), [])
    assert [c.name for c in candidates][-3:] == ["onnxruntime-cuda", "torch-cuda-fp16-graphs", "torch-cuda-fp16-eager"]
    counts: dict = {}
    speed = {"onnxruntime-cuda": 0.006, "torch-cuda-fp16-graphs": 0.002, "torch-cuda-fp16-eager": 0.004,
             "tensorrt-fp16": 0.003}
    fakes = [fake(c.name, speed[c.name], counts) for c in candidates]
    key = choice_key(device="cpu", threads=None, model="ab" * 32, batch=8, precision="default", candidates=fakes)
    engine, choice = choose(fakes, key, torch.zeros(8, 6, 16), cache=EngineCache(tmp_path), settings=QUICK)
    assert choice.chosen == "torch-cuda-fp16-graphs" and "batch 8" in choice.describe()
