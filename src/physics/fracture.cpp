// Fracture: each building becomes columns, slab chunks and wall chunks (convex prisms), and
// the bonds between pieces that touch face to face.
#include <Eigen/Eigenvalues>

#include <algorithm>
#include <cmath>

#include "derrumbe/physics/simulate.hpp"
#include "geometry.hpp"

namespace drb::physics {

namespace {

using detail::Poly2;
using detail::Prism;

constexpr double kTouch = 1e-6;      // m: faces closer than this touch
constexpr double kMinBondArea = 0.01;  // m^2: smaller contacts (corner slivers) are not bonded

struct Part {
  Prism prism;
  PieceKind kind;
  int building;
};

// The building's parts in its own frame (origin at the footprint centre on the ground).
void building_parts(const Scene& scene, int b, std::vector<Part>& parts) {
  const Building& B = scene.buildings[static_cast<size_t>(b)];
  const double W = B.footprint.x(), D = B.footprint.y();
  const int bx = B.bays[0], bz = B.bays[1];
  const double fh = B.floor_height, st = B.slab_thickness, cs = B.column_size, wt = B.wall_thickness;
  const uint64_t seed = detail::hash64(scene.seed ^ detail::hash64(static_cast<uint64_t>(b) + 1));
  auto xs = [&](int i) { return -W / 2 + W * i / bx; };
  auto zs = [&](int j) { return -D / 2 + D * j / bz; };
  uint64_t panel = 0;
  auto split = [&](const Poly2& region, int count, int u, int v, int w, double w0, double w1, PieceKind kind) {
    for (auto& cell : detail::voronoi_cells(region, count, detail::hash64(seed + ++panel)))
      parts.push_back({Prism{cell, u, v, w, w0, w1}, kind, b});
  };
  // A wall panel spanning [s0, s1] along its run and [y0, y1] in height, with a window.
  auto wall = [&](double s0, double s1, double y0, double y1, int u, int w, double wc) {
    const int n = B.chunks_per_panel;
    const Windows& win = B.windows;
    const double mid = 0.5 * (s0 + s1);
    if (!win.enabled) {
      split(detail::rectangle(s0, y0, s1, y1), n, u, 1, w, wc - wt / 2, wc + wt / 2, PieceKind::wall);
      return;
    }
    const double wy0 = y0 + win.sill, wy1 = wy0 + win.height;
    const int strip = std::max(1, n / 2);
    split(detail::rectangle(s0, y0, s1, wy0), strip, u, 1, w, wc - wt / 2, wc + wt / 2, PieceKind::wall);
    if (y1 - wy1 > 1e-3) split(detail::rectangle(s0, wy1, s1, y1), strip, u, 1, w, wc - wt / 2, wc + wt / 2, PieceKind::wall);
    split(detail::rectangle(s0, wy0, mid - win.width / 2, wy1), 1, u, 1, w, wc - wt / 2, wc + wt / 2, PieceKind::wall);
    split(detail::rectangle(mid + win.width / 2, wy0, s1, wy1), 1, u, 1, w, wc - wt / 2, wc + wt / 2, PieceKind::wall);
  };
  for (int k = 0; k < B.floors; ++k) {
    const double y0 = k * fh, y1 = y0 + fh - st;
    for (int i = 0; i <= bx; ++i)
      for (int j = 0; j <= bz; ++j)
        parts.push_back({Prism{detail::rectangle(xs(i) - cs / 2, zs(j) - cs / 2, xs(i) + cs / 2, zs(j) + cs / 2), 0, 2, 1,
                               y0, y1},
                         PieceKind::column, b});
    for (int i = 0; i < bx; ++i)
      for (int j = 0; j < bz; ++j) {
        // Bays on the perimeter extend by half a column so the slab covers the columns.
        const double x0 = xs(i) - (i == 0 ? cs / 2 : 0), x1 = xs(i + 1) + (i == bx - 1 ? cs / 2 : 0);
        const double z0 = zs(j) - (j == 0 ? cs / 2 : 0), z1 = zs(j + 1) + (j == bz - 1 ? cs / 2 : 0);
        split(detail::rectangle(x0, z0, x1, z1), B.chunks_per_panel, 0, 2, 1, y1, y1 + st, PieceKind::slab);
      }
    for (int i = 0; i < bx; ++i)
      for (double z : {-D / 2, D / 2}) wall(xs(i) + cs / 2, xs(i + 1) - cs / 2, y0, y1, 0, 2, z);
    for (int j = 0; j < bz; ++j)
      for (double x : {-W / 2, W / 2}) wall(zs(j) + cs / 2, zs(j + 1) - cs / 2, y0, y1, 2, 0, x);
  }
}

// Length of the overlap of collinear, opposite edges of two polygons (their shared boundary).
double shared_edge(const Poly2& a, const Poly2& b, Eigen::Vector2d& mid) {
  double best = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const Eigen::Vector2d p = a[i], q = a[(i + 1) % a.size()];
    const Eigen::Vector2d d = q - p;
    const double len = d.norm();
    if (len < 1e-12) continue;
    const Eigen::Vector2d t = d / len, n(-t.y(), t.x());
    for (size_t j = 0; j < b.size(); ++j) {
      const Eigen::Vector2d r = b[j], s = b[(j + 1) % b.size()];
      if (std::abs(n.dot(r - p)) > kTouch || std::abs(n.dot(s - p)) > kTouch) continue;
      const double lo = std::max(0.0, std::min(t.dot(r - p), t.dot(s - p)));
      const double hi = std::min(len, std::max(t.dot(r - p), t.dot(s - p)));
      if (hi - lo > best) {
        best = hi - lo;
        mid = p + t * (0.5 * (lo + hi));
      }
    }
  }
  return best;
}

// Contact face of two prisms: returns its area and centre (building frame), 0 if they do not
// touch over a face.
double contact(const Prism& A, const Prism& B, const Eigen::AlignedBox3d& ba, const Eigen::AlignedBox3d& bb,
               Eigen::Vector3d& centre) {
  if (A.u == B.u && A.v == B.v && A.w == B.w && std::abs(A.w0 - B.w0) < kTouch && std::abs(A.w1 - B.w1) < kTouch) {
    Eigen::Vector2d mid;
    const double len = shared_edge(A.poly, B.poly, mid);
    centre[A.u] = mid.x();
    centre[A.v] = mid.y();
    centre[A.w] = 0.5 * (A.w0 + A.w1);
    if (len > 0) return len * (A.w1 - A.w0);
  }
  const auto va = A.vertices(), vb = B.vertices();
  for (int n = 0; n < 3; ++n) {
    double plane;
    if (std::abs(ba.max()[n] - bb.min()[n]) < kTouch) plane = ba.max()[n];
    else if (std::abs(bb.max()[n] - ba.min()[n]) < kTouch) plane = bb.max()[n];
    else continue;
    const int u = (n + 1) % 3, v = (n + 2) % 3;
    auto face = [&](const std::vector<Eigen::Vector3d>& vs) {
      std::vector<Eigen::Vector2d> pts;
      for (const auto& p : vs)
        if (std::abs(p[n] - plane) < kTouch) pts.emplace_back(p[u], p[v]);
      return detail::convex_hull(pts);
    };
    const Poly2 fa = face(va), fb = face(vb);
    if (fa.size() < 3 || fb.size() < 3) continue;
    const Poly2 overlap = detail::intersect(fa, fb);
    if (overlap.size() < 3) continue;
    const Eigen::Vector2d c = detail::centroid(overlap);
    centre[n] = plane;
    centre[u] = c.x();
    centre[v] = c.y();
    return std::abs(detail::area(overlap));
  }
  return 0;
}

Eigen::Isometry3d building_frame(const Building& B) {
  Eigen::Isometry3d iso = Eigen::Isometry3d::Identity();
  iso.translate(Vec3(B.position.x(), 0, B.position.y()));
  iso.rotate(Eigen::AngleAxisd(B.rotation_deg * M_PI / 180.0, Vec3::UnitY()));
  return iso;
}

}  // namespace

