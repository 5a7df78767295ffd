// Internal geometry helpers for fracture: 2-D convex polygons, prisms and mass properties.
#pragma once
#include <Eigen/Core>
#include <Eigen/Geometry>

#include <cstdint>
#include <vector>

#include "derrumbe/physics/types.hpp"

namespace drb::physics::detail {

using Poly2 = std::vector<Eigen::Vector2d>;  // convex, counter-clockwise

double area(const Poly2& p);
Eigen::Vector2d centroid(const Poly2& p);
// Keeps the part of p where n . x <= d (Sutherland-Hodgman against one half-plane).
Poly2 clip(const Poly2& p, const Eigen::Vector2d& n, double d);
// Intersection of two convex polygons.
Poly2 intersect(const Poly2& a, const Poly2& b);
// Convex hull (Andrew's monotone chain), counter-clockwise, collinear points dropped.
Poly2 convex_hull(std::vector<Eigen::Vector2d> points);
Poly2 rectangle(double x0, double y0, double x1, double y1);

// Seeded Voronoi cells of a convex region: `count` seeds on a jittered grid, each cell the
// region clipped by the bisectors with every other seed. Cells are convex.
std::vector<Poly2> voronoi_cells(const Poly2& region, int count, uint64_t seed);

// A convex prism: polygon `poly` in the plane of axes (u, v), extruded along axis w over
// [w0, w1]; axes are 0 = x, 1 = y, 2 = z of the building frame.
struct Prism {
  Poly2 poly;
  int u = 0, v = 2, w = 1;
  double w0 = 0, w1 = 1;
  std::vector<Eigen::Vector3d> vertices() const;
  Mesh mesh() const;  // closed triangle mesh, outward counter-clockwise faces
};

struct MassProperties {
  double mass = 0;
  Eigen::Vector3d com{0, 0, 0};
  Eigen::Matrix3d inertia = Eigen::Matrix3d::Zero();  // about the centre of mass
};
// Mass properties of a closed, outward-oriented triangle mesh of uniform density.
MassProperties mass_properties(const std::vector<Eigen::Vector3d>& vertices,
                               const std::vector<std::array<uint32_t, 3>>& triangles, double density);

// A counter-based hash for seeded, order-independent random numbers (splitmix64 finalizer).
uint64_t hash64(uint64_t x);
double uniform01(uint64_t seed, uint64_t a, uint64_t b = 0, uint64_t c = 0);

}  // namespace drb::physics::detail
