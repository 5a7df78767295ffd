// Seeded Gaussian noise addressed by (seed, stream, batch item, element).
//
// Addressing: for a tensor [B, C, F, H, W] (the video layout) the element (b, c, f, h, w)
// has item = batch_offset + b and index = (frame_offset + f) * C*H*W + c*H*W + h*W + w, so
// frame f's noise is the same whatever the number of frames, and item b of a batch equals
// item 0 of a batch started at batch_offset = b. Other ranks use the row-major index of
// the element within its batch item. Values are computed in float64 and then cast.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include <cstdint>

#include "derrumbe/core/error.hpp"

namespace drb {

struct NoiseAddress {
  uint64_t seed = 0;
  uint32_t stream = 0;        // independent sequences for the same seed (sampler steps use it)
  int64_t batch_offset = 0;   // index of this tensor's first batch item in the whole batch
  int64_t frame_offset = 0;   // index of this tensor's first frame in the whole shot (5-D only)
};

// N(0, 1) noise of `shape` (at least 1-D; dim 0 is the batch) on `options`' device and dtype
// (float32 or float64; float16/bfloat16 are cast from float32).
DRB_EXPORT at::Tensor randn(at::IntArrayRef shape, const NoiseAddress& address,
                            const at::TensorOptions& options);

}  // namespace drb