Fractured fracture(const Scene& scene) {
  validate(scene);
  std::vector<Part> parts;
  for (int b = 0; b < static_cast<int>(scene.buildings.size()); ++b) building_parts(scene, b, parts);
  check(static_cast<int64_t>(parts.size()) <= scene.limits.max_pieces, ErrorCode::invalid_argument,
        "the buildings fracture into " + std::to_string(parts.size()) + " pieces, above limits.max_pieces = " +
            std::to_string(scene.limits.max_pieces));

  Fractured out;
  std::vector<Eigen::AlignedBox3d> boxes;
  std::vector<Eigen::Isometry3d> frames;
  for (const auto& B : scene.buildings) frames.push_back(building_frame(B));
  for (size_t i = 0; i < parts.size(); ++i) {
    const Part& part = parts[i];
    const Building& B = scene.buildings[static_cast<size_t>(part.building)];
    const size_t material = scene.material_index(B.material);
    const Mesh prism_mesh = part.prism.mesh();
    const auto verts = part.prism.vertices();
    const auto mp = detail::mass_properties(verts, prism_mesh.triangles, scene.materials[material].density);
    // Local frame: the centre of mass and the principal axes (Bullet wants a diagonal inertia).
    Eigen::SelfAdjointEigenSolver<Eigen::Matrix3d> eig(mp.inertia);
    Eigen::Matrix3d R = eig.eigenvectors();
    if (R.determinant() < 0) R.col(2) = -R.col(2);
    Piece piece;
    piece.id = static_cast<uint32_t>(i);
    piece.kind = part.kind;
    piece.building = part.building;
    piece.material = static_cast<uint32_t>(material);
    piece.mass = mp.mass;
    piece.inertia = eig.eigenvalues();
    piece.mesh.triangles = prism_mesh.triangles;
    for (const auto& v : verts) piece.mesh.vertices.push_back((R.transpose() * (v - mp.com)).cast<float>());
    Eigen::Isometry3d local = Eigen::Isometry3d::Identity();
    local.translation() = mp.com;
    local.linear() = R;
    out.rest_poses.push_back(frames[static_cast<size_t>(part.building)] * local);
    out.pieces.push_back(std::move(piece));
    Eigen::AlignedBox3d box;
    for (const auto& v : verts) box.extend(v);
    boxes.push_back(box);
  }

  // Bonds: pairs of pieces of one building that touch over a face (sweep along x), and
  // pieces standing on the ground.
  const double weakening = 1.5 - scene.intensity;
  std::vector<size_t> order(parts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return boxes[a].min().x() < boxes[b].min().x() || (boxes[a].min().x() == boxes[b].min().x() && a < b);
  });
  auto strength_of = [&](size_t piece, double area) {
    return scene.materials[out.pieces[piece].material].bond_strength * area * weakening;
  };
  for (size_t oi = 0; oi < order.size(); ++oi) {
    const size_t a = order[oi];
    for (size_t oj = oi + 1; oj < order.size(); ++oj) {
      const size_t b = order[oj];
      if (boxes[b].min().x() > boxes[a].max().x() + kTouch) break;
      if (parts[a].building != parts[b].building) continue;
      Eigen::AlignedBox3d grown = boxes[a];
      grown.min().array() -= kTouch;
      grown.max().array() += kTouch;
      if (!grown.intersects(boxes[b])) continue;
      Eigen::Vector3d centre;
      const double area = contact(parts[a].prism, parts[b].prism, boxes[a], boxes[b], centre);
      if (area < kMinBondArea) continue;
      const size_t lo = std::min(a, b), hi = std::max(a, b);
      out.bonds.push_back({static_cast<uint32_t>(lo), static_cast<uint32_t>(hi),
                           frames[static_cast<size_t>(parts[a].building)] * centre, area, strength_of(lo, area)});
    }
    if (boxes[a].min().y() < kTouch) {  // on the ground
      std::vector<Eigen::Vector2d> pts;
      for (const auto& p : parts[a].prism.vertices())
        if (p.y() < kTouch) pts.emplace_back(p.x(), p.z());
      const Poly2 foot = detail::convex_hull(pts);
      const double area = foot.size() >= 3 ? std::abs(detail::area(foot)) : 0.0;
      if (area >= kMinBondArea) {
        const Eigen::Vector2d c = detail::centroid(foot);
        out.bonds.push_back({static_cast<uint32_t>(a), kGroundPiece,
                             frames[static_cast<size_t>(parts[a].building)] * Vec3(c.x(), 0, c.y()), area,
                             strength_of(a, area)});
      }
    }
  }
  std::sort(out.bonds.begin(), out.bonds.end(), [](const Bond& x, const Bond& y) {
    return x.piece_a < y.piece_a || (x.piece_a == y.piece_a && x.piece_b < y.piece_b);
  });
  return out;
}

}  // namespace drb::physics
