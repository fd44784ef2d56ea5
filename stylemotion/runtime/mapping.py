"""The planner's view of a generator: its sizes and its mapping network on the engine's device.

One copy of the mapping network per (generator, device), shared by every planner of every stream: a server's
sessions do not each hold their own copy on the GPU, and a session opened while the engine's CUDA graphs exist does
not move a module onto the device (a copy is made once, the first time a device is asked for, under a lock).
"""
from __future__ import annotations

import copy
import threading
import weakref

import torch

_LOCK = threading.Lock()
_COPIES: "weakref.WeakKeyDictionary[torch.nn.Module, dict[torch.device, torch.nn.Module]]" = \
    weakref.WeakKeyDictionary()


def mapping_on(mapping: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``mapping`` itself when it lives on ``device``, else the one shared copy of it there (eval mode, no grads).
    The copy is taken when first asked for: later changes to the caller's module do not reach it."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    here = mapping.w_avg.device
    if here == device or (here.type == device.type == "cpu"):
        return mapping
    with _LOCK:
        copies = _COPIES.setdefault(mapping, {})
        if device not in copies:
            copies[device] = copy.deepcopy(mapping).to(device).eval().requires_grad_(False)
        return copies[device]


class MappingView:
    """What the planner needs of a generator: ``z_dim``, ``w_dim``, ``num_ws``, ``c_dim`` and ``mapping`` on the
    engine's device (the caller's module is never moved)."""

    def __init__(self, G, device: torch.device):
        self.z_dim, self.w_dim, self.num_ws, self.c_dim = G.z_dim, G.w_dim, G.num_ws, G.c_dim
        self.mapping = mapping_on(G.mapping, device)
