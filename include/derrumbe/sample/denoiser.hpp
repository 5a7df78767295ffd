// The one model interface the samplers call: D(x, sigma) -> x0 in the variance-exploding
// form x = x0 + sigma * noise. Every model family maps onto it (parameterization.hpp).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "derrumbe/core/error.hpp"

namespace drb {

class DRB_EXPORT Denoiser {
 public:
  virtual ~Denoiser();
  // The denoised estimate E[x0 | x] at noise level sigma (a host double, the same for every
  // batch item: keeping per-step scalars on the host avoids a device sync per step).
  // Must return a tensor of x's shape, dtype and device.
  virtual at::Tensor denoise(const at::Tensor& x, double sigma) = 0;
  // Called by the sampler loop before each step's first evaluation: guidance uses it for
  // step-dependent state (scale schedules, momentum). Default: nothing.
  virtual void begin_step(int64_t step, int64_t num_steps, double sigma);
};

}  // namespace drb
