// Pinhole camera in film terms. Changing the angle is a camera edit, not a re-simulation.
//
// Conventions: world Y up (as the physics); camera coordinates x right, y down, z forward
// (OpenCV), pixel centres at integer + 0.5, pixel (u, v) = (fx X / Z + cx, fy Y / Z + cy).
#pragma once
#include "derrumbe/physics/types.hpp"

namespace drb::render {

using physics::Vec3;

// The camera at one instant: a key of the camera path (camera_at sets its time).
using CameraState = physics::CameraKey;

// Interpolates a keyframed camera at `time`: position and target along centripetal
// Catmull-Rom splines through the keys (smooth, passing through every key), up and lens
// linearly; clamped before the first and after the last key. Throws on an empty camera.
DRB_EXPORT CameraState camera_at(const physics::Camera& camera, double time);

struct View {
  int width = 832, height = 480;
  Eigen::Matrix3d rotation = Eigen::Matrix3d::Identity();  // world -> camera
  Vec3 translation{0, 0, 0};                                // world -> camera
  double fx = 1, fy = 1, cx = 0, cy = 0;                    // pixels
  Vec3 position{0, 0, 0};                                   // camera centre in the world

  Vec3 to_camera(const Vec3& world) const { return rotation * world + translation; }
};

// The view of a camera state at a resolution. The sensor is fitted to the image: fx from the
// sensor width, fy = fx (square pixels), centred principal point. Errors (invalid_argument)
// for a resolution outside [1, 16384], a target equal to the position, an up parallel to the
// view direction, or a non-positive focal length or sensor size.
DRB_EXPORT View make_view(const CameraState& camera, int width, int height);

}  // namespace drb::render
