"""The one door for optional dependencies: import lazily, fail with what to install."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError


def require(module: str, *, extra: str | None = None, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError saying how to install it.

    ``extra`` names the stylemotion extra that brings it (``pip install 'stylemotion[extra]'``);
    ``package`` names the PyPI distribution when it differs from the module name.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        dist = package or module
        how = f"pip install 'stylemotion[{extra}]'" if extra else f"pip install {dist}"
        raise MissingDependencyError(f"{module} is required for this feature but is not installed: {how}") from exc
