// CUDA fill of Philox normals; the math is drb::philox::normal_at, shared with the CPU path.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "derrumbe/core/philox.hpp"

namespace drb::detail {

template <typename T>
__global__ void philox_normal_kernel(T* out, int64_t n, int64_t per_item, uint64_t seed, uint32_t stream,
                                     int64_t first_item, int64_t first_index) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t item = i / per_item;
    const int64_t e = i - item * per_item;
    out[i] = static_cast<T>(philox::normal_at(seed, stream, static_cast<uint32_t>(first_item + item),
                                              static_cast<uint64_t>(first_index + e)));
  }
}

void philox_normal_cuda(void* out, bool is_double, int64_t items, int64_t per_item, uint64_t seed,
                        uint32_t stream, int64_t first_item, int64_t first_index) {
  const int64_t n = items * per_item;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 65535));
  if (is_double)
    philox_normal_kernel<<<blocks, threads>>>(static_cast<double*>(out), n, per_item, seed, stream, first_item,
                                              first_index);
  else
    philox_normal_kernel<<<blocks, threads>>>(static_cast<float*>(out), n, per_item, seed, stream, first_item,
                                              first_index);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("philox_normal_cuda: ") + cudaGetErrorString(err));
}

}  // namespace drb::detail
