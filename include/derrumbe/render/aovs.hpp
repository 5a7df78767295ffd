// The conditioning images (AOVs) of one frame, rendered from a SimTrack and a camera.
// Torch-free (xtensor); aovs_to_tensor in tensor.hpp is where torch enters.
#pragma once
#include <xtensor/xtensor.hpp>

#include <string>
#include <vector>

#include "derrumbe/physics/track.hpp"
#include "derrumbe/render/camera.hpp"

namespace drb::render {

struct AOVs {
  int width = 0, height = 0;
  xt::xtensor<float, 2> depth;          // [H, W] linear depth (camera z), +inf where empty
  xt::xtensor<int32_t, 2> piece_id;     // [H, W] piece index, -1 where empty
  xt::xtensor<float, 3> normal;         // [H, W, 3] world-space unit normal, 0 where empty
  xt::xtensor<float, 2> alpha;          // [H, W] coverage in [0, 1] (fractional with supersampling)
  xt::xtensor<float, 3> rgb;            // [H, W, 3] proxy shading, linear
  xt::xtensor<float, 2> dust;           // [H, W] dust opacity in [0, 1], depth-tested
  xt::xtensor<float, 3> flow_forward;   // [H, W, 2] (du, dv) pixels to the next frame, 0 where empty
  xt::xtensor<float, 3> flow_backward;  // [H, W, 2] (du, dv) pixels to the previous frame
  xt::xtensor<float, 2> occlusion;      // [H, W] 1 where the forward motion is occluded or leaves the frame

  // A frame of the given size showing nothing: depth +inf, ids -1, everything else 0.
  DRB_EXPORT static AOVs blank(int width, int height);
};

struct RenderOptions {
  int width = 832, height = 480;
  int supersample = 1;       // samples per pixel side (1 to 8)
  int threads = 0;           // 0: all hardware threads
  bool dust = true;
  double occlusion_depth_tolerance = 0.02;  // relative depth difference that counts as occluded
};

// Renders frame `frame` of the track seen by `camera` (interpolated at frame / fps). Flow to
// the previous/next frame is exact: each pixel's surface point is moved by its piece's rigid
// transforms and projected with that frame's camera. At the first/last frame the missing
// direction is 0.
DRB_EXPORT AOVs render_frame(const physics::SimTrack& track, const physics::Camera& camera, int64_t frame,
                             const RenderOptions& options = {});

// Renders frames [first, last) and fills occlusion from the neighbouring frames' depth and ids.
DRB_EXPORT std::vector<AOVs> render_sequence(const physics::SimTrack& track, const physics::Camera& camera,
                                             int64_t first, int64_t last, const RenderOptions& options = {});

// AOV names as channels: Z, id, N.x N.y N.z, A, R G B, dust, forward.u forward.v,
// backward.u backward.v, occlusion.
DRB_EXPORT std::vector<std::string> aov_channel_names();

}  // namespace drb::render
