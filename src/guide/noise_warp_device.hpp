// The noise warp on tensors of any device: the passes of noise_warp_steps.hpp run as CUDA
// kernels for CUDA tensors and as plain loops on the CPU (where tests compare them with the
// optimized CPU warper), the grouping between them as tensor operations (a stable sort).
#pragma once
#include <ATen/ATen.h>

#include "derrumbe/guide/noise_warp.hpp"
#include "noise_warp_steps.hpp"

namespace drb::guide::detail {

class DRB_EXPORT TensorWarper {
 public:
  // The options and sizes as NoiseWarper has checked them.
  TensorWarper(int64_t latent_height, int64_t latent_width, const NoiseWarpOptions& options, c10::Device device);
  void step(const at::Tensor& forward, const at::Tensor& backward);
  at::Tensor latent() const;      // [C, h, w] float32 on the device
  at::Tensor grid_noise() const;  // [C, H, W]
  int64_t frame() const { return frame_; }

 private:
  NoiseWarpOptions opt_;
  int64_t latent_h_, latent_w_, height_, width_, frame_ = 0;
  c10::Device device_;
  at::Tensor z_, w_, d_;
};

}  // namespace drb::guide::detail
