// PyTorch operators over the raw kernels: torch.ops.stylemotion.{fused_lerp, to_uint8, acd}, registered with
// TORCH_LIBRARY so they work in eager mode, under torch.compile (fake kernels: stylemotion/_ext.py) and in CUDA
// graphs. Every precondition is a TORCH_CHECK sentence naming the argument.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#if defined(STYLEMOTION_WITH_CUDA)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include "ops.h"

namespace {

struct Prepared {
  at::Tensor keyframes, index, t, tangents, span, w_avg;
  sm::LerpArgs args;
};

Prepared prepare_lerp(const at::Tensor& keyframes, const at::Tensor& index, const at::Tensor& t,
                      const c10::optional<at::Tensor>& tangents, const c10::optional<at::Tensor>& span,
                      const c10::optional<at::Tensor>& w_avg, double psi) {
  TORCH_CHECK(keyframes.dim() >= 2, "keyframes must be [K, ...] with K >= 2 rows, got ", keyframes.sizes());
  TORCH_CHECK(keyframes.size(0) >= 2, "keyframes must hold at least 2 keyframes, got ", keyframes.size(0));
  TORCH_CHECK(keyframes.scalar_type() == at::kFloat || keyframes.scalar_type() == at::kHalf,
              "keyframes must be float32 or float16, got ", keyframes.scalar_type());
  TORCH_CHECK(index.dim() == 1 && index.scalar_type() == at::kLong, "index must be [N] int64, got ",
              index.sizes(), " ", index.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == index.size(0), "t must be [N] like index (N = ", index.size(0),
              "), got ", t.sizes());
  TORCH_CHECK(t.device() == keyframes.device() && index.device() == keyframes.device(),
              "keyframes, index and t must be on one device");
  Prepared p;
  p.keyframes = keyframes.to(at::kFloat).contiguous();
  p.index = index.contiguous();
  p.t = t.to(at::kFloat).contiguous();
  const int64_t k = keyframes.size(0), s = keyframes.numel() / k;
  // The range of index is checked on the CPU; on CUDA it is the caller's contract (reading it back would
  // synchronise the device every batch): the runtime's planner makes it in range by construction.
  if (index.numel() > 0 && index.device().is_cpu()) {
    const int64_t lo = p.index.min().item<int64_t>(), hi = p.index.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi + 1 < k, "index must lie in [0, K - 2] = [0, ", k - 2, "], got [", lo, ", ", hi, "]");
  }
  p.args = sm::LerpArgs{p.keyframes.data_ptr<float>(), p.index.data_ptr<int64_t>(), p.t.data_ptr<float>(),
                        nullptr, nullptr, nullptr, float(psi), index.size(0), s, k, 1};
  for (const auto* opt : {&tangents, &span, &w_avg}) {
    TORCH_CHECK(!opt->has_value() || (*opt)->device() == keyframes.device(),
                "tangents, span and w_avg must be on the keyframes' device ", keyframes.device());
  }
  if (tangents.has_value()) {
    TORCH_CHECK(tangents->sizes() == keyframes.sizes(), "tangents must have the keyframes' shape ",
                keyframes.sizes(), ", got ", tangents->sizes());
    TORCH_CHECK(span.has_value() && span->dim() == 1 && span->size(0) == index.size(0),
                "tangents need span [N] (the transition's frames of each output frame)");
    p.tangents = tangents->to(at::kFloat).contiguous();
    p.span = span->to(at::kFloat).contiguous();
    p.args.tangents = p.tangents.data_ptr<float>();
    p.args.span = p.span.data_ptr<float>();
  }
  if (w_avg.has_value()) {
    const int64_t d = keyframes.size(keyframes.dim() - 1);
    TORCH_CHECK(w_avg->numel() == d, "w_avg must have the last dimension's size ", d, ", got ", w_avg->sizes());
    p.w_avg = w_avg->to(at::kFloat).contiguous();
    p.args.w_avg = p.w_avg.data_ptr<float>();
    p.args.d = d;
  }
  return p;
}

at::ScalarType lerp_out_dtype(const c10::optional<at::ScalarType>& out_dtype) {
  const auto dtype = out_dtype.value_or(at::kFloat);
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf, "out_dtype must be float32 or float16, got ", dtype);
  return dtype;
}

