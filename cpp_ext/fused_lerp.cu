// fused_lerp on CUDA: one thread per output element; the math is ops.h's (the CPU kernels run the same code).
#include "ops.h"

namespace sm {

__global__ void fused_lerp_kernel(LerpArgs args, void* out, bool out_half) {
  const int64_t total = args.n * args.s;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < total; j += int64_t(gridDim.x) * blockDim.x) {
    const float x = lerp_element(args, j / args.s, j % args.s);
    if (out_half) {
      static_cast<uint16_t*>(out)[j] = float_to_half(x);
    } else {
      static_cast<float*>(out)[j] = x;
    }
  }
}

cudaError_t fused_lerp_cuda(const LerpArgs& args, void* out, bool out_half, cudaStream_t stream) {
  const int64_t total = args.n * args.s;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  fused_lerp_kernel<<<unsigned(blocks < 65535 ? blocks : 65535), threads, 0, stream>>>(args, out, out_half);
  return cudaGetLastError();
}

}  // namespace sm
