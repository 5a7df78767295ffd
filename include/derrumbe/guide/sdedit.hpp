// SDEdit (Meng et al., ICLR 2022) from the proxy render: start sampling part-way from an
// encoded image or video instead of pure noise, so the result keeps its layout and motion.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>

#include "derrumbe/core/error.hpp"

namespace drb::guide {

struct SDEditStart {
  at::Tensor x;       // encoded + sigmas[0] * noise (VE form; for rectified flow this is
                      // x_t = (1 - t) encoded + t noise scaled by 1 / (1 - t))
  at::Tensor sigmas;  // the tail of the schedule to run (schedules::split_for_strength)
};

// strength in [0, 1] is the fraction of the schedule that runs (strength 0: x = encoded and
// nothing to run; 1: the whole schedule from noise). noise has encoded's shape (warped noise
// or fresh N(0, 1) noise).
DRB_EXPORT SDEditStart sdedit_start(const at::Tensor& encoded, const at::Tensor& noise, const at::Tensor& sigmas,
                                    double strength);

// The same from frames and the model's encoder (frames -> latents, for example a VAE).
using Encoder = std::function<at::Tensor(const at::Tensor& frames)>;
DRB_EXPORT SDEditStart sdedit_start(const Encoder& encoder, const at::Tensor& frames, const at::Tensor& noise,
                                    const at::Tensor& sigmas, double strength);

}  // namespace drb::guide
