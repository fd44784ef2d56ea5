"""Inputs the long fuzzing runs (make fuzz) found, kept so that every run checks them again."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from .harness import check, write


def _with_config(blob: bytes, config: dict) -> bytes:
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    (length,) = struct.unpack("<Q", blob[:8])
    meta = json.loads(blob[8:8 + length])["__metadata__"]
    meta["config"] = json.dumps(config)
    return st_save(st_load(blob), metadata=meta)


@pytest.mark.parametrize("config", [
    {"channel_base": 1},  # 2026-11-29: every block got 0 channels -> ZeroDivisionError in ToRGBLayer's init
    {"channel_base": 31, "img_resolution": 32},
])
def test_generator_config_that_leaves_a_block_without_channels(seeds, tmp_path, config):
    from stylemotion.checkpoints import load_generator
    from stylemotion.errors import CheckpointError

    path = write(tmp_path / "g.safetensors", _with_config(seeds["generator-stylemotion"], config))
    check("regression", lambda: load_generator(path), path)
    with pytest.raises(CheckpointError, match="channel_base must be at least img_resolution"):
        load_generator(path)


REGRESSIONS = Path(__file__).with_name("regressions")


def _loader(name: str):
    """The reader a kept input was given, from its file name (``<target>-<hash>.<ext>``, as harness.keep names
    it)."""
    from stylemotion.checkpoints import load_generator
    from stylemotion.pipeline.sequence import load_lstm

    if name.startswith(("generator-", "pickle-", "safetensors-generator-", "config-generator")):
        return load_generator
    if name.startswith(("lstm-", "config-lstm", "safetensors-lstm")):
        return load_lstm
    raise AssertionError(f"no reader known for the kept input {name}")


@pytest.mark.parametrize("name", sorted(p.name for p in REGRESSIONS.iterdir() if not p.name.startswith("onnx-"))
                         if REGRESSIONS.is_dir() else [])
def test_kept_inputs(name, tmp_path):
    """Every input a long run found (copied by harness.keep into regressions/): typed error or success, in time.
    generator-network_pickle-22873db6e7a3.bin (2026-11-29): BINBYTES claiming 1.6 GB inside a frame kept CPython's
    C unpickler busy for a minute; now refused by the opcode walk before unpickling.
    generator-network_pickle-6e0a9b2bdf21.bin: a LONG_BINPUT memo index of 224,957,547 made the C unpickler
    allocate 3.4 GB; now refused by the same walk (memo indices beyond the file's length).
    config-generator-stylemotion-*.safetensors: a valid file whose config asks for 2**40 and 10**6 mapping layers;
    config-lstm-*.safetensors: an LSTM of 2,630,013 layers (both hung in the constructor; now bounded by the
    configs' validate, with a parameter estimate for generators)."""
    path = tmp_path / name
    path.write_bytes((REGRESSIONS / name).read_bytes())
    load = _loader(name)
    check("regression", lambda: load(path), str(path))


@pytest.mark.parametrize("name", sorted(p.name for p in REGRESSIONS.glob("onnx-graph-*.onnx")))
def test_kept_onnx_graphs(name, onnx_seed, tmp_path):
    """onnx-graph-322d9c9cdc4c.onnx (2026-11-29): a mutated graph that ONNX Runtime loads but fails in a kernel
    (ReorderInput: X_rank == 4 was false) while running; the engine now turns that into an EngineError naming
    the file. Replayed beside the seed export's weights, as the fuzzer ran it."""
    import torch

    from stylemotion.engines import open_engine

    G, seed_path = onnx_seed
    path = tmp_path / seed_path.name
    path.write_bytes((REGRESSIONS / name).read_bytes())
    weights = seed_path.with_suffix(".onnx.data")
    if weights.exists():
        (tmp_path / weights.name).write_bytes(weights.read_bytes())

    def run():
        engine = open_engine(G, backend="onnxruntime", onnx_path=path, device="cpu")
        engine.run(torch.zeros(1, G.num_ws, G.w_dim))

    check("regression", run, str(path))
