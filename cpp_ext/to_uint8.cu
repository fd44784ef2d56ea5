// to_uint8 on CUDA: [N, C, H, W] float32 or float16 -> [N, H, W, C] uint8, one thread per pixel (all C channels).
#include <cuda_fp16.h>

#include "ops.h"

namespace sm {

template <typename T>
__device__ __forceinline__ float load_float(const T* p, int64_t j);
template <>
__device__ __forceinline__ float load_float<float>(const float* p, int64_t j) { return p[j]; }
template <>
__device__ __forceinline__ float load_float<__half>(const __half* p, int64_t j) { return __half2float(p[j]); }

template <typename T>
__global__ void to_uint8_kernel(const T* images, int64_t n, int64_t c, int64_t plane, uint8_t* out) {
  const int64_t total = n * plane;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < total; j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = j / plane, p = j % plane;
    for (int64_t ch = 0; ch < c; ++ch) out[j * c + ch] = to_u8(load_float(images, (i * c + ch) * plane + p));
  }
}

cudaError_t to_uint8_cuda(const void* images, bool half, int64_t n, int64_t c, int64_t h, int64_t w, uint8_t* out,
                          cudaStream_t stream) {
  const int64_t plane = h * w, total = n * plane;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  const unsigned grid = unsigned(blocks < 65535 ? blocks : 65535);
  if (half) {
    to_uint8_kernel<<<grid, threads, 0, stream>>>(static_cast<const __half*>(images), n, c, plane, out);
  } else {
    to_uint8_kernel<<<grid, threads, 0, stream>>>(static_cast<const float*>(images), n, c, plane, out);
  }
  return cudaGetLastError();
}

}  // namespace sm
