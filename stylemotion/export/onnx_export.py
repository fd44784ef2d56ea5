"""Export an ExportSpec to ONNX with torch's dynamo exporter (opset 18), then prove the file.

Every export is checked before it is moved into place: ``onnx.checker`` (full check), shape inference, and ONNX
Runtime against PyTorch on fresh random inputs at several batch sizes (relative error: max |diff| / max |ref|).
A JSON sidecar (``<name>.json``) records the source checkpoint's hash, the spec, the opset, versions and the
check results. Files are written into a temporary folder and renamed into place only when every check passed;
the weights may sit in ``<name>.onnx.data`` beside the graph (the name is referenced inside the graph).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..atomic import fsync_dir, publish, remove_stale_temporaries, temporary_name
from .._optional import require
from ..errors import ExportError
from .spec import ExportSpec, eval_mode

OPSET = 18
FP32_REL_TOL = 1e-4


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def onnx_content_sha256(path: str | os.PathLike) -> str:
    """The hash of a model's graph and of its external weights (``<name>.onnx.data``) together: new weights
    under an unchanged graph are a different model."""
    path = Path(path)
    parts = [file_sha256(path)]
    data = path.with_name(path.name + ".data")
    if data.exists():
        parts.append(file_sha256(data))
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def _shaped_like_signature(spec: ExportSpec) -> tuple:
    """torch.export binds ``forward(ws, *noise)`` as ``(ws, (n1, n2, ...))``: group the dynamic shapes alike."""
    params = list(inspect.signature(spec.module.forward).parameters.values())
    shapes = spec.dynamic_shapes()
    fixed = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return tuple(shapes[:len(fixed)]) + (tuple(shapes[len(fixed):]),)
    return shapes


def verify_onnx(path: str | os.PathLike, spec: ExportSpec, batches: Sequence[int]) -> dict:
    """ONNX Runtime (CPU) against the PyTorch module on fresh random inputs; returns the relative errors."""
    ort = require("onnxruntime", extra="onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    expected = [s.name for s in spec.inputs]
    if names != expected:
        raise ExportError(f"{path}: graph inputs {names}, spec says {expected}")
    results = {}
    for n in batches:
        with torch.no_grad(), eval_mode(spec):
            inputs = tuple(x.detach() for x in spec.sample(n, 1000 + n))  # fresh inputs, not the traced ones
            if spec.reference is not None:  # FP16 graph: compare with the float32 network by PSNR
                ref = spec.reference(*(x.float() for x in inputs))
            else:
                ref = spec.module(*inputs)
        refs = ref if isinstance(ref, (tuple, list)) else (ref,)
        outs = session.run(None, {s.name: x.cpu().numpy() for s, x in zip(spec.inputs, inputs)})
        errs = []
        for o, r, s in zip(outs, refs, spec.outputs):
            r = r.detach().cpu().numpy()
            if o.shape != r.shape:
                raise ExportError(f"{path}: output {s.name!r} at batch {n} has shape {list(o.shape)}, "
                                  f"PyTorch gives {list(r.shape)}")
            if spec.min_psnr is not None:
                mse = float(np.mean((o.astype(np.float64) - r) ** 2))
                peak = float(r.max() - r.min())
                errs.append(10 * np.log10(peak ** 2 / max(mse, 1e-30)))
            else:
                errs.append(float(np.abs(o - r).max() / max(float(np.abs(r).max()), 1e-12)))
        results[str(n)] = min(errs) if spec.min_psnr is not None else max(errs)
    return results


def export_onnx(spec: ExportSpec, out_dir: str | os.PathLike, *, source: str | os.PathLike | None = None,
                config: dict | None = None, batches: Sequence[int] | None = None,
                tolerance: float = FP32_REL_TOL) -> Path:
    """Write ``<out_dir>/<spec.name>.onnx`` (+ ``.onnx.data`` when external) and ``<spec.name>.json``."""
    onnx = require("onnx", extra="onnx")
    require("onnxscript", extra="onnx")  # torch's dynamo exporter needs it
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out_dir}: cannot create the export folder ({exc})") from exc
    remove_stale_temporaries(out_dir / f"{spec.name}.export")  # work folders of killed earlier exports
    work = temporary_name(out_dir / f"{spec.name}.export")
    try:
        work.mkdir()
    except OSError as exc:
        raise ExportError(f"{out_dir}: cannot write the export there ({exc})") from exc
    try:
        onnx_path = work / f"{spec.name}.onnx"
        with torch.no_grad():
            sample = tuple(x.detach() for x in spec.sample(max(spec.profile.opt, 2)))
        try:
            with torch.no_grad(), eval_mode(spec):
                torch.onnx.export(spec.module, sample, str(onnx_path), dynamo=True, opset_version=OPSET,
                                  input_names=[s.name for s in spec.inputs],
                                  output_names=[s.name for s in spec.outputs],
                                  dynamic_shapes=_shaped_like_signature(spec))
        except Exception as exc:  # the exporter raises many internal error types
            raise ExportError(f"{spec.name}: torch.onnx.export (dynamo, opset {OPSET}) failed: "
                              f"{type(exc).__name__}: {str(exc)[:500]}") from exc
        try:
            onnx.checker.check_model(str(onnx_path), full_check=True)
            onnx.shape_inference.infer_shapes_path(str(onnx_path), str(work / "inferred.onnx"))
            (work / "inferred.onnx").unlink()
        except Exception as exc:  # onnx's checker and inference raise their own error types
            raise ExportError(f"{spec.name}: the exported graph fails onnx checks: {exc}") from exc
        sizes = sorted(set(batches or (spec.profile.min, 3, min(16, spec.profile.max))))
        errors = verify_onnx(onnx_path, spec, sizes)
        if spec.min_psnr is not None:
            bad = {n: e for n, e in errors.items() if not e >= spec.min_psnr}
            if bad:
                raise ExportError(f"{spec.name}: ONNX Runtime PSNR against float32 PyTorch is below "
                                  f"{spec.min_psnr} dB at batch sizes {bad}")
        else:
            bad = {n: e for n, e in errors.items() if not e < tolerance}
            if bad:
                raise ExportError(f"{spec.name}: ONNX Runtime differs from PyTorch beyond {tolerance:g} "
                                  f"(relative) at batch sizes {bad}")
        sidecar = {
            "name": spec.name, "description": spec.description, "opset": OPSET, "exporter": "torch.onnx dynamo",
            "inputs": [asdict(s) for s in spec.inputs], "outputs": [asdict(s) for s in spec.outputs],
            "profile": asdict(spec.profile), "source": str(source) if source else None,
            "source_sha256": file_sha256(source) if source and Path(source).is_file() else None,
            "config": config, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": require("onnxruntime", extra="onnx").__version__,
            "checks": {"onnx_checker_full": True, "shape_inference": True,
                       **({"ort_psnr_db_vs_fp32": errors, "min_psnr_db": spec.min_psnr} if spec.min_psnr
                          else {"ort_relative_error": errors, "tolerance": tolerance})},
        }
        (work / f"{spec.name}.json").write_text(json.dumps(sidecar, indent=2))
        # Never a new graph with old weights, or a graph without its sidecar, even after kill -9 anywhere: the
        # graph is the set's completion mark. The old graph goes first, then the weights and the sidecar, and the
        # new graph last, each fsynced and renamed into place (publish).
        (out_dir / f"{spec.name}.onnx").unlink(missing_ok=True)
        fsync_dir(out_dir)
        order = {".data": 0, ".json": 1, ".onnx": 2}
        for f in sorted(work.iterdir(), key=lambda p: order.get(p.suffix, 0)):
            publish(f, out_dir / f.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir / f"{spec.name}.onnx"
