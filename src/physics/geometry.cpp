#include "geometry.hpp"

#include <algorithm>
#include <cmath>

namespace drb::physics::detail {

double area(const Poly2& p) {
  double a = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const auto& q = p[i];
    const auto& r = p[(i + 1) % p.size()];
    a += q.x() * r.y() - r.x() * q.y();
  }
  return 0.5 * a;
}

Eigen::Vector2d centroid(const Poly2& p) {
  const double a = area(p);
  Eigen::Vector2d c(0, 0);
  if (std::abs(a) < 1e-300) {
    for (const auto& q : p) c += q;
    return p.empty() ? c : Eigen::Vector2d(c / static_cast<double>(p.size()));
  }
  for (size_t i = 0; i < p.size(); ++i) {
    const auto& q = p[i];
    const auto& r = p[(i + 1) % p.size()];
    const double cross = q.x() * r.y() - r.x() * q.y();
    c += (q + r) * cross;
  }
  return c / (6 * a);
}

Poly2 clip(const Poly2& p, const Eigen::Vector2d& n, double d) {
  Poly2 out;
  for (size_t i = 0; i < p.size(); ++i) {
    const auto& a = p[i];
    const auto& b = p[(i + 1) % p.size()];
    const double da = n.dot(a) - d, db = n.dot(b) - d;
    if (da <= 0) out.push_back(a);
    if ((da < 0 && db > 0) || (da > 0 && db < 0)) out.push_back(a + (b - a) * (da / (da - db)));
  }
  return out;
}

Poly2 intersect(const Poly2& a, const Poly2& b) {
  Poly2 out = a;
  for (size_t i = 0; i < b.size() && out.size() >= 3; ++i) {
    const auto& p = b[i];
    const auto& q = b[(i + 1) % b.size()];
    const Eigen::Vector2d edge = q - p;
    const Eigen::Vector2d outward(edge.y(), -edge.x());  // right of a counter-clockwise edge
    out = clip(out, outward, outward.dot(p));
  }
  return out.size() >= 3 ? out : Poly2{};
}

Poly2 convex_hull(std::vector<Eigen::Vector2d> pts) {
  std::sort(pts.begin(), pts.end(), [](const auto& a, const auto& b) { return a.x() < b.x() || (a.x() == b.x() && a.y() < b.y()); });
  pts.erase(std::unique(pts.begin(), pts.end(), [](const auto& a, const auto& b) { return (a - b).norm() < 1e-12; }),
            pts.end());
  if (pts.size() < 3) return pts;
  auto cross = [](const Eigen::Vector2d& o, const Eigen::Vector2d& a, const Eigen::Vector2d& b) {
    return (a.x() - o.x()) * (b.y() - o.y()) - (a.y() - o.y()) * (b.x() - o.x());
  };
  Poly2 hull(2 * pts.size());
  size_t k = 0;
  for (size_t i = 0; i < pts.size(); ++i) {
    while (k >= 2 && cross(hull[k - 2], hull[k - 1], pts[i]) <= 1e-14) --k;
    hull[k++] = pts[i];
  }
  for (size_t i = pts.size() - 1, t = k + 1; i-- > 0;) {
    while (k >= t && cross(hull[k - 2], hull[k - 1], pts[i]) <= 1e-14) --k;
    hull[k++] = pts[i];
  }
  hull.resize(k - 1);
  return hull;
}

Poly2 rectangle(double x0, double y0, double x1, double y1) { return {{x0, y0}, {x1, y0}, {x1, y1}, {x0, y1}}; }

uint64_t hash64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

double uniform01(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  const uint64_t h = hash64(hash64(hash64(hash64(seed) ^ a) ^ b) ^ c);
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
}

