"""Valid seed files for the fuzz targets (written once per session) and the per-target count report."""
from __future__ import annotations

import datetime
import json
import os
import platform
import time

import numpy as np
import pytest
import torch

from .harness import COUNTS, ERRORS, EXAMPLES

_START = time.time()


class Seeds(dict):
    def __repr__(self) -> str:  # Hypothesis prints the arguments of a failing example; the bytes are long
        return f"Seeds({sorted(self)})"


@pytest.fixture(scope="session")
def seeds(tmp_path_factory) -> dict[str, bytes]:
    """Valid files of every kind the fuzzers mutate, as bytes."""
    from stylemotion.checkpoints import save_generator
    from stylemotion.models.emotion_lstm import EmotionLSTM, LSTMConfig
    from stylemotion.pipeline.directions import random_directions
    from stylemotion.pipeline.latents_io import write_latents
    from stylemotion.pipeline.sequence import save_lstm
    from stylemotion.pipeline.video_io import VideoWriter

    from ..checkpoints.official_pickle import write_official_pickle
    from ..helpers import make_generator

    d = tmp_path_factory.mktemp("seeds")
    G = make_generator()
    out = Seeds()
    for fmt in ("stylemotion", "state_dict", "rosinality"):
        save_generator(G, d / f"g-{fmt}", format=fmt)
        out[f"generator-{fmt}"] = (d / f"g-{fmt}").read_bytes()
    with pytest.MonkeyPatch.context() as mp:
        write_official_pickle(G, d / "g.pkl", mp)
    out["generator-network_pickle"] = (d / "g.pkl").read_bytes()
    save_lstm(EmotionLSTM(LSTMConfig(hidden=16)), d / "lstm.safetensors")
    out["lstm"] = (d / "lstm.safetensors").read_bytes()
    random_directions(G.w_dim).save(d / "dirs.npz")
    out["directions"] = (d / "dirs.npz").read_bytes()
    write_latents(d / "lat.npz", ws=np.zeros((2, G.num_ws, G.w_dim)), frame_index=np.arange(2),
                  source=np.array(["a.png", "b.png"]), loss=np.zeros(2))
    out["latents"] = (d / "lat.npz").read_bytes()
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    for fmt in ("png", "jpeg", "gif", "bmp", "tiff", "webp"):
        Image.fromarray(rgb).save(d / f"i.{fmt}", format=fmt.upper())
        out[f"image-{fmt}"] = (d / f"i.{fmt}").read_bytes()
    with VideoWriter(d / "v.mp4", 10) as w:
        w.write(np.repeat(rgb[None, :16, :16], 6, axis=0))
    out["video-mp4"] = (d / "v.mp4").read_bytes()
    return out


@pytest.fixture(scope="session")
def onnx_seed(tmp_path_factory):
    """A tiny generator and its exported synthesis.onnx (+ .onnx.data), for the ONNX Runtime engine."""
    pytest.importorskip("onnxruntime")
    from stylemotion.export.networks import synthesis_spec
    from stylemotion.export.onnx_export import export_onnx

    from ..helpers import make_generator

    G = make_generator()
    path = export_onnx(synthesis_spec(G), tmp_path_factory.mktemp("onnx"), batches=[1])
    return G, path


def pytest_sessionfinish(session, exitstatus):
    report = os.environ.get("STYLEMOTION_FUZZ_REPORT")
    if not report or not COUNTS:
        return
    data = {"date": datetime.date.today().isoformat(), "examples_per_target": EXAMPLES,
            "inputs": dict(sorted(COUNTS.items())), "typed_errors": dict(sorted(ERRORS.items())),
            "total_inputs": sum(COUNTS.values()), "failed_tests": session.testsfailed,
            "seconds": round(time.time() - _START, 1), "python": platform.python_version(),
            "torch": torch.__version__, "machine": platform.machine()}
    tmp = f"{report}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, report)
