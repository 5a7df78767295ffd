// CUDA kernels of the noise warp: each runs one per-pixel function of noise_warp_steps.hpp
// (the math the CPU tests check) over all indices. No ATen here.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "noise_warp_steps.hpp"

namespace drb::guide::detail {

namespace {

constexpr int kThreads = 256;

__global__ void warp_pass_kernel(WarpPass pass, WarpFrame f, WarpBuffers b, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  switch (pass) {
    case WarpPass::push: push_pass(f, b, i); break;
    case WarpPass::pull: pull_pass(f, b, i); break;
    case WarpPass::copies: copies_pass(f, b, i); break;
    case WarpPass::targets: targets_pass(f, b, i); break;
  }
}

__global__ void read_out_kernel(WarpFrame f, const float* z, const float* w, int64_t factor, int64_t latent_w,
                                int64_t plane, float degradation, float* out) {
  const int64_t l = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (l < plane) read_out_pass(f, z, w, factor, latent_w, plane, degradation, out, l);
}

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("noise warp: ") + what + ": " + cudaGetErrorString(e));
}

unsigned blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

// On the default stream; the tensor operations between the passes order after them there.
void launch_warp_pass_cuda(WarpPass pass, const WarpFrame& f, const WarpBuffers& b, int64_t n) {
  if (n == 0) return;
  warp_pass_kernel<<<blocks(n), kThreads>>>(pass, f, b, n);
  check_launch("warp pass kernel");
}

void launch_read_out_cuda(const WarpFrame& f, const float* z, const float* w, int64_t factor, int64_t latent_w,
                          int64_t plane, float degradation, float* out) {
  read_out_kernel<<<blocks(plane), kThreads>>>(f, z, w, factor, latent_w, plane, degradation, out);
  check_launch("read-out kernel");
}

}  // namespace drb::guide::detail
