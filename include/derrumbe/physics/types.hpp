// Plain value types shared by the physics and render modules. Torch-free (Eigen, xtensor).
//
// Conventions: SI units (metres, kilograms, seconds); right-handed, Y up (as glTF), the ground
// is the plane y = 0. A pose maps a piece's local coordinates to the world:
// world = rotation * local + translation.
#pragma once
#include <Eigen/Core>
#include <Eigen/Geometry>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "derrumbe/core/error.hpp"

namespace drb::physics {

using Vec2 = Eigen::Vector2d;
using Vec3 = Eigen::Vector3d;
using Quat = Eigen::Quaterniond;

struct Material {
  std::string name = "concrete";
  std::string look = "concrete";  // proxy shading: concrete, brick, glass, steel
  double density = 2400.0;        // kg/m^3
  double friction = 0.7;
  double restitution = 0.1;
  double bond_strength = 3.0e6;   // N per m^2 of bonded contact area
};

struct CameraKey {
  double time = 0.0;  // seconds
  Vec3 position{0.0, 1.7, 30.0};
  Vec3 target{0.0, 10.0, 0.0};
  Vec3 up{0.0, 1.0, 0.0};
  double focal_length_mm = 35.0;
  double sensor_width_mm = 36.0;
  double sensor_height_mm = 20.25;
};

// A camera with one or more keys; between keys the renderer interpolates smoothly.
struct Camera {
  std::string name = "main";
  std::vector<CameraKey> keys;
};

// A triangle mesh in a piece's local frame (origin at its centre of mass).
struct Mesh {
  std::vector<Eigen::Vector3f> vertices;
  std::vector<std::array<uint32_t, 3>> triangles;  // counter-clockwise seen from outside
};

}  // namespace drb::physics