std::vector<int64_t> lerp_out_shape(const at::Tensor& keyframes, const at::Tensor& index) {
  std::vector<int64_t> shape(keyframes.sizes().begin(), keyframes.sizes().end());
  shape[0] = index.size(0);
  return shape;
}

at::Tensor fused_lerp_cpu(const at::Tensor& keyframes, const at::Tensor& index, const at::Tensor& t,
                          const c10::optional<at::Tensor>& tangents, const c10::optional<at::Tensor>& span,
                          const c10::optional<at::Tensor>& w_avg, double psi,
                          c10::optional<at::ScalarType> out_dtype) {
  auto p = prepare_lerp(keyframes, index, t, tangents, span, w_avg, psi);
  const auto dtype = lerp_out_dtype(out_dtype);
  auto out = at::empty(lerp_out_shape(keyframes, index), keyframes.options().dtype(dtype));
  void* dst = out.data_ptr();
  const bool half = dtype == at::kHalf;
  at::parallel_for(0, p.args.n, std::max<int64_t>(1, 32768 / std::max<int64_t>(p.args.s, 1)),
                   [&](int64_t b, int64_t e) { sm::fused_lerp_cpu(p.args, dst, half, b, e); });
  return out;
}

void check_images(const at::Tensor& images) {
  TORCH_CHECK(images.dim() == 4, "images must be [N, C, H, W], got ", images.sizes());
  TORCH_CHECK(images.scalar_type() == at::kFloat || images.scalar_type() == at::kHalf,
              "images must be float32 or float16, got ", images.scalar_type());
}

at::Tensor to_uint8_cpu(const at::Tensor& images_in) {
  check_images(images_in);
  const auto images = images_in.contiguous();
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  auto out = at::empty({n, h, w, c}, images.options().dtype(at::kByte));
  uint8_t* dst = out.data_ptr<uint8_t>();
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(w * c, 1));  // rows per task
  if (images.scalar_type() == at::kHalf) {
    const auto* src = reinterpret_cast<const uint16_t*>(images.data_ptr<at::Half>());
    at::parallel_for(0, n * h, grain, [&](int64_t b, int64_t e) { sm::to_uint8_cpu_f16(src, n, c, h, w, dst, b, e); });
  } else {
    const float* src = images.data_ptr<float>();
    at::parallel_for(0, n * h, grain, [&](int64_t b, int64_t e) { sm::to_uint8_cpu(src, n, c, h, w, dst, b, e); });
  }
  return out;
}

void check_acd(const at::Tensor& frames, const c10::optional<at::Tensor>& previous) {
  TORCH_CHECK(frames.dim() >= 1, "frames must be [N, ...], got a scalar");
  TORCH_CHECK(frames.scalar_type() == at::kFloat || frames.scalar_type() == at::kByte,
              "frames must be float32 or uint8, got ", frames.scalar_type());
  if (previous.has_value()) {
    TORCH_CHECK(previous->device() == frames.device(), "previous must be on the frames' device ", frames.device(),
                ", got ", previous->device());
    TORCH_CHECK(previous->scalar_type() == frames.scalar_type(), "previous must have the frames' dtype ",
                frames.scalar_type(), ", got ", previous->scalar_type());
    TORCH_CHECK(previous->numel() * std::max<int64_t>(frames.size(0), 1) == frames.numel() || frames.size(0) == 0,
                "previous must be one frame of the frames' size, got ", previous->sizes(), " for frames ",
                frames.sizes());
  }
}

at::Tensor acd_cpu(const at::Tensor& frames_in, const c10::optional<at::Tensor>& previous_in) {
  check_acd(frames_in, previous_in);
  const auto frames = frames_in.contiguous();
  const int64_t n = frames.size(0), size = n ? frames.numel() / n : 0;
  const auto previous = previous_in.has_value() ? previous_in->contiguous() : at::Tensor();
  const int64_t pairs = previous.defined() ? n : std::max<int64_t>(n - 1, 0);
  auto out = at::empty({pairs}, frames.options().dtype(at::kDouble));
  double* dst = out.data_ptr<double>();
  if (frames.scalar_type() == at::kByte) {
    const uint8_t* src = frames.data_ptr<uint8_t>();
    const uint8_t* prev = previous.defined() ? previous.data_ptr<uint8_t>() : nullptr;
    at::parallel_for(0, pairs, 1, [&](int64_t b, int64_t e) { sm::acd_cpu_u8(src, prev, n, size, dst, b, e); });
  } else {
    const float* src = frames.data_ptr<float>();
    const float* prev = previous.defined() ? previous.data_ptr<float>() : nullptr;
    at::parallel_for(0, pairs, 1, [&](int64_t b, int64_t e) { sm::acd_cpu_f32(src, prev, n, size, dst, b, e); });
  }
  return out;
}

