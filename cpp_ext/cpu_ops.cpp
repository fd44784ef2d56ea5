// CPU kernels: plain loops over the shared element math (ops.h); the compiler vectorises them, OpenMP splits
// large batches when it is enabled.
#include <cmath>
#include <cstring>

#include "ops.h"

namespace sm {

void fused_lerp_cpu(const LerpArgs& args, void* out, bool out_half) {
#pragma omp parallel for if (args.n * args.s > (1 << 16))
  for (int64_t i = 0; i < args.n; ++i) {
    if (out_half) {
      uint16_t* row = static_cast<uint16_t*>(out) + i * args.s;
      for (int64_t e = 0; e < args.s; ++e) row[e] = float_to_half(lerp_element(args, i, e));
    } else {
      float* row = static_cast<float*>(out) + i * args.s;
      for (int64_t e = 0; e < args.s; ++e) row[e] = lerp_element(args, i, e);
    }
  }
}

template <typename Load>
static void to_uint8_impl(Load load, int64_t n, int64_t c, int64_t h, int64_t w, uint8_t* out) {
  const int64_t plane = h * w;
#pragma omp parallel for if (n * plane > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t p = 0; p < plane; ++p) {
      uint8_t* px = out + (i * plane + p) * c;
      for (int64_t ch = 0; ch < c; ++ch) px[ch] = to_u8(load((i * c + ch) * plane + p));
    }
  }
}

void to_uint8_cpu(const float* images, int64_t n, int64_t c, int64_t h, int64_t w, uint8_t* out) {
  to_uint8_impl([images](int64_t j) { return images[j]; }, n, c, h, w, out);
}

// IEEE half -> float, exactly (every half is a float).
static inline float half_to_float(uint16_t bits) {
  const uint32_t sign = (bits & 0x8000u) << 16, exp = (bits >> 10) & 0x1fu, mant = bits & 0x3ffu;
  uint32_t f;
  if (exp == 0) {
    if (mant == 0) {
      f = sign;
    } else {  // subnormal: normalise
      int e = -1;
      uint32_t m = mant;
      do { m <<= 1; ++e; } while (!(m & 0x400u));
      f = sign | (uint32_t(127 - 15 - e) << 23) | ((m & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    f = sign | 0x7f800000u | (mant << 13);
  } else {
    f = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float out;
  std::memcpy(&out, &f, sizeof out);
  return out;
}

void to_uint8_cpu_f16(const uint16_t* images, int64_t n, int64_t c, int64_t h, int64_t w, uint8_t* out) {
  to_uint8_impl([images](int64_t j) { return half_to_float(images[j]); }, n, c, h, w, out);
}

template <typename T>
static void acd_impl(const T* frames, const T* previous, int64_t n, int64_t size, double* out) {
  const int64_t pairs = previous ? n : n - 1;
#pragma omp parallel for if (pairs * size > (1 << 16))
  for (int64_t j = 0; j < pairs; ++j) {
    const T* a = previous ? (j == 0 ? previous : frames + (j - 1) * size) : frames + j * size;
    const T* b = previous ? frames + j * size : frames + (j + 1) * size;
    double sum = 0.0;
    for (int64_t e = 0; e < size; ++e) {
      const double diff = double(b[e]) - double(a[e]);
      sum += diff * diff;
    }
    out[j] = std::sqrt(sum);
  }
}

void acd_cpu_f32(const float* frames, const float* previous, int64_t n, int64_t size, double* out) {
  acd_impl(frames, previous, n, size, out);
}

void acd_cpu_u8(const uint8_t* frames, const uint8_t* previous, int64_t n, int64_t size, double* out) {
  acd_impl(frames, previous, n, size, out);
}

}  // namespace sm
