// acd on CUDA, in two passes so that every SM streams memory: pass 1 splits each consecutive pair of frames into
// chunks (a 2-D grid: pair x chunk), each block reading 16-byte vectors of both frames and summing the squared
// differences (exactly, in 64-bit integers, for uint8; in float64 for float32) into one partial per chunk; pass 2
// adds each pair's partials in a fixed order and takes the square root. No atomics: the result does not depend on
// the order blocks run in. Measured on an H200 (bench/ops.py, 8x1024²x3 uint8, useful bytes): one block per pair
// on byte loads (the first kernel) 10.9 GB/s; this grid 818 GB/s; one block per 16 KiB chunk walking the pairs
// (each frame read from memory once, the repeat from L2) 607 GB/s, so fewer, serial blocks lost. The op moves
// 25 MB, a few microseconds at copy speed: two launches and two allocations are now a large share of its time.
#include "ops.h"

namespace sm {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ unsigned long long sq_diff_u8x4(uint32_t a, uint32_t b) {
  unsigned long long s = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int d = int((b >> (8 * k)) & 0xffu) - int((a >> (8 * k)) & 0xffu);
    s += unsigned(d * d);
  }
  return s;
}

template <typename Acc>
__device__ __forceinline__ Acc block_sum(Acc v) {
  __shared__ Acc partial[kThreads];
  partial[threadIdx.x] = v;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  return partial[0];
}

template <typename T>
__device__ __forceinline__ void pair_of(const T* frames, const T* previous, int64_t j, int64_t size, const T** a,
                                        const T** b) {
  *a = previous ? (j == 0 ? previous : frames + (j - 1) * size) : frames + j * size;
  *b = previous ? frames + j * size : frames + (j + 1) * size;
}

__global__ void acd_partial_u8(const uint8_t* frames, const uint8_t* previous, int64_t size, int64_t chunk,
                               double* partials) {
  const int64_t j = blockIdx.x, c = blockIdx.y;
  const uint8_t *a, *b;
  pair_of(frames, previous, j, size, &a, &b);
  const int64_t begin = c * chunk, end = begin + chunk < size ? begin + chunk : size;
  unsigned long long sum = 0;
  int64_t e = begin;
  if (((reinterpret_cast<uintptr_t>(a + begin) | reinterpret_cast<uintptr_t>(b + begin)) & 15u) == 0) {
    const int64_t vectors = (end - begin) / 16;
    const uint4* va = reinterpret_cast<const uint4*>(a + begin);
    const uint4* vb = reinterpret_cast<const uint4*>(b + begin);
    for (int64_t v = threadIdx.x; v < vectors; v += kThreads) {
      const uint4 x = __ldg(va + v), y = __ldg(vb + v);
      sum += sq_diff_u8x4(x.x, y.x) + sq_diff_u8x4(x.y, y.y) + sq_diff_u8x4(x.z, y.z) + sq_diff_u8x4(x.w, y.w);
    }
    e = begin + vectors * 16;
  }
  for (int64_t k = e + threadIdx.x; k < end; k += kThreads) {
    const int d = int(b[k]) - int(a[k]);
    sum += unsigned(d * d);
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partials[j * gridDim.y + c] = double(sum);  // exact: sums stay far below 2^53
}

__global__ void acd_partial_f32(const float* frames, const float* previous, int64_t size, int64_t chunk,
                                double* partials) {
  const int64_t j = blockIdx.x, c = blockIdx.y;
  const float *a, *b;
  pair_of(frames, previous, j, size, &a, &b);
  const int64_t begin = c * chunk, end = begin + chunk < size ? begin + chunk : size;
  double sum = 0.0;
  int64_t e = begin;
  if (((reinterpret_cast<uintptr_t>(a + begin) | reinterpret_cast<uintptr_t>(b + begin)) & 15u) == 0) {
    const int64_t vectors = (end - begin) / 4;
    const float4* va = reinterpret_cast<const float4*>(a + begin);
    const float4* vb = reinterpret_cast<const float4*>(b + begin);
    for (int64_t v = threadIdx.x; v < vectors; v += kThreads) {
      const float4 x = __ldg(va + v), y = __ldg(vb + v);
      const double d0 = double(y.x) - double(x.x), d1 = double(y.y) - double(x.y);
      const double d2 = double(y.z) - double(x.z), d3 = double(y.w) - double(x.w);
      sum += d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3;
    }
    e = begin + vectors * 4;
  }
  for (int64_t k = e + threadIdx.x; k < end; k += kThreads) {
    const double d = double(b[k]) - double(a[k]);
    sum += d * d;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partials[j * gridDim.y + c] = sum;
}

__global__ void acd_finish(const double* partials, int64_t pairs, int64_t chunks, double* out) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= pairs) return;
  double s = 0.0;
  for (int64_t c = 0; c < chunks; ++c) s += partials[j * chunks + c];
  out[j] = sqrt(s);
}

}  // namespace

cudaError_t acd_cuda(const void* frames, const void* previous, bool u8, int64_t n, int64_t size, double* out,
                     double* partials, cudaStream_t stream) {
  const int64_t pairs = previous ? n : n - 1;
  if (pairs <= 0) return cudaSuccess;
  if (pairs > 2147483647LL) return cudaErrorInvalidValue;
  const int64_t chunk = acd_chunk(u8), chunks = acd_chunks(u8, size);
  if (chunks > 65535) return cudaErrorInvalidValue;  // frames of more than 4 G values
  const dim3 grid{static_cast<unsigned>(pairs), static_cast<unsigned>(chunks), 1};
  if (u8) {
    acd_partial_u8<<<grid, kThreads, 0, stream>>>(static_cast<const uint8_t*>(frames),
                                                  static_cast<const uint8_t*>(previous), size, chunk, partials);
  } else {
    acd_partial_f32<<<grid, kThreads, 0, stream>>>(static_cast<const float*>(frames),
                                                   static_cast<const float*>(previous), size, chunk, partials);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  acd_finish<<<unsigned((pairs + 127) / 128), 128, 0, stream>>>(partials, pairs, chunks, out);
  return cudaGetLastError();
}

}  // namespace sm