std::vector<Poly2> voronoi_cells(const Poly2& region, int count, uint64_t seed) {
  if (count <= 1) return {region};
  Eigen::Vector2d lo = region[0], hi = region[0];
  for (const auto& p : region) {
    lo = lo.cwiseMin(p);
    hi = hi.cwiseMax(p);
  }
  const Eigen::Vector2d size = hi - lo;
  // A jittered grid keeps cells of similar size (no slivers that would be unstable to simulate).
  const int cols = std::max(1, static_cast<int>(std::lround(std::sqrt(count * size.x() / std::max(size.y(), 1e-9)))));
  const int rows = std::max(1, (count + cols - 1) / cols);
  std::vector<Eigen::Vector2d> seeds;
  for (int k = 0; k < count; ++k) {
    const int i = k % cols, j = k / cols;
    const double jx = 0.2 + 0.6 * uniform01(seed, static_cast<uint64_t>(k), 1);
    const double jy = 0.2 + 0.6 * uniform01(seed, static_cast<uint64_t>(k), 2);
    seeds.emplace_back(lo.x() + size.x() * (i + jx) / cols, lo.y() + size.y() * (j + jy) / rows);
  }
  std::vector<Poly2> cells;
  for (size_t a = 0; a < seeds.size(); ++a) {
    Poly2 cell = region;
    for (size_t b = 0; b < seeds.size() && cell.size() >= 3; ++b) {
      if (a == b) continue;
      const Eigen::Vector2d n = seeds[b] - seeds[a];
      cell = clip(cell, n, n.dot(0.5 * (seeds[a] + seeds[b])));
    }
    if (cell.size() >= 3 && area(cell) > 1e-9) cells.push_back(cell);
  }
  return cells;
}

std::vector<Eigen::Vector3d> Prism::vertices() const {
  std::vector<Eigen::Vector3d> out;
  for (double wv : {w0, w1})
    for (const auto& p : poly) {
      Eigen::Vector3d v;
      v[u] = p.x();
      v[this->v] = p.y();
      v[w] = wv;
      out.push_back(v);
    }
  return out;
}

Mesh Prism::mesh() const {
  Mesh m;
  for (const auto& v : vertices()) m.vertices.push_back(v.cast<float>());
  const uint32_t n = static_cast<uint32_t>(poly.size());
  // The polygon is counter-clockwise in (u, v); whether that faces +w depends on the axis order.
  const Eigen::Vector3d eu = Eigen::Vector3d::Unit(u), ev = Eigen::Vector3d::Unit(v), ew = Eigen::Vector3d::Unit(w);
  const bool ccw_faces_plus_w = eu.cross(ev).dot(ew) > 0;
  auto tri = [&](uint32_t a, uint32_t b, uint32_t c, bool flip) {
    m.triangles.push_back(flip ? std::array<uint32_t, 3>{a, c, b} : std::array<uint32_t, 3>{a, b, c});
  };
  for (uint32_t i = 1; i + 1 < n; ++i) {
    tri(n, n + i, n + i + 1, !ccw_faces_plus_w);  // top (w1) faces +w
    tri(0, i + 1, i, !ccw_faces_plus_w);          // bottom (w0) faces -w
  }
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t j = (i + 1) % n;
    tri(i, j, n + j, !ccw_faces_plus_w);
    tri(i, n + j, n + i, !ccw_faces_plus_w);
  }
  return m;
}

MassProperties mass_properties(const std::vector<Eigen::Vector3d>& vertices,
                               const std::vector<std::array<uint32_t, 3>>& triangles, double density) {
  // Signed tetrahedra from a reference point; the covariance of the canonical tetrahedron
  // is [[2,1,1],[1,2,1],[1,1,2]] / 120 (Blow & Binstock, "How to find the inertia tensor").
  Eigen::Vector3d ref(0, 0, 0);
  for (const auto& v : vertices) ref += v;
  ref /= static_cast<double>(vertices.size());
  Eigen::Matrix3d canonical;
  canonical << 2, 1, 1, 1, 2, 1, 1, 1, 2;
  canonical /= 120.0;
  double volume = 0;
  Eigen::Vector3d first(0, 0, 0);
  Eigen::Matrix3d cov = Eigen::Matrix3d::Zero();
  for (const auto& t : triangles) {
    Eigen::Matrix3d A;
    A.col(0) = vertices[t[0]] - ref;
    A.col(1) = vertices[t[1]] - ref;
    A.col(2) = vertices[t[2]] - ref;
    const double det = A.determinant();
    volume += det / 6;
    first += det / 6 * (A.col(0) + A.col(1) + A.col(2)) / 4;
    cov += det * A * canonical * A.transpose();
  }
  MassProperties mp;
  mp.mass = density * volume;
  const Eigen::Vector3d c = first / volume;  // centre of mass relative to ref
  mp.com = ref + c;
  const Eigen::Matrix3d cov_com = density * cov - mp.mass * c * c.transpose();
  mp.inertia = cov_com.trace() * Eigen::Matrix3d::Identity() - cov_com;
  return mp;
}

}  // namespace drb::physics::detail
