"""Fuzz every reader of files people download: generator checkpoints in every format, safetensors headers,
pickles, latents and directions archives, LSTM files, images and videos for ``embed``, and ONNX graphs for the
engines. See harness.py for what counts as a failure."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .harness import FUZZ, check, mutated, write

GENERATOR_FORMATS = ["stylemotion", "state_dict", "rosinality", "network_pickle"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _load_generator(path):
    from stylemotion.checkpoints import load_generator

    return lambda: load_generator(path)


@FUZZ
@given(data=st.data())
def test_generator_files(seeds, work, data):
    fmt = data.draw(st.sampled_from(GENERATOR_FORMATS), label="format")
    path = write(work / "g.bin", data.draw(mutated(seeds[f"generator-{fmt}"], head=256)))
    check(f"generator:{fmt}", _load_generator(path), path)


# -- safetensors headers (stylemotion generators and LSTMs) -------------------------------------------------
_NAMES = ["mapping.fc0.weight", "mapping.fc0.bias", "synthesis.b4.const", "mapping.w_avg", "embed.weight",
          "lstm.weight_ih_l0", "head.weight", "t"]


@st.composite
def config_json(draw):
    """Generator or LSTM configs with values from plausible to hostile (huge, negative, wrong types)."""
    value = st.one_of(st.integers(-3, 2 ** 31), st.sampled_from([4, 8, 16, 64, 512, 10 ** 6, 2 ** 40]),
                      st.floats(allow_nan=True), st.text(max_size=8), st.none(), st.booleans(),
                      st.lists(st.integers(-2, 2 ** 20), max_size=3))
    keys = ["z_dim", "w_dim", "img_resolution", "mapping_layers", "channel_base", "channel_max", "num_fp16_res",
            "conv_clamp", "architecture", "channels_per_res", "c_dim", "hidden", "layers", "embed",
            "num_emotions", "dropout", "x"]
    config = draw(st.dictionaries(st.sampled_from(keys), value, max_size=6))
    if draw(st.booleans()):
        config["channels_per_res"] = draw(st.dictionaries(st.sampled_from(["4", "8", "16", "x"]),
                                                          st.integers(-1, 2 ** 31), max_size=3))
    return json.dumps(config)


@st.composite
def safetensors_file(draw):
    header = {}
    for name in draw(st.lists(st.sampled_from(_NAMES), max_size=4, unique=True)):
        shape = draw(st.lists(st.one_of(st.integers(0, 8), st.integers(-3, -1), st.just(2 ** 40)), max_size=4))
        start = draw(st.one_of(st.integers(0, 300), st.just(2 ** 63 - 1)))
        end = draw(st.one_of(st.integers(0, 300), st.just(2 ** 62), st.just(start)))
        header[name] = {"dtype": draw(st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "Q4", 7])),
                        "shape": shape, "data_offsets": [start, end]}
    if draw(st.booleans()):
        header["__metadata__"] = {
            "format": draw(st.sampled_from(["stylemotion.generator", "stylemotion.emotion_lstm", "other"])),
            "format_version": draw(st.sampled_from(["1", "2", ""])), "config": draw(config_json())}
    raw = json.dumps(header).encode()
    raw += b" " * draw(st.integers(0, 8))
    declared = draw(st.one_of(st.just(len(raw)), st.integers(0, 2 ** 64 - 1), st.just(len(raw) + 1)))
    return struct.pack("<Q", declared) + raw + draw(st.binary(max_size=300))


@FUZZ
@given(blob=safetensors_file())
def test_safetensors_headers(work, blob):
    from stylemotion.pipeline.sequence import load_lstm

    path = write(work / "h.safetensors", blob)
    check("safetensors:generator", _load_generator(path), path)
    check("safetensors:lstm", lambda: load_lstm(path), path)


@FUZZ
@given(data=st.data())
def test_native_files_with_hostile_configs(seeds, work, data):
    """A valid generator or LSTM file whose JSON config asks for another (possibly enormous) network."""
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    from stylemotion.pipeline.sequence import load_lstm

    kind = data.draw(st.sampled_from(["generator-stylemotion", "lstm"]), label="kind")
    blob = seeds[kind]
    tensors = st_load(blob)
    (length,) = struct.unpack("<Q", blob[:8])
    meta = json.loads(blob[8:8 + length])["__metadata__"]
    meta["config"] = data.draw(config_json(), label="config")
    path = write(work / f"{kind}.safetensors", st_save(tensors, metadata=meta))
    check(f"config:{kind}", (_load_generator(path) if kind.startswith("generator") else lambda: load_lstm(path)),
          path)


# -- pickles --------------------------------------------------------------------------------------------------
_FORBIDDEN = [("os", "system"), ("builtins", "eval"), ("builtins", "exec"), ("subprocess", "Popen"),
              ("posix", "system"), ("builtins", "getattr"), ("torch", "load"), ("numpy", "load"),
              ("runpy", "run_path"), ("importlib", "import_module")]


@st.composite
def hostile_pickle(draw) -> bytes:
    kind = draw(st.sampled_from(["global", "nested", "cycle", "huge", "dict_keys"]))
    proto = b"\x80\x02"
    if kind == "global":
        module, name = draw(st.sampled_from(_FORBIDDEN))
        arg = draw(st.sampled_from([b"X\x04\x00\x00\x00true", b"X\x00\x00\x00\x00"]))
        return proto + f"c{module}\n{name}\n".encode() + arg + b"\x85R."  # GLOBAL, arg, TUPLE1, REDUCE
    if kind == "nested":
        depth = draw(st.sampled_from([10, 1000, 100_000]))
        opener = draw(st.sampled_from([b"]", b"}", b")"]))
        if opener == b"]":
            return proto + b"]" * depth + b"a" * (depth - 1) + b"."  # lists in lists
        if opener == b"}":
            return proto + b"}" + (b"X\x01\x00\x00\x00k}" * depth) + b"s" * depth + b"."  # dicts in dicts
        return proto + b")" + b"\x85" * depth + b"."  # tuples in tuples
    if kind == "cycle":
        return proto + b"]q\x00h\x00a."  # a list that contains itself
    if kind == "huge":
        size = draw(st.sampled_from([2 ** 31 - 1, 2 ** 32 - 1]))
        return proto + b"X" + struct.pack("<I", size) + b"abc"  # a string that claims 2-4 GB
    # a network pickle whose keys are not strings
    return proto + b"}(K\x01K\x02J\xff\xff\xff\x7f]u."


@FUZZ
@given(blob=hostile_pickle())
def test_pickles(work, blob):
    path = write(work / "p.pkl", blob)
    check("pickle", _load_generator(path), path)


# -- archives: latents and directions -------------------------------------------------------------------------
_DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int8, np.uint8, np.bool_,
                           np.complex64, "U4", "S3"])


@st.composite
def npz_file(draw, keys: list[str]) -> bytes:
    import io

    arrays = {}
    for key in draw(st.lists(st.sampled_from(keys + ["extra"]), max_size=len(keys) + 1, unique=True)):
        arrays[key] = draw(hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, max_side=5)))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@FUZZ
@given(data=st.data())
def test_latents_and_directions(seeds, work, data):
    from stylemotion.generate import load_ws
    from stylemotion.pipeline.directions import Directions
    from stylemotion.pipeline.latents_io import read_latents

    from ..helpers import make_generator

    kind = data.draw(st.sampled_from(["latents", "directions"]), label="kind")
    how = data.draw(st.sampled_from(["mutated", "arrays"]), label="how")
    if how == "mutated":
        blob = data.draw(mutated(seeds[kind], head=128))
    else:
        keys = ["ws", "frame_index", "source", "loss"] if kind == "latents" else ["emotions", "directions", "space",
                                                                                 "accuracy", "counts"]
        blob = data.draw(npz_file(keys))
    path = write(work / f"{kind}.npz", blob)
    if kind == "latents":
        check("latents", lambda: read_latents(path), path)
        G = make_generator()
        check("latents:generate", lambda: load_ws(path, G), path)
    else:
        check("directions", lambda: Directions.load(path), path)


@FUZZ
@given(data=st.data())
def test_lstm_files(seeds, work, data):
    from stylemotion.pipeline.sequence import load_lstm

    path = write(work / "l.safetensors", data.draw(mutated(seeds["lstm"], head=256)))
    check("lstm", lambda: load_lstm(path), path)


# -- embed inputs: images and videos ---------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_images(seeds, work, data):
    from stylemotion.pipeline.video_io import read_image

    fmt = data.draw(st.sampled_from(["png", "jpeg", "gif", "bmp", "tiff", "webp"]), label="format")
    path = write(work / f"i.{fmt}", data.draw(mutated(seeds[f"image-{fmt}"], head=64)))
    check(f"image:{fmt}", lambda: read_image(path), path)


@FUZZ
@given(data=st.data())
def test_videos(seeds, work, data):
    from stylemotion.pipeline.video_io import iter_frames

    path = write(work / "v.mp4", data.draw(mutated(seeds["video-mp4"], head=64)))
    check("video:mp4", lambda: sum(1 for _ in iter_frames(path)), path)


# -- ONNX graphs given to the engines ----------------------------------------------------------------------------
@FUZZ
@given(data=st.data())
def test_onnx_graphs(onnx_seed, work, data):
    from stylemotion.engines import open_engine

    G, seed_path = onnx_seed
    which = data.draw(st.sampled_from(["graph", "weights"]), label="which")
    folder = work / "onnx"
    folder.mkdir(exist_ok=True)
    graph, weights = seed_path.read_bytes(), seed_path.with_suffix(".onnx.data")
    weights_bytes = weights.read_bytes() if weights.exists() else b""
    if which == "graph":
        graph = data.draw(mutated(graph, head=512))
    else:
        weights_bytes = data.draw(mutated(weights_bytes or b"\x00", head=64))
    path = write(folder / seed_path.name, graph)
    if weights.exists():
        write(folder / weights.name, weights_bytes)

    def run():
        engine = open_engine(G, backend="onnxruntime", onnx_path=path, device="cpu")
        engine.run(torch.zeros(1, G.num_ws, G.w_dim))

    check(f"onnx:{which}", run, path)
