// The one place where torch meets the renderer: AOVs as a tensor [F, C, H, W].
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "derrumbe/render/aovs.hpp"

namespace drb::render {

// Stacks the named channels (from aov_channel_names()) of each frame into a float32 tensor
// [F, C, H, W], resized to (height, width) when they differ from the render (area
// interpolation for images, nearest for id and occlusion; flow vectors are scaled with the
// resize). Unknown channel names are errors listing the known ones.
DRB_EXPORT at::Tensor aovs_to_tensor(const std::vector<AOVs>& frames, const std::vector<std::string>& channels,
                                     int height = 0, int width = 0);

}  // namespace drb::render
