"""Writes network pickles laid out exactly as stylegan2-ada-pytorch's ``pickle.dump`` of its training snapshot.

Official snapshots pickle each network as ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with
``meta = dict(type='class', version=6, module_src=<source>, class_name=<name>, state=<module __dict__>)``; the
state holds ``_parameters``, ``_buffers``, ``_modules`` (themselves persistent objects), ``_init_args`` and
``_init_kwargs`` (a ``dnnlib.EasyDict``), plus plain attributes (numpy floats among them). Tensors go through
torch's own reducers (``_rebuild_parameter``, ``_rebuild_tensor_v2``, ``storage._load_from_bytes``).

The stand-in modules registered here exist only so that ``pickle`` can name those globals; nothing here can
unpickle the result (the stand-in reconstructor raises), just as our loader must never need the real one.
"""
from __future__ import annotations

import collections
import pickle
import sys
import types
from pathlib import Path

import numpy as np
from torch import nn

from stylemotion.models.stylegan2 import Generator


def _raise(meta):
    raise RuntimeError("the stand-in persistence module must never be used to unpickle")


def install_standins(monkeypatch) -> type:
    """Register fake ``torch_utils.persistence`` and ``dnnlib.util`` modules; returns the EasyDict stand-in."""
    torch_utils = types.ModuleType("torch_utils")
    persistence = types.ModuleType("torch_utils.persistence")
    _raise.__module__, _raise.__qualname__, _raise.__name__ = "torch_utils.persistence", "_reconstruct_persistent_obj", "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _raise
    torch_utils.persistence = persistence
    dnnlib = types.ModuleType("dnnlib")
    util = types.ModuleType("dnnlib.util")
    easy = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    util.EasyDict = easy
    dnnlib.util = util
    for name, mod in (("torch_utils", torch_utils), ("torch_utils.persistence", persistence), ("dnnlib", dnnlib),
                      ("dnnlib.util", util)):
        monkeypatch.setitem(sys.modules, name, mod)
    return easy


class Persistent:
    """Pickles as an official persistent object."""

    def __init__(self, class_name: str, state: dict, module_src: str):
        self.class_name, self.state, self.module_src = class_name, state, module_src

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name, state=self.state)
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))


def persistent_tree(module: nn.Module, module_src: str, init_kwargs=None) -> Persistent:
    state = {
        "training": False,
        "_parameters": collections.OrderedDict((k, nn.Parameter(v.detach().clone(), requires_grad=False))
                                               for k, v in module._parameters.items()),
        "_buffers": collections.OrderedDict((k, v.detach().clone()) for k, v in module._buffers.items()),
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": collections.OrderedDict(),
        "_forward_hooks": collections.OrderedDict(),
        "_forward_pre_hooks": collections.OrderedDict(),
        "_modules": collections.OrderedDict((k, persistent_tree(v, module_src)) for k, v in module._modules.items()),
        "_init_args": (),
        "_init_kwargs": init_kwargs if init_kwargs is not None else {},
    }
    for attr in ("weight_gain", "bias_gain", "z_dim", "w_dim", "resolution", "num_ws"):
        if hasattr(module, attr):
            value = getattr(module, attr)
            state[attr] = np.float64(value) if isinstance(value, float) else value
    return Persistent(type(module).__name__, state, module_src)


def write_official_pickle(G: Generator, path: Path, monkeypatch, *, module_src: str = "", flat_kwargs: bool = False,
                          extra: dict | None = None) -> Path:
    easy = install_standins(monkeypatch)
    kw = G.config.to_init_kwargs()
    if flat_kwargs:  # the stylegan3 repository puts synthesis kwargs at top level
        synth = kw.pop("synthesis_kwargs")
        kw.update(synth, fused_modconv_default="inference_only")
    init_kwargs = easy({k: easy(v) if isinstance(v, dict) else v for k, v in kw.items()})
    g_ema = persistent_tree(G, module_src, init_kwargs)
    data = {"G": persistent_tree(G, module_src, init_kwargs), "D": Persistent("Discriminator", {"_modules": {}}, module_src),
            "G_ema": g_ema, "training_set_kwargs": easy(path="ffhq.zip", resolution=G.img_resolution),
            "augment_pipe": None}
    data.update(extra or {})
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path
