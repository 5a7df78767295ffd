// Fracture and rigid-body simulation on Bullet.
#pragma once
#include <functional>

#include "derrumbe/physics/scene.hpp"
#include "derrumbe/physics/track.hpp"

namespace drb::physics {

// piece_b of a bond that holds a piece to the ground.
inline constexpr uint32_t kGroundPiece = 0xFFFFFFFFu;

// A bond between two adjacent pieces: a breakable constraint whose strength follows the
// material and the contact area.
struct Bond {
  uint32_t piece_a = 0, piece_b = 0;
  Vec3 position{0, 0, 0};  // world position of the joint at rest
  double area = 0.0;       // m^2 of contact
  double strength = 0.0;   // N, the force above which it breaks
};

struct Fractured {
  std::vector<Piece> pieces;
  std::vector<Eigen::Isometry3d> rest_poses;  // piece -> world at frame 0
  std::vector<Bond> bonds;
};

// Splits every building of the scene into columns, slab and wall chunks (seeded Voronoi cells
// of each panel, convex), with masses and inertias, and the bonds between adjacent pieces.
DRB_EXPORT Fractured fracture(const Scene& scene);

// Progress: called once per simulated frame with (frame, num_frames); return true to cancel
// (simulate then throws Error(cancelled)).
using SimProgress = std::function<bool(int64_t frame, int64_t num_frames)>;

// Fractures and simulates the scene. Deterministic: the same scene gives bitwise identical
// tracks, run after run.
DRB_EXPORT SimTrack simulate(const Scene& scene, const SimProgress& progress = {});

}  // namespace drb::physics