#if defined(STYLEMOTION_WITH_CUDA)
void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": the CUDA launch failed: ", cudaGetErrorString(err));
}

at::Tensor fused_lerp_cuda(const at::Tensor& keyframes, const at::Tensor& index, const at::Tensor& t,
                           const c10::optional<at::Tensor>& tangents, const c10::optional<at::Tensor>& span,
                           const c10::optional<at::Tensor>& w_avg, double psi,
                           c10::optional<at::ScalarType> out_dtype) {
  const c10::cuda::CUDAGuard guard(keyframes.device());
  auto p = prepare_lerp(keyframes, index, t, tangents, span, w_avg, psi);
  const auto dtype = lerp_out_dtype(out_dtype);
  auto out = at::empty(lerp_out_shape(keyframes, index), keyframes.options().dtype(dtype));
  check_launch(sm::fused_lerp_cuda(p.args, out.data_ptr(), dtype == at::kHalf, at::cuda::getCurrentCUDAStream()),
               "fused_lerp");
  return out;
}

at::Tensor to_uint8_cuda(const at::Tensor& images_in) {
  check_images(images_in);
  const c10::cuda::CUDAGuard guard(images_in.device());
  const auto images = images_in.contiguous();
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  auto out = at::empty({n, h, w, c}, images.options().dtype(at::kByte));
  check_launch(sm::to_uint8_cuda(images.data_ptr(), images.scalar_type() == at::kHalf, n, c, h, w,
                                 out.data_ptr<uint8_t>(), at::cuda::getCurrentCUDAStream()),
               "to_uint8");
  return out;
}

at::Tensor acd_cuda(const at::Tensor& frames_in, const c10::optional<at::Tensor>& previous_in) {
  check_acd(frames_in, previous_in);
  const c10::cuda::CUDAGuard guard(frames_in.device());
  const auto frames = frames_in.contiguous();
  const int64_t n = frames.size(0), size = n ? frames.numel() / n : 0;
  const auto previous = previous_in.has_value() ? previous_in->contiguous() : at::Tensor();
  const int64_t pairs = previous.defined() ? n : std::max<int64_t>(n - 1, 0);
  auto out = at::empty({pairs}, frames.options().dtype(at::kDouble));
  check_launch(sm::acd_cuda(frames.data_ptr(), previous.defined() ? previous.data_ptr() : nullptr,
                            frames.scalar_type() == at::kByte, n, size, out.data_ptr<double>(),
                            at::cuda::getCurrentCUDAStream()),
               "acd");
  return out;
}
#endif

}  // namespace

TORCH_LIBRARY(stylemotion, m) {
  m.def("fused_lerp(Tensor keyframes, Tensor index, Tensor t, Tensor? tangents, Tensor? span, Tensor? w_avg, "
        "float psi, ScalarType? out_dtype) -> Tensor");
  m.def("to_uint8(Tensor images) -> Tensor");
  m.def("acd(Tensor frames, Tensor? previous) -> Tensor");
}

TORCH_LIBRARY_IMPL(stylemotion, CPU, m) {
  m.impl("fused_lerp", &fused_lerp_cpu);
  m.impl("to_uint8", &to_uint8_cpu);
  m.impl("acd", &acd_cpu);
}

#if defined(STYLEMOTION_WITH_CUDA)
TORCH_LIBRARY_IMPL(stylemotion, CUDA, m) {
  m.impl("fused_lerp", &fused_lerp_cuda);
  m.impl("to_uint8", &to_uint8_cuda);
  m.impl("acd", &acd_cuda);
}
#endif
