// SimTrack: the result of a simulation (or an imported DCC animation), the input of the
// renderer and of guidance. Pure values, no LibTorch.
#pragma once
#include <xtensor/xtensor.hpp>

#include "derrumbe/physics/types.hpp"

namespace drb::physics {

enum class PieceKind : uint8_t { column = 0, slab = 1, wall = 2, debris = 3 };
DRB_EXPORT const char* piece_kind_name(PieceKind kind) noexcept;
// A piece's name where DCCs and compositors see it (glTF nodes, Cryptomatte): "piece_00042".
DRB_EXPORT std::string piece_name(uint32_t id);

struct Piece {
  uint32_t id = 0;
  PieceKind kind = PieceKind::debris;
  int32_t building = -1;  // index into the scene's buildings, -1 when imported
  uint32_t material = 0;  // index into SimTrack::materials
  Mesh mesh;              // local frame, centred at the centre of mass
  double mass = 0.0;      // kg
  Vec3 inertia{0, 0, 0};  // principal moments in the local frame, kg m^2
};

struct BreakEvent {
  int32_t frame = 0;  // first frame at which the bond is gone
  uint32_t piece_a = 0, piece_b = 0;
  Eigen::Vector3f position{0, 0, 0};  // world position of the bond
  float energy = 0.0f;                // J, estimated from the impulse at break
};

struct SimTrack {
  double fps = 24.0;
  std::vector<Material> materials;
  std::vector<Piece> pieces;
  // poses(f, p, :) = (qx, qy, qz, qw, tx, ty, tz): piece p's pose at frame f.
  xt::xtensor<float, 3> poses = xt::xtensor<float, 3>::from_shape({0, 0, 7});
  std::vector<BreakEvent> breaks;
  // dust[f] is [N_f, 5]: x, y, z, radius, opacity of each particle alive at frame f.
  std::vector<xt::xtensor<float, 2>> dust;
  std::vector<Camera> cameras;

  int64_t num_frames() const { return static_cast<int64_t>(poses.shape(0)); }
  int64_t num_pieces() const { return static_cast<int64_t>(pieces.size()); }
  // Piece p's pose at frame f as an isometry.
  DRB_EXPORT Eigen::Isometry3d pose(int64_t frame, int64_t piece) const;
  // Throws Error(invalid_argument) naming the first inconsistency (shapes, NaN, bad indices).
  DRB_EXPORT void validate() const;
};

}  // namespace drb::physics
