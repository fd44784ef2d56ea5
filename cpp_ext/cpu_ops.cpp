// CPU kernels: plain loops over the shared element math (ops.h) that the compiler vectorises; each covers a range
// of work items, and bindings.cpp splits the items across PyTorch's intra-op threads.
#include <cmath>
#include <cstring>

#include "ops.h"

namespace sm {

void fused_lerp_cpu(const LerpArgs& args, void* out, bool out_half, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    if (out_half) {
      uint16_t* row = static_cast<uint16_t*>(out) + i * args.s;
      for (int64_t e = 0; e < args.s; ++e) row[e] = float_to_half(lerp_element(args, i, e));
    } else {
      float* row = static_cast<float*>(out) + i * args.s;
      for (int64_t e = 0; e < args.s; ++e) row[e] = lerp_element(args, i, e);
    }
  }
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

// One image row: each plane's row converted in a vectorisable loop, then interleaved into HWC. Rows are items
// n * h + y.
template <typename T, typename Load>
static void to_uint8_rows(const T* images, int64_t c, int64_t h, int64_t w, uint8_t* out, int64_t begin,
                          int64_t end, Load load) {
  constexpr int64_t kChunk = 512;
  float values[kChunk];
  uint8_t bytes[4][kChunk];
  for (int64_t r = begin; r < end; ++r) {
    const int64_t i = r / h, y = r % h;
    uint8_t* dst = out + r * w * c;
    for (int64_t x0 = 0; x0 < w; x0 += kChunk) {
      const int64_t len = (w - x0 < kChunk) ? w - x0 : kChunk;
      for (int64_t ch0 = 0; ch0 < c; ch0 += 4) {
        const int64_t chs = (c - ch0 < 4) ? c - ch0 : 4;
        for (int64_t ch = 0; ch < chs; ++ch) {
          const T* src = images + ((i * c + ch0 + ch) * h + y) * w + x0;
          for (int64_t x = 0; x < len; ++x) values[x] = load(src[x]);
          for (int64_t x = 0; x < len; ++x) bytes[ch][x] = to_u8(values[x]);
        }
        if (c == 3) {
          for (int64_t x = 0; x < len; ++x) {
            uint8_t* px = dst + (x0 + x) * 3;
            px[0] = bytes[0][x];
            px[1] = bytes[1][x];
            px[2] = bytes[2][x];
          }
        } else {
          for (int64_t x = 0; x < len; ++x)
            for (int64_t ch = 0; ch < chs; ++ch) dst[(x0 + x) * c + ch0 + ch] = bytes[ch][x];
        }
      }
    }
  }
}

void to_uint8_cpu(const float* images, int64_t n, int64_t c, int64_t h, int64_t w, uint8_t* out, int64_t begin,
                  int64_t end) {
  to_uint8_rows(images, c, h, w, out, begin, end, [](float v) { return v; });
}

void to_uint8_cpu_f16(const uint16_t* images, int64_t n, int64_t c, int64_t h, int64_t w, uint8_t* out,
                      int64_t begin, int64_t end) {
  to_uint8_rows(images, c, h, w, out, begin, end, [](uint16_t v) { return half_to_float(v); });
}

// One pair's squared distance: float64 for float32 frames; exact int64 for uint8 frames (255^2 * size fits).
static double squared_distance(const float* a, const float* b, int64_t size) {
  double sum = 0.0;
  for (int64_t e = 0; e < size; ++e) {
    const double d = double(b[e]) - double(a[e]);
    sum += d * d;
  }
  return sum;
}

static double squared_distance(const uint8_t* a, const uint8_t* b, int64_t size) {
  int64_t sum = 0;
  for (int64_t e = 0; e < size; ++e) {
    const int32_t d = int32_t(b[e]) - int32_t(a[e]);
    sum += d * d;
  }
  return double(sum);
}

template <typename T>
static void acd_impl(const T* frames, const T* previous, int64_t size, double* out, int64_t begin, int64_t end) {
  for (int64_t j = begin; j < end; ++j) {
    const T* a = previous ? (j == 0 ? previous : frames + (j - 1) * size) : frames + j * size;
    const T* b = previous ? frames + j * size : frames + (j + 1) * size;
    out[j] = std::sqrt(squared_distance(a, b, size));
  }
}

void acd_cpu_f32(const float* frames, const float* previous, int64_t n, int64_t size, double* out, int64_t begin,
                 int64_t end) {
  acd_impl(frames, previous, size, out, begin, end);
}

void acd_cpu_u8(const uint8_t* frames, const uint8_t* previous, int64_t n, int64_t size, double* out,
                int64_t begin, int64_t end) {
  acd_impl(frames, previous, size, out, begin, end);
}

}  // namespace sm
