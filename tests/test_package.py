"""Package-level contracts: imports without optional dependencies, the one door for them, atomic outputs."""
from __future__ import annotations

import subprocess
import sys

import pytest

from stylemotion._optional import require
from stylemotion.atomic import atomic_path
from stylemotion.errors import MissingDependencyError


def test_import_needs_no_optional_dependency():
    code = ("import sys, stylemotion; bad = [m for m in ('tensorrt', 'onnxruntime', 'ray', 'onnx', 'cv2') "
            "if m in sys.modules]; print(','.join(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""


def test_require_names_what_to_install():
    with pytest.raises(MissingDependencyError, match=r"pip install 'stylemotion\[tensorrt\]'"):
        require("surely_not_a_module_xyz", extra="tensorrt")
    assert require("json").dumps([1]) == "[1]"


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
