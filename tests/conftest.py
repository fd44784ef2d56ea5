"""Shared fixtures: the official conformance data (tests/data) and tiny in-process generators."""
from __future__ import annotations

import json

import pytest
import torch

from stylemotion.models.stylegan2 import Generator, GeneratorConfig

from .helpers import DATA, make_generator



@pytest.fixture(autouse=True, scope="session")
def _engine_cache(tmp_path_factory):
    """One engine cache for the whole run, never the user's ~/.cache/stylemotion: ``auto``'s measured choices and
    built plans stay inside the test run (subprocesses inherit the variable)."""
    import os

    saved = os.environ.get("STYLEMOTION_CACHE_DIR")
    os.environ["STYLEMOTION_CACHE_DIR"] = str(tmp_path_factory.mktemp("engine-cache"))
    yield
    if saved is None:
        os.environ.pop("STYLEMOTION_CACHE_DIR", None)
    else:
        os.environ["STYLEMOTION_CACHE_DIR"] = saved


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; this machine has none")
    try:
        import tensorrt  # noqa: F401
        has_trt = True
    except ImportError:
        has_trt = False
    skip_trt = pytest.mark.skip(reason="needs the tensorrt package (pip install 'stylemotion[tensorrt]')")
    for item in items:
        if "gpu" in item.keywords and not _cuda_available():
            item.add_marker(skip_gpu)
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(skip_trt)


@pytest.fixture(scope="session")
def tiny_init_kwargs() -> dict:
    return json.loads((DATA / "configs.json").read_text())["tiny"]["init_kwargs"]


@pytest.fixture(scope="session")
def tiny_state_dict() -> dict[str, torch.Tensor]:
    return torch.load(DATA / "tiny_state_dict.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def tiny_io() -> dict[str, torch.Tensor]:
    return torch.load(DATA / "tiny_io.pt", map_location="cpu", weights_only=True)


@pytest.fixture()
def tiny_generator(tiny_init_kwargs, tiny_state_dict) -> Generator:
    """The official conformance network (random weights scaled like a real one), loaded into our module."""
    G = Generator(GeneratorConfig.from_init_kwargs(tiny_init_kwargs))
    G.load_state_dict(tiny_state_dict, strict=True)
    return G


@pytest.fixture()
def small_generator() -> Generator:
    return make_generator()
