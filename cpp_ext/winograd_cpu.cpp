// Winograd F(4x4, 3x3) input and output transforms for the CPU plan (stylemotion/models/stylegan2_fast.py).
//
// The 36 matrix products between them stay in PyTorch (torch.matmul: MKL/oneDNN GEMMs). What these kernels save
// is memory traffic: PyTorch's version of each transform is a chain of strided copies, stacks, small matrix
// products and a permute, five or six passes over a tensor 2.25x the size of the activations; here each is one
// pass, with the style modulation folded into the input transform and the layer's whole epilogue (demodulation
// and gain, noise and bias, leaky ReLU, clamp) folded into the output transform.
//
// Layouts (float32, contiguous): x [N, C, H, W] with H, W multiples of 4; styles [N, C]; V and M
// [36, N, C or K, P*Q] with the 36 transform points ordered column point major (index = b * 6 + a, a the row
// point), P = H / 4, Q = W / 4; scale [N, K]; shift [1, K, H, W]; y [N, K, H, W].
#include <algorithm>
#include <cstdint>
#include <vector>

namespace sm {

// The transform matrices' rows, applied elementwise across arrays of length n (loops the compiler vectorises).
// B^T (input): 6 arrays in, 6 out.
static inline __attribute__((always_inline)) void bt_rows(const float* const d[6], float* const r[6], int64_t n) {
  const float* __restrict__ d0p = d[0];
  const float* __restrict__ d1p = d[1];
  const float* __restrict__ d2p = d[2];
  const float* __restrict__ d3p = d[3];
  const float* __restrict__ d4p = d[4];
  const float* __restrict__ d5p = d[5];
  float* __restrict__ r0 = r[0];
  float* __restrict__ r1 = r[1];
  float* __restrict__ r2 = r[2];
  float* __restrict__ r3 = r[3];
  float* __restrict__ r4 = r[4];
  float* __restrict__ r5 = r[5];
  for (int64_t i = 0; i < n; ++i) {
    const float d0 = d0p[i], d1 = d1p[i], d2 = d2p[i], d3 = d3p[i], d4 = d4p[i], d5 = d5p[i];
    r0[i] = 4.0f * d0 - 5.0f * d2 + d4;
    r1[i] = -4.0f * d1 - 4.0f * d2 + d3 + d4;
    r2[i] = 4.0f * d1 - 4.0f * d2 - d3 + d4;
    r3[i] = -2.0f * d1 - d2 + 2.0f * d3 + d4;
    r4[i] = 2.0f * d1 - d2 - 2.0f * d3 + d4;
    r5[i] = 4.0f * d1 - 5.0f * d3 + d5;
  }
}

// A^T (output): 6 arrays in, 4 out.
static inline __attribute__((always_inline)) void at_rows(const float* const m[6], float* const o[4], int64_t n) {
  const float* __restrict__ m0p = m[0];
  const float* __restrict__ m1p = m[1];
  const float* __restrict__ m2p = m[2];
  const float* __restrict__ m3p = m[3];
  const float* __restrict__ m4p = m[4];
  const float* __restrict__ m5p = m[5];
  float* __restrict__ o0 = o[0];
  float* __restrict__ o1 = o[1];
  float* __restrict__ o2 = o[2];
  float* __restrict__ o3 = o[3];
  for (int64_t i = 0; i < n; ++i) {
    const float m0 = m0p[i], m1 = m1p[i], m2 = m2p[i], m3 = m3p[i], m4 = m4p[i], m5 = m5p[i];
    o0[i] = m0 + m1 + m2 + m3 + m4;
    o1[i] = m1 - m2 + 2.0f * m3 - 2.0f * m4;
    o2[i] = m1 + m2 + 4.0f * m3 + 4.0f * m4;
    o3[i] = m1 - m2 + 8.0f * m3 - 8.0f * m4 + m5;
  }
}

// AVX2 where the CPU has it (the loader picks the clone at run time), SSE2 elsewhere.
#define SM_CLONES __attribute__((target_clones("avx2", "default")))

// Planes [begin, end) of n * C + c: V[:, n, c, :] = B^T (s[n, c] * x[n, c] tile) B for every tile, padding 1.
// Two passes per plane, each streaming: (1) the row transform of every row of tiles across the plane's width
// (reads the plane once), into a buffer that stays in cache; (2) for each of the 36 points, the column transform
// of every tile, written as one contiguous run into that point's output plane (one write stream at a time).
SM_CLONES void winograd_input_cpu(const float* x, const float* styles, int64_t n_images, int64_t c, int64_t h,
                                  int64_t w, float* v, int64_t begin, int64_t end) {
  const int64_t p = h / 4, q = w / 4, tiles = p * q, plane_stride = n_images * c * tiles, wp = w + 2;
  std::vector<float> rows(6 * wp), trows(6 * p * wp), cols(6 * tiles);
  for (int64_t plane = begin; plane < end; ++plane) {
    const float s = styles[plane];
    const float* src = x + plane * h * w;
    for (int64_t ty = 0; ty < p; ++ty) {  // pass 1: trows[a][ty][col]
      for (int i = 0; i < 6; ++i) {  // input rows 4ty-1 .. 4ty+4, zero outside the image
        float* row = rows.data() + i * wp;
        const int64_t yy = ty * 4 - 1 + i;
        if (yy < 0 || yy >= h) {
          std::fill(row, row + wp, 0.0f);
        } else {
          row[0] = row[wp - 1] = 0.0f;
          const float* in = src + yy * w;
          for (int64_t j = 0; j < w; ++j) row[j + 1] = in[j] * s;
        }
      }
      const float* d[6];
      float* r[6];
      for (int i = 0; i < 6; ++i) {
        d[i] = rows.data() + i * wp;
        r[i] = trows.data() + (i * p + ty) * wp;
      }
      bt_rows(d, r, wp);
    }
    for (int a = 0; a < 6; ++a) {  // pass 2, per row point a
      float* cj[6];
      for (int j = 0; j < 6; ++j) {  // tile column j of every tile: cols[j][t]
        cj[j] = cols.data() + j * tiles;
        for (int64_t ty = 0; ty < p; ++ty) {
          const float* tr = trows.data() + (a * p + ty) * wp;
          float* out = cj[j] + ty * q;
          for (int64_t tx = 0; tx < q; ++tx) out[tx] = tr[tx * 4 + j];
        }
      }
      const float* cin[6] = {cj[0], cj[1], cj[2], cj[3], cj[4], cj[5]};
      float* out[6];
      for (int b = 0; b < 6; ++b) out[b] = v + (b * 6 + a) * plane_stride + plane * tiles;
      bt_rows(cin, out, tiles);
    }
  }
}

// Planes [begin, end) of n * K + k: y = clamp(lrelu(scale[n, k] * (A^T m A) + shift[k])). Two passes per plane:
// (1) for each column point b, the row-point transform of all tiles, reading 6 of the 36 planes as contiguous
// streams into a buffer that stays in cache; (2) the column-point transform and the epilogue while the 4x4
// outputs are interleaved into the image rows.
SM_CLONES void winograd_output_cpu(const float* m, const float* scale, const float* shift, float slope,
                                   float clamp, bool has_clamp, int64_t n_images, int64_t k, int64_t h, int64_t w,
                                   float* y, int64_t begin, int64_t end) {
  const int64_t p = h / 4, q = w / 4, tiles = p * q, plane_stride = n_images * k * tiles;
  std::vector<float> cols(4 * 6 * tiles), outs(4 * q);
  for (int64_t plane = begin; plane < end; ++plane) {
    const float sc = scale[plane];
    const float* sh = shift + (plane % k) * h * w;
    float* dst = y + plane * h * w;
    for (int b = 0; b < 6; ++b) {  // pass 1: cols[i][b][t] = sum_a AT[i][a] M[b*6+a][t]
      const float* min[6];
      for (int a = 0; a < 6; ++a) min[a] = m + (b * 6 + a) * plane_stride + plane * tiles;
      float* o[4];
      for (int i = 0; i < 4; ++i) o[i] = cols.data() + (i * 6 + b) * tiles;
      at_rows(min, o, tiles);
    }
    for (int64_t ty = 0; ty < p; ++ty) {  // pass 2
      for (int i = 0; i < 4; ++i) {
        const float* cin[6];
        for (int b = 0; b < 6; ++b) cin[b] = cols.data() + (i * 6 + b) * tiles + ty * q;
        float* o[4];
        for (int j = 0; j < 4; ++j) o[j] = outs.data() + j * q;
        at_rows(cin, o, q);
        const int64_t row = (ty * 4 + i) * w;
        for (int j = 0; j < 4; ++j) {
          const float* oj = outs.data() + j * q;
          for (int64_t tx = 0; tx < q; ++tx) {
            float value = sc * oj[tx] + sh[row + tx * 4 + j];
            value = value < 0.0f ? value * slope : value;
            if (has_clamp) value = value < -clamp ? -clamp : (value > clamp ? clamp : value);
            dst[row + tx * 4 + j] = value;
          }
        }
      }
    }
  }
}

}  // namespace sm
