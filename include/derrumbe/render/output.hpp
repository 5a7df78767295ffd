// Writing AOVs where compositors and people look at them: multi-channel OpenEXR (Nuke opens
// it), PNG previews, and optical flow as a colour-wheel image.
#pragma once
#include <string>
#include <vector>

#include "derrumbe/render/aovs.hpp"

namespace drb::render {

// One EXR file with named float channels: Z, id (as float), N.x, N.y, N.z, A, R, G, B, dust,
// forward.u, forward.v, backward.u, backward.v, occlusion. Uncompressed or ZIP.
DRB_EXPORT void write_exr(const AOVs& aovs, const std::string& path, bool compress = true);
// Reads an EXR written by write_exr (or any EXR with those channels) back into AOVs.
DRB_EXPORT AOVs read_exr(const std::string& path);
// Writes frames as path_pattern with one %04d for the frame number (e.g. "out/aov.%04d.exr").
DRB_EXPORT void write_exr_sequence(const std::vector<AOVs>& frames, const std::string& path_pattern, int first_frame = 0);

// 8-bit PNG previews: "rgb" (proxy shading, sRGB encoded), "depth" (normalized), "id" (hashed
// colours), "normal", "flow" (colour wheel), "occlusion", "dust".
DRB_EXPORT void write_png(const AOVs& aovs, const std::string& what, const std::string& path);
// Flow as an RGB image: hue = direction, saturation = magnitude / max_magnitude (0: the frame's max).
DRB_EXPORT xt::xtensor<uint8_t, 3> flow_to_color(const xt::xtensor<float, 3>& flow, double max_magnitude = 0);

}  // namespace drb::render
