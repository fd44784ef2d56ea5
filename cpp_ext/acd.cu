// acd on CUDA: one block per consecutive pair, the squared differences summed in float64 in shared memory.
#include "ops.h"

namespace sm {

template <typename T>
__global__ void acd_kernel(const T* frames, const T* previous, int64_t pairs, int64_t size, double* out) {
  __shared__ double partial[256];
  const int64_t j = blockIdx.x;
  if (j >= pairs) return;
  const T* a = previous ? (j == 0 ? previous : frames + (j - 1) * size) : frames + j * size;
  const T* b = previous ? frames + j * size : frames + (j + 1) * size;
  double sum = 0.0;
  for (int64_t e = threadIdx.x; e < size; e += blockDim.x) {
    const double d = double(b[e]) - double(a[e]);
    sum += d * d;
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[j] = sqrt(partial[0]);
}

cudaError_t acd_cuda(const void* frames, const void* previous, bool u8, int64_t n, int64_t size, double* out,
                     cudaStream_t stream) {
  const int64_t pairs = previous ? n : n - 1;
  if (pairs <= 0) return cudaSuccess;
  if (u8) {
    acd_kernel<<<unsigned(pairs), 256, 0, stream>>>(static_cast<const uint8_t*>(frames),
                                                   static_cast<const uint8_t*>(previous), pairs, size, out);
  } else {
    acd_kernel<<<unsigned(pairs), 256, 0, stream>>>(static_cast<const float*>(frames),
                                                   static_cast<const float*>(previous), pairs, size, out);
  }
  return cudaGetLastError();
}

}  // namespace sm
