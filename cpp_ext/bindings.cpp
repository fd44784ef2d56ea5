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

namespace sm {
void winograd_input_cpu(const float* x, const float* styles, int64_t n_images, int64_t c, int64_t h, int64_t w,
                        float* v, int64_t begin, int64_t end);
void winograd_output_cpu(const float* m, const float* scale, const float* shift, float slope, float clamp,
                         bool has_clamp, int64_t n_images, int64_t k, int64_t h, int64_t w, float* y,
                         int64_t begin, int64_t end);
}  // namespace sm

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

void check_float_cpu(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == dim, name, " must be a ", dim,
              "-D float32 CPU tensor, got ", t.sizes(), " ", t.scalar_type(), " on ", t.device());
}

// x [N, C, H, W], styles [N, C] -> V [36, N, C, H/4 * W/4] (the modulated input, Winograd-transformed).
at::Tensor winograd_input(const at::Tensor& x_in, const at::Tensor& styles_in) {
  check_float_cpu(x_in, "x", 4);
  check_float_cpu(styles_in, "styles", 2);
  const int64_t n = x_in.size(0), c = x_in.size(1), h = x_in.size(2), w = x_in.size(3);
  TORCH_CHECK(h % 4 == 0 && w % 4 == 0 && h > 0 && w > 0, "x height and width must be multiples of 4, got ",
              x_in.sizes());
  TORCH_CHECK(styles_in.size(0) == n && styles_in.size(1) == c, "styles must be [N, C] = [", n, ", ", c, "], got ",
              styles_in.sizes());
  const auto x = x_in.contiguous();
  const auto styles = styles_in.contiguous();
  auto v = at::empty({36, n, c, (h / 4) * (w / 4)}, x.options());
  const float* src = x.data_ptr<float>();
  const float* s = styles.data_ptr<float>();
  float* dst = v.data_ptr<float>();
  at::parallel_for(0, n * c, 1, [&](int64_t b, int64_t e) { sm::winograd_input_cpu(src, s, n, c, h, w, dst, b, e); });
  return v;
}

// M [36, N, K, P*Q] -> y [N, K, H, W] = clamp(lrelu(scale * (A^T M A) + shift)); shift [1, K, H, W], scale [N, K].
at::Tensor winograd_output(const at::Tensor& m_in, const at::Tensor& scale_in, const at::Tensor& shift_in,
                           int64_t h, int64_t w, double slope, c10::optional<double> clamp) {
  check_float_cpu(m_in, "m", 4);
  check_float_cpu(scale_in, "scale", 2);
  check_float_cpu(shift_in, "shift", 4);
  const int64_t n = m_in.size(1), k = m_in.size(2);
  TORCH_CHECK(h % 4 == 0 && w % 4 == 0 && h > 0 && w > 0, "h and w must be multiples of 4, got ", h, "x", w);
  TORCH_CHECK(m_in.size(0) == 36 && m_in.size(3) == (h / 4) * (w / 4), "m must be [36, N, K, ", (h / 4) * (w / 4),
              "], got ", m_in.sizes());
  TORCH_CHECK(scale_in.size(0) == n && scale_in.size(1) == k, "scale must be [N, K] = [", n, ", ", k, "], got ",
              scale_in.sizes());
  TORCH_CHECK(shift_in.size(0) == 1 && shift_in.size(1) == k && shift_in.size(2) == h && shift_in.size(3) == w,
              "shift must be [1, ", k, ", ", h, ", ", w, "], got ", shift_in.sizes());
  const auto m = m_in.contiguous();
  const auto scale = scale_in.contiguous();
  const auto shift = shift_in.contiguous();
  auto y = at::empty({n, k, h, w}, m.options());
  const float* src = m.data_ptr<float>();
  const float* sc = scale.data_ptr<float>();
  const float* sh = shift.data_ptr<float>();
  float* dst = y.data_ptr<float>();
  const bool has_clamp = clamp.has_value();
  const float c = has_clamp ? static_cast<float>(*clamp) : 0.0f;
  at::parallel_for(0, n * k, 1, [&](int64_t b, int64_t e) {
    sm::winograd_output_cpu(src, sc, sh, static_cast<float>(slope), c, has_clamp, n, k, h, w, dst, b, e);
  });
  return y;
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
  const bool u8 = frames.scalar_type() == at::kByte;
  auto partials = at::empty({std::max<int64_t>(pairs, 1) * sm::acd_chunks(u8, size)},
                            frames.options().dtype(at::kDouble));
  check_launch(sm::acd_cuda(frames.data_ptr(), previous.defined() ? previous.data_ptr() : nullptr, u8, n, size,
                            out.data_ptr<double>(), partials.data_ptr<double>(), at::cuda::getCurrentCUDAStream()),
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
  m.def("winograd_input(Tensor x, Tensor styles) -> Tensor");
  m.def("winograd_output(Tensor m, Tensor scale, Tensor shift, int h, int w, float slope, float? clamp) -> Tensor");
}

TORCH_LIBRARY_IMPL(stylemotion, CPU, m) {
  m.impl("fused_lerp", &fused_lerp_cpu);
  m.impl("to_uint8", &to_uint8_cpu);
  m.impl("acd", &acd_cpu);
  m.impl("winograd_input", &winograd_input);
  m.impl("winograd_output", &winograd_output);
}

#if defined(STYLEMOTION_WITH_CUDA)
TORCH_LIBRARY_IMPL(stylemotion, CUDA, m) {
  m.impl("fused_lerp", &fused_lerp_cuda);
  m.impl("to_uint8", &to_uint8_cuda);
  m.impl("acd", &acd_cuda);
}
#endif
