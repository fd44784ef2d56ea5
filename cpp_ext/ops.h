// stylemotion cpp_ext: the per-frame arithmetic around the generator, as plain C++ / CUDA.
//
// The element math lives here, in __host__ __device__ inline functions that the CPU kernels (cpu_ops.cpp) and the
// CUDA kernels (*.cu) both call, so the CPU tests exercise the arithmetic the GPU runs. No PyTorch header is
// included here or in any kernel file: kernels take raw pointers, sizes and (on CUDA) a cudaStream_t. Only
// bindings.cpp knows about tensors.
//
// Every float operation is written out with explicit rounding so that no compiler contracts a*b+c into an FMA:
// the results must equal PyTorch's eager reference (stylemotion/ops.py) bit for bit in float32.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SM_HD __host__ __device__ __forceinline__
#else
#define SM_HD inline
#endif

namespace sm {

// One rounding per operation, on both sides (nvcc would otherwise fuse a * b + c; g++ is built with
// -ffp-contract=off).
SM_HD float fadd(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
SM_HD float fsub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
SM_HD float fmul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// Linear: a + t * (b - a); t == 0 and t == 1 give the keyframes themselves.
SM_HD float lerp(float a, float b, float t) {
  if (t == 1.0f) return b;
  if (t == 0.0f) return a;
  return fadd(a, fmul(t, fsub(b, a)));
}

// The cubic Hermite of the smooth mode, in the reference's operation order:
//   (2t^3 - 3t^2 + 1) a + (t^3 - 2t^2 + t) va + (-2t^3 + 3t^2) b + (t^3 - t^2) vb,  t2 = t*t, t3 = t2*t,
// with va = ta * m and vb = tb * m (tangents scaled by the transition's frames m).
SM_HD float hermite(float a, float b, float ta, float tb, float m, float t) {
  if (t == 1.0f) return b;
  if (t == 0.0f) return a;
  const float t2 = fmul(t, t);
  const float t3 = fmul(t2, t);
  const float h00 = fadd(fsub(fmul(2.0f, t3), fmul(3.0f, t2)), 1.0f);
  const float h10 = fadd(fsub(t3, fmul(2.0f, t2)), t);
  const float h01 = fadd(fmul(-2.0f, t3), fmul(3.0f, t2));
  const float h11 = fsub(t3, t2);
  const float va = fmul(ta, m), vb = fmul(tb, m);
  return fadd(fadd(fadd(fmul(h00, a), fmul(h10, va)), fmul(h01, b)), fmul(h11, vb));
}

// Truncation toward w_avg: w_avg + psi * (x - w_avg).
SM_HD float truncate(float x, float w_avg, float psi) { return fadd(w_avg, fmul(psi, fsub(x, w_avg))); }

// The official image conversion: (x * 127.5 + 128) clamped to [0, 255], truncated toward zero (NaN: what the
// platform's float-to-int conversion gives, as in PyTorch). Written as selects, which the CPU loop vectorises.
SM_HD uint8_t to_u8(float x) {
  float y = fadd(fmul(x, 127.5f), 128.0f);
  y = y < 0.0f ? 0.0f : y;
  y = y > 255.0f ? 255.0f : y;
  return static_cast<uint8_t>(static_cast<int32_t>(y));
}

// float -> IEEE half bits, round to nearest even (what .to(torch.float16) does).
SM_HD uint16_t float_to_half(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof x);
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return uint16_t(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));  // inf, NaN
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: overflow to inf
  if (abs < 0x38800000u) {  // below the smallest normal half: a subnormal (or zero)
    if (abs < 0x33000000u) return uint16_t(sign);  // below half the smallest subnormal: zero
    const uint32_t e = abs >> 23, m = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14 + (112 - e) + ... : bits dropped to reach a 10-bit subnormal
    const uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    return uint16_t(sign | (q + ((rem > halfway || (rem == halfway && (q & 1u))) ? 1u : 0u)));
  }
  const uint32_t q = ((abs >> 13) - (112u << 10)), rem = abs & 0x1fffu;
  return uint16_t(sign | (q + ((rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ? 1u : 0u)));
}

// fused_lerp over a batch: frame i interpolates keyframes index[i] and index[i] + 1 at t[i]; S elements per
// keyframe. tangents/span: the Hermite form (null: linear). w_avg/psi: truncation (w_avg null: none; w_avg has
// the last dimension's size D, S a multiple of it).
struct LerpArgs {
  const float* keyframes;  // [K, S]
  const int64_t* index;    // [N]
  const float* t;          // [N]
  const float* tangents;   // [K, S] or null
  const float* span;       // [N] or null (with tangents)
  const float* w_avg;      // [D] or null
  float psi;
  int64_t n, s, k, d;
};

SM_HD float lerp_element(const LerpArgs& a, int64_t i, int64_t e) {
  const int64_t k = a.index[i];
  const float x0 = a.keyframes[k * a.s + e], x1 = a.keyframes[(k + 1) * a.s + e];
  float x = a.tangents ? hermite(x0, x1, a.tangents[k * a.s + e], a.tangents[(k + 1) * a.s + e], a.span[i], a.t[i])
                       : lerp(x0, x1, a.t[i]);
  if (a.w_avg) x = truncate(x, a.w_avg[e % a.d], a.psi);
  return x;
}

// CPU kernels (cpu_ops.cpp), each over a range [begin, end) of its work items so the caller can split the work
// across threads (bindings.cpp uses PyTorch's intra-op pool). fused_lerp: items are frames, writing float32 to
// `out`, or IEEE half bits when out_half. to_uint8: items are image rows (n * h of them). acd: items are pairs,
// distances[j] = || frame_{j+1} - frame_j || over `size` values, with frames[-1] = previous (null: none).
void fused_lerp_cpu(const LerpArgs& args, void* out, bool out_half, int64_t begin, int64_t end);
void to_uint8_cpu(const float* images, int64_t n, int64_t c, int64_t h, int64_t w, uint8_t* out, int64_t begin,
                  int64_t end);
void to_uint8_cpu_f16(const uint16_t* images, int64_t n, int64_t c, int64_t h, int64_t w, uint8_t* out,
                      int64_t begin, int64_t end);
void acd_cpu_f32(const float* frames, const float* previous, int64_t n, int64_t size, double* out, int64_t begin,
                 int64_t end);
void acd_cpu_u8(const uint8_t* frames, const uint8_t* previous, int64_t n, int64_t size, double* out,
                int64_t begin, int64_t end);

}  // namespace sm

#if defined(STYLEMOTION_WITH_CUDA) || defined(__CUDACC__)
#include <cuda_runtime.h>
namespace sm {
// CUDA launchers (*.cu): enqueue on `stream`, return the launch error.
cudaError_t fused_lerp_cuda(const LerpArgs& args, void* out, bool out_half, cudaStream_t stream);
cudaError_t to_uint8_cuda(const void* images, bool half, int64_t n, int64_t c, int64_t h, int64_t w, uint8_t* out,
                          cudaStream_t stream);
// acd: `partials` holds pairs * acd_chunks(u8, size) doubles of scratch (pass 1 writes one per chunk).
inline int64_t acd_chunk(bool u8) { return u8 ? 65536 : 16384; }  // 64 KiB of each frame per block
inline int64_t acd_chunks(bool u8, int64_t size) {
  const int64_t chunk = acd_chunk(u8);
  return size > 0 ? (size + chunk - 1) / chunk : 1;
}
cudaError_t acd_cuda(const void* frames, const void* previous, bool u8, int64_t n, int64_t size, double* out,
                     double* partials, cudaStream_t stream);
}  // namespace sm
#endif
