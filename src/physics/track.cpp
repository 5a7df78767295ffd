#include "derrumbe/physics/track.hpp"

#include <cmath>
#include <cstdio>

namespace drb::physics {

const char* piece_kind_name(PieceKind kind) noexcept {
  switch (kind) {
    case PieceKind::column: return "column";
    case PieceKind::slab: return "slab";
    case PieceKind::wall: return "wall";
    case PieceKind::debris: return "debris";
  }
  return "unknown";
}

std::string piece_name(uint32_t id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "piece_%05u", id);
  return buf;
}

Eigen::Isometry3d SimTrack::pose(int64_t frame, int64_t piece) const {
  check_arg(frame >= 0 && frame < num_frames(), "SimTrack::pose: frame " + std::to_string(frame) + " outside [0, " +
                                                    std::to_string(num_frames()) + ")");
  check_arg(piece >= 0 && piece < num_pieces(), "SimTrack::pose: piece " + std::to_string(piece) + " outside [0, " +
                                                    std::to_string(num_pieces()) + ")");
  const auto f = static_cast<size_t>(frame), p = static_cast<size_t>(piece);
  const Quat q(poses(f, p, 3), poses(f, p, 0), poses(f, p, 1), poses(f, p, 2));  // w, x, y, z
  Eigen::Isometry3d iso = Eigen::Isometry3d::Identity();
  iso.linear() = q.normalized().toRotationMatrix();
  iso.translation() = Vec3(poses(f, p, 4), poses(f, p, 5), poses(f, p, 6));
  return iso;
}

void SimTrack::validate() const {
  check_arg(std::isfinite(fps) && fps > 0 && fps <= 1000, "SimTrack: fps must be in (0, 1000], got " + std::to_string(fps));
  check_arg(poses.dimension() == 3 && poses.shape(2) == 7, "SimTrack: poses must be [frames, pieces, 7]");
  check_arg(poses.shape(1) == pieces.size(), "SimTrack: poses hold " + std::to_string(poses.shape(1)) +
                                                 " pieces but the track has " + std::to_string(pieces.size()));
  for (size_t i = 0; i < poses.size(); ++i)
    check_arg(std::isfinite(poses.data()[i]), "SimTrack: pose values must be finite (NaN or inf at flat index " +
                                                  std::to_string(i) + ")");
  for (size_t p = 0; p < pieces.size(); ++p) {
    const Piece& piece = pieces[p];
    const std::string where = "SimTrack: piece " + std::to_string(p);
    check_arg(piece.material < materials.size() || (materials.empty() && piece.material == 0),
              where + " has material " + std::to_string(piece.material) + " of " + std::to_string(materials.size()));
    for (const auto& t : piece.mesh.triangles)
      for (uint32_t v : t)
        check_arg(v < piece.mesh.vertices.size(), where + " has a triangle index out of range");
    for (const auto& v : piece.mesh.vertices) check_arg(v.allFinite(), where + " has a non-finite vertex");
    check_arg(std::isfinite(piece.mass) && piece.mass >= 0, where + " has an invalid mass");
  }
  for (const auto& b : breaks)
    check_arg(b.frame >= 0 && b.frame < num_frames() + 1 && b.piece_a < pieces.size() && b.piece_b < pieces.size(),
              "SimTrack: break event refers to a frame or piece out of range");
  check_arg(dust.empty() || dust.size() == poses.shape(0), "SimTrack: dust must be empty or hold one array per frame");
  for (const auto& d : dust) check_arg(d.dimension() == 2 && d.shape(1) == 5, "SimTrack: dust arrays must be [N, 5]");
}

}  // namespace drb::physics
