"""cpp_ext against its references: every kernel on odd sizes, N = 1 and large N, float16 and float32,
non-contiguous inputs and reused (poisoned) memory; the CUDA sources compile for sm_90; the ops fail clearly;
`python -m stylemotion.extension` says what is built."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stylemotion import extension, ops
from stylemotion.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BUILT = extension.status()["cpu"]
needs_ext = pytest.mark.skipif(not BUILT, reason="cpp_ext is not built (`make test` builds it: python -m "
                                                 "stylemotion.extension build)")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def test_make_test_built_the_cpu_kernels():
    """`make test` builds the extension first; a machine with g++ that did not is a broken set-up."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler on this machine")
    assert BUILT, extension.status()["why"]


@pytest.mark.parametrize("source", ["fused_lerp.cu", "to_uint8.cu", "acd.cu"])
def test_cuda_sources_compile_for_sm_90(source, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on the PATH")
    proc = subprocess.run([nvcc, "-c", "-arch=sm_90", *extension.CUDA_FLAGS, "-I", str(ROOT / "cpp_ext"),
                           str(ROOT / "cpp_ext" / source), "-o", str(tmp_path / "k.o")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def poison(numel: int, dtype: torch.dtype, device: str) -> None:
    """Fill and free a block of the output's size, so an output element the kernel skips shows garbage."""
    junk = torch.empty(numel, dtype=dtype, device=device)
    junk.fill_(float("nan") if dtype.is_floating_point else 0xAB)
    del junk


def lerp_inputs(n: int, shape, device: str, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(6, *shape, generator=g).to(device, dtype)
    tangents = torch.randn(6, *shape, generator=g).to(device, dtype)
    index = torch.randint(0, 5, (n,), generator=g).to(device)
    t = torch.rand(n, generator=g)
    t[::5], t[1::7] = 1.0, 0.0  # the keyframes themselves
    span = torch.randint(1, 40, (n,), generator=g).float()
    w_avg = torch.randn(shape[-1], generator=g)
    return keys, index, t.to(device), tangents, span.to(device), w_avg.to(device)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n, shape", [(1, (18, 512)), (7, (3, 5)), (33, (14, 17)), (1001, (1, 513)), (5, (77,))])
@pytest.mark.parametrize("form", ["linear", "hermite", "truncated", "half-out"])
def test_fused_lerp_is_bit_exact_in_float32(device, n, shape, form):
    keys, index, t, tangents, span, w_avg = lerp_inputs(n, shape, device)
    kw = {"linear": {}, "hermite": dict(tangents=tangents, span=span),
          "truncated": dict(tangents=tangents, span=span, w_avg=w_avg, psi=0.7),
          "half-out": dict(out_dtype=torch.float16)}[form]
    ref = ops.fused_lerp(keys, index, t, impl="reference", **kw)
    poison(ref.numel(), ref.dtype, device)
    got = ops.fused_lerp(keys, index, t, impl=device, **kw)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert torch.equal(got, ref)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_fused_lerp_float16_keyframes_and_non_contiguous_inputs(device):
    keys, index, t, tangents, span, _ = lerp_inputs(19, (4, 9), device)
    wide = torch.randn(6, 4, 18, device=device)[..., ::2]  # non-contiguous keyframes
    torch.testing.assert_close(ops.fused_lerp(wide, index, t[::1], impl=device),
                               ops.fused_lerp(wide.contiguous(), index, t, impl="reference"), rtol=0, atol=0)
    strided_t = torch.stack([t, t], 1)[:, 0]
    assert torch.equal(ops.fused_lerp(keys, index, strided_t, impl=device),
                       ops.fused_lerp(keys, index, t, impl="reference"))
    half = keys.half()  # computed in float32 from the half keyframes, written in half like the reference
    got = ops.fused_lerp(half, index, t, tangents=tangents.half(), span=span, impl=device)
    ref = ops.fused_lerp(half.float(), index, t, tangents=tangents.half().float(), span=span, impl="reference")
    assert got.dtype == torch.float16 and torch.equal(got, ref.half())
    assert ops.fused_lerp(half, index, t, impl="reference").dtype == torch.float16


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (3, 3, 17, 19), (2, 3, 64, 64), (9, 3, 33, 7), (1, 1, 5, 3)])
def test_to_uint8_is_bit_exact(device, dtype, shape):
    g = torch.Generator().manual_seed(1)
    images = (torch.randn(*shape, generator=g) * 1.4).to(device, dtype)  # past [-1, 1]: the clamp matters
    images.view(-1)[:8] = torch.tensor([-1.0, 1.0, 0.0, 1.0039, -1.0039, 2.5, -7.0, 0.99609375])[:images.numel()]
    ref = ops.to_uint8(images, impl="reference")
    poison(ref.numel(), torch.uint8, device)
    got = ops.to_uint8(images, impl=device)
    assert got.shape == (shape[0], shape[2], shape[3], shape[1]) and torch.equal(got, ref)
    channels_last = images.contiguous(memory_format=torch.channels_last) if images.ndim == 4 else images
    assert torch.equal(ops.to_uint8(channels_last, impl=device), ref)  # non-contiguous NCHW strides


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("n, frame", [(2, (1, 1, 3)), (5, (17, 19, 3)), (33, (8, 8, 3)), (3, (256, 256, 3))])
def test_acd_matches_the_reference(device, dtype, n, frame):
    g = torch.Generator().manual_seed(2)
    frames = (torch.randint(0, 256, (n, *frame), generator=g) if dtype == torch.uint8
              else torch.rand(n, *frame, generator=g)).to(device, dtype)
    ref = ops.acd(frames, impl="reference")
    got = ops.acd(frames, impl=device)
    assert got.dtype == torch.float64 and got.shape == (n - 1,)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)
    streamed = ops.acd(frames[1:], previous=frames[0], impl=device)  # across a batch boundary
    torch.testing.assert_close(streamed, ref, rtol=1e-6, atol=0)
    odd = frames.transpose(1, 2)  # non-contiguous
    torch.testing.assert_close(ops.acd(odd, impl=device), ops.acd(odd.contiguous(), impl="reference"),
                               rtol=1e-6, atol=0)


def test_reference_endpoints_and_clear_errors():
    keys, index, t, tangents, span, _ = lerp_inputs(40, (3, 4), "cpu")
    out = ops.fused_lerp(keys, index, t, tangents=tangents, span=span, impl="reference")
    assert torch.equal(out[t == 1], keys[index[t == 1] + 1]) and torch.equal(out[t == 0], keys[index[t == 0]])
    with pytest.raises(ConfigError, match="impl must be one of"):
        ops.to_uint8(torch.zeros(1, 3, 2, 2), impl="fast")
    with pytest.raises(ConfigError, match="tangents need span"):
        ops.fused_lerp(keys, index, t, tangents=tangents)
    with pytest.raises(ConfigError, match="needs inputs on cuda"):
        ops.to_uint8(torch.zeros(1, 3, 2, 2), impl="cuda")
    with pytest.raises(ConfigError, match="previous must be one frame"):
        ops.acd(torch.zeros(3, 4), previous=torch.zeros(5))
    assert set(ops.available()) >= {"reference", "cpu", "cuda", "why"}
    assert ops.implementation("to_uint8", "cpu") == ("cpu" if BUILT else "reference")


def test_the_extension_command_says_what_is_built():
    """`python -m stylemotion.extension status` prints what the ops have, and runs without runpy's warning about a
    module imported before it runs (`import stylemotion` leaves the extension module to the ops' first call)."""
    proc = subprocess.run([sys.executable, "-m", "stylemotion.extension", "status"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" not in proc.stderr, proc.stderr
    status = json.loads(proc.stdout)
    assert status["reference"] is True and status["cpu"] == BUILT
    proc = subprocess.run([sys.executable, "-m", "stylemotion.extension", "rebuild"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "invalid choice: 'rebuild'" in proc.stderr


@needs_ext
def test_kernel_preconditions_are_sentences():
    keys, index, t, *_ = lerp_inputs(4, (2, 3), "cpu")
    with pytest.raises(RuntimeError, match=r"index must lie in \[0, K - 2\]"):
        ops.fused_lerp(keys, index + 5, t, impl="cpu")
    with pytest.raises(RuntimeError, match="t must be \\[N\\] like index"):
        ops.fused_lerp(keys, index, t[:2], impl="cpu")
    with pytest.raises(ConfigError, match="the kernel does not take these dtypes"):
        ops.to_uint8(torch.zeros(1, 3, 2, 2, dtype=torch.float64), impl="cpu")


@needs_ext
def test_the_ops_trace_under_torch_compile():
    keys, index, t, tangents, span, _ = lerp_inputs(9, (2, 5), "cpu")

    def step(keys, index, t):  # the registered operators themselves, as a compiled program calls them
        ws = torch.ops.stylemotion.fused_lerp(keys, index, t, None, None, None, 1.0, None)
        return torch.ops.stylemotion.to_uint8(ws[:, None].expand(-1, 3, -1, -1))

    graph_only = torch.compile(step, backend="eager", fullgraph=True)  # traced through the fake kernels
    expected = ops.to_uint8(ops.fused_lerp(keys, index, t, impl="reference")[:, None].expand(-1, 3, -1, -1),
                            impl="reference")
    assert torch.equal(graph_only(keys, index, t), expected)


@needs_ext
def test_the_runtime_runs_the_kernels_and_frames_do_not_change():
    """With the kernels built, `auto` runs them in the runtime, and a video is the same as with the references."""
    from stylemotion.pipeline.directions import random_directions
    from stylemotion.runtime import stream

    from .helpers import make_generator

    G = make_generator()
    dirs = random_directions(G.w_dim, seed=1)
    s = stream(G, directions=dirs, script="happy:1,sad:1", fps=10, batch=3)
    sched = s.planner.plan.schedule
    with s:
        auto = [b.ws for b in s.batches()]
    assert s.stats()["ops"] == {"fused_lerp": "cpu", "to_uint8": "cpu", "acd": "cpu"}
    from stylemotion.pipeline.interpolate import Schedule

    index = torch.as_tensor(sched.index.segment)
    t = torch.as_tensor(sched.index.t, dtype=sched.keyframes.dtype)
    ref = ops.fused_lerp(sched.keyframes, index, t, tangents=sched.tangents, span=sched._transition[index],
                         impl="reference")
    assert isinstance(sched, Schedule) and torch.equal(torch.cat(auto), ref)
