// The CPU rasterizer behind render_frame / render_sequence.
//
// Per frame: every piece's mesh is moved to the world with the frame's pose and into the camera,
// triangles are clipped against the near plane (z = kNear, split, not dropped), projected to
// sample space (supersample s: s x s samples per pixel) and binned into 32 x 32 pixel tiles.
// Each tile is rasterized and resolved by one thread (no locks): edge functions with a top-left
// fill rule, perspective-correct depth, a z-buffer on camera z. Every edge function is evaluated
// in one canonical vertex order, so the two triangles sharing an edge get exactly opposite values
// and the fill rule leaves neither a crack nor a double hit. Results do not depend on the thread
// count or on which thread took which tile.
//
// Back faces are culled only on pieces whose mesh is closed and oriented outwards (checked once
// per call); other meshes are drawn from both sides with the normal turned to the camera.
//
// Resolve: alpha is the covered fraction and rgb the mean of the samples (background from the
// pixel centre's ray); depth, id, normal and flow come from the pixel centre: the centre sample
// where it is covered (odd s); otherwise the centre is tested against the triangles of the pixel's samples (nearest
// wins), else the nearest covered sample's triangle plane is extended to it (while that stays in
// the triangle's depth range), else the nearest covered sample itself is used (its flow is then
// measured from the sample position).
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <numbers>
#include <string>
#include <tuple>
#include <thread>
#include <vector>

#include "derrumbe/render/aovs.hpp"

namespace drb::render {
namespace {

using physics::SimTrack;

constexpr double kNear = 0.05;  // near plane (camera z), also the behind-camera limit for flow
constexpr int kTile = 32;       // tile side in pixels

// ---- small helpers ----------------------------------------------------------------------------

uint32_t hash_u32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}
double hash_unit(uint32_t x) { return (hash_u32(x) >> 8) * (1.0 / 16777216.0); }

Eigen::Isometry3d view_isometry(const View& v) {
  Eigen::Isometry3d iso = Eigen::Isometry3d::Identity();
  iso.linear() = v.rotation;
  iso.translation() = v.translation;
  return iso;
}

enum class Look : uint8_t { concrete, brick, glass, steel };

Look parse_look(const std::string& s) {
  if (s == "brick") return Look::brick;
  if (s == "glass") return Look::glass;
  if (s == "steel") return Look::steel;
  return Look::concrete;
}

// ---- proxy shading ----------------------------------------------------------------------------

struct Lighting {
  Vec3 sun_dir, sun{1.0, 0.95, 0.88}, sky_ambient{0.30, 0.36, 0.45}, ground_ambient{0.16, 0.14, 0.12};
  Vec3 horizon{0.78, 0.82, 0.86}, zenith{0.30, 0.45, 0.72}, ground{0.35, 0.33, 0.30};
  Lighting() {
    const double el = 50.0 * std::numbers::pi / 180.0, az = 30.0 * std::numbers::pi / 180.0;
    sun_dir = Vec3(std::cos(el) * std::sin(az), std::sin(el), std::cos(el) * std::cos(az));
  }
  // Irradiance on a surface with world normal n: Lambert key light plus hemisphere ambient.
  Vec3 light(const Vec3& n) const {
    const double k = 0.5 * (1.0 + n.y());
    return sun * std::max(0.0, n.dot(sun_dir)) + (1 - k) * ground_ambient + k * sky_ambient;
  }
  // Background along the world ray d (unit) from a camera at `eye`.
  Vec3 background(const Vec3& d, const Vec3& eye) const {
    if (d.y() >= 0) return horizon + std::sqrt(d.y()) * (zenith - horizon);
    const double t = eye.y() > 0 ? eye.y() / -d.y() : 0.0;  // distance to the ground y = 0
    const Vec3 lit = ground.cwiseProduct(light(Vec3::UnitY()));
    const double haze = 1.0 - std::exp(-t / 800.0);
    return lit + haze * (horizon - lit);
  }
};

Vec3 base_albedo(Look look, uint32_t piece_id) {
  switch (look) {
    case Look::brick: return {0.52, 0.25, 0.17};
    case Look::glass: return {0.22, 0.27, 0.32};
    case Look::steel: return {0.44, 0.45, 0.47};
    case Look::concrete: break;
  }
  const double v = hash_unit(piece_id * 2U + 1U), w = hash_unit(piece_id * 2U + 2U) - 0.5;
  const double b = 0.84 + 0.26 * v;
  return Vec3(0.60 * (1 + 0.05 * w), 0.59, 0.56 * (1 - 0.05 * w)) * b;
}

// Brick running bond on the face plane (local coordinates, face's dominant local axis).
Vec3 brick_albedo(const Vec3& local, int axis) {
  static const Vec3 brick{0.52, 0.25, 0.17}, mortar{0.60, 0.58, 0.54};
  double a, b;
  if (axis == 0) a = local.z(), b = local.y();
  else if (axis == 1) a = local.x(), b = local.z();
  else a = local.x(), b = local.y();
  const double rows = b / 0.075, row = std::floor(rows);
  const double cols = a / 0.225 + 0.5 * (static_cast<int64_t>(row) & 1), col = std::floor(cols);
  if (rows - row < 0.133 || cols - col < 0.044) return 0.5 * (brick + mortar);
  const auto key = static_cast<uint32_t>(static_cast<int64_t>(row) * 7919 + static_cast<int64_t>(col) * 104729);
  return brick * (0.94 + 0.12 * hash_unit(key));
}

// ---- frame geometry ---------------------------------------------------------------------------

struct Face {
  int32_t piece = 0;
  Look look = Look::concrete;
  int axis = 2;                       // dominant local axis of the normal (brick pattern)
  Eigen::Vector3f normal{0, 0, 0};    // world, facing the camera
  Vec3 albedo{0, 0, 0}, irradiance{0, 0, 0}, shaded{0, 0, 0};
  Vec3 plane_n{0, 0, 1};              // camera space: plane_n . X = plane_d, plane_d < 0
  double plane_d = -1, z_min = 0, z_max = 0;
};

// One edge function, evaluated with its vertices in canonical (lexicographic) order.
struct Edge {
  double ax = 0, ay = 0, dx = 0, dy = 0, sign = 1;
  bool top_left = false;
  void set(double x0, double y0, double x1, double y1) {
    const bool forward = x0 < x1 || (x0 == x1 && y0 < y1);
    if (forward) ax = x0, ay = y0, dx = x1 - x0, dy = y1 - y0, sign = 1;
    else ax = x1, ay = y1, dx = x0 - x1, dy = y0 - y1, sign = -1;
    const double odx = sign * dx, ody = sign * dy;  // the oriented direction x0 -> x1
    // Positive-area triangles have their interior where the edge function is > 0; in y-down
    // image space that puts the top edge going right and the left edges going up.
    top_left = ody < 0 || (ody == 0 && odx > 0);
  }
  double operator()(double px, double py) const { return sign * (dx * (py - ay) - dy * (px - ax)); }
  bool inside(double e) const { return e > 0 || (e == 0 && top_left); }
};

struct RasterTri {
  Edge e[3];               // e[i] is the edge opposite vertex i
  double inv_z[3] = {};    // 1 / camera z of the vertices
  double area = 0;         // > 0, sample units
  int x0 = 0, x1 = 0, y0 = 0, y1 = 0;  // sample bounding box, half open
  uint32_t face = 0;
};

struct Particle {
  double u, v, r, z, opacity;
  int x0, x1, y0, y1;  // pixel bounding box, half open
};

struct Frame {
  View view;
  bool has_next = false, has_prev = false;
  View next, prev;
  std::vector<Eigen::Isometry3d> local_from_cam, next_from_cam, prev_from_cam;
  std::vector<Face> faces;
  std::vector<RasterTri> tris;
  std::vector<Particle> particles;
  int tiles_x = 0, tiles_y = 0;
  std::vector<std::vector<uint32_t>> tile_tris, tile_particles;
};

struct Mode {
  bool shading = true, flow = true, dust = true;
};

// Whether a piece's mesh is closed and consistently oriented outwards (every edge, with vertices
// matched by position, used once in each direction; positive volume). Only such pieces get their
// back faces culled: the front faces hide them anyway, except from inside the piece.
std::vector<uint8_t> closed_pieces(const SimTrack& track) {
  std::vector<uint8_t> closed(track.pieces.size(), 0);
  std::vector<uint32_t> canonical;
  std::vector<uint64_t> edges;
  for (size_t p = 0; p < track.pieces.size(); ++p) {
    const physics::Mesh& mesh = track.pieces[p].mesh;
    if (mesh.triangles.size() < 4) continue;
    // Vertices at the same position share one index.
    std::vector<uint32_t> order(mesh.vertices.size());
    for (uint32_t i = 0; i < order.size(); ++i) order[i] = i;
    auto less = [&](uint32_t a, uint32_t b) {
      const auto &va = mesh.vertices[a], &vb = mesh.vertices[b];
      return std::tie(va.x(), va.y(), va.z()) < std::tie(vb.x(), vb.y(), vb.z());
    };
    std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return less(a, b) || (!less(b, a) && a < b); });
    canonical.assign(mesh.vertices.size(), 0);
    for (size_t k = 0; k < order.size(); ++k)
      canonical[order[k]] = (k > 0 && !less(order[k - 1], order[k])) ? canonical[order[k - 1]] : order[k];
    edges.clear();
    double volume = 0;
    for (const auto& t : mesh.triangles) {
      const uint32_t v[3] = {canonical[t[0]], canonical[t[1]], canonical[t[2]]};
      for (int e = 0; e < 3; ++e) edges.push_back(uint64_t(v[e]) << 32 | v[(e + 1) % 3]);
      const Vec3 a = mesh.vertices[t[0]].cast<double>(), b = mesh.vertices[t[1]].cast<double>(),
                 c = mesh.vertices[t[2]].cast<double>();
      volume += a.dot(b.cross(c));
    }
    std::sort(edges.begin(), edges.end());
    bool ok = volume > 0 && std::adjacent_find(edges.begin(), edges.end()) == edges.end();
    for (size_t k = 0; ok && k < edges.size(); ++k) {
      const uint64_t reverse = (edges[k] & 0xffffffffULL) << 32 | edges[k] >> 32;
      ok = (edges[k] >> 32) != (edges[k] & 0xffffffffULL) && std::binary_search(edges.begin(), edges.end(), reverse);
    }
    closed[p] = ok ? 1 : 0;
  }
  return closed;
}

View view_at(const physics::Camera& camera, const SimTrack& track, int64_t frame, const RenderOptions& o) {
  return make_view(camera_at(camera, static_cast<double>(frame) / track.fps), o.width, o.height);
}

// Sutherland-Hodgman against z >= kNear. The intersection on an edge is always computed from its
// inside vertex, so triangles sharing a clipped edge get bitwise the same new vertex.
int clip_near(const std::array<Vec3, 3>& in, std::array<Vec3, 4>& out) {
  int n = 0;
  for (int i = 0; i < 3; ++i) {
    const Vec3 &a = in[i], &b = in[(i + 1) % 3];
    const bool ia = a.z() >= kNear, ib = b.z() >= kNear;
    if (ia) out[n++] = a;
    if (ia != ib) {
      const Vec3& p = ia ? a : b;  // inside
      const Vec3& q = ia ? b : a;  // outside
      const double t = (kNear - p.z()) / (q.z() - p.z());
      Vec3 x = p + t * (q - p);
      x.z() = kNear;
      out[n++] = x;
    }
  }
  return n;
}

void build_frame(Frame& fr, const SimTrack& track, const std::vector<uint8_t>& closed,
                 const physics::Camera& camera, int64_t f, const RenderOptions& o, const Mode& mode) {
  const int W = o.width, H = o.height, s = o.supersample;
  const int64_t P = track.num_pieces();
  fr.view = view_at(camera, track, f, o);
  fr.has_next = mode.flow && f + 1 < track.num_frames();
  fr.has_prev = mode.flow && f > 0;
  if (fr.has_next) fr.next = view_at(camera, track, f + 1, o);
  if (fr.has_prev) fr.prev = view_at(camera, track, f - 1, o);
  const Eigen::Isometry3d cam = view_isometry(fr.view);
  const Lighting lighting;

  fr.local_from_cam.resize(P);
  fr.next_from_cam.assign(P, Eigen::Isometry3d::Identity());
  fr.prev_from_cam.assign(P, Eigen::Isometry3d::Identity());
  fr.tiles_x = (W + kTile - 1) / kTile;
  fr.tiles_y = (H + kTile - 1) / kTile;
  fr.tile_tris.assign(static_cast<size_t>(fr.tiles_x) * fr.tiles_y, {});
  const int tile_samples = kTile * s;
  const int SW = W * s, SH = H * s;
  const double sfx = fr.view.fx * s, sfy = fr.view.fy * s, scx = fr.view.cx * s, scy = fr.view.cy * s;

  std::vector<Vec3> cverts;
  for (int64_t p = 0; p < P; ++p) {
    const physics::Piece& piece = track.pieces[p];
    const Eigen::Isometry3d pose = track.pose(f, p);
    const Eigen::Isometry3d cam_from_local = cam * pose;
    fr.local_from_cam[p] = cam_from_local.inverse();
    if (fr.has_next)
      fr.next_from_cam[p] = view_isometry(fr.next) * track.pose(f + 1, p) * fr.local_from_cam[p];
    if (fr.has_prev)
      fr.prev_from_cam[p] = view_isometry(fr.prev) * track.pose(f - 1, p) * fr.local_from_cam[p];

    const auto& mesh = piece.mesh;
    cverts.resize(mesh.vertices.size());
    for (size_t i = 0; i < mesh.vertices.size(); ++i) cverts[i] = cam_from_local * mesh.vertices[i].cast<double>();
    const Look look = piece.material < track.materials.size() ? parse_look(track.materials[piece.material].look)
                                                              : Look::concrete;
    const Vec3 albedo = base_albedo(look, piece.id);

    for (const auto& t : mesh.triangles) {
      const std::array<Vec3, 3> c = {cverts[t[0]], cverts[t[1]], cverts[t[2]]};
      if (c[0].z() < kNear && c[1].z() < kNear && c[2].z() < kNear) continue;
      const Vec3 l0 = mesh.vertices[t[0]].cast<double>(), l1 = mesh.vertices[t[1]].cast<double>(),
                 l2 = mesh.vertices[t[2]].cast<double>();
      Vec3 n_local = (l1 - l0).cross(l2 - l0);
      if (!(n_local.norm() > 0)) continue;
      n_local.normalize();
      Vec3 n_cam = cam_from_local.linear() * n_local;
      double d = n_cam.dot(c[0]);
      if (d == 0) continue;  // seen edge-on through the camera centre
      if (d > 0) {
        if (closed[p]) continue;  // a back face of a closed piece
        n_cam = -n_cam, d = -d;   // face the camera
      }

      std::array<Vec3, 4> poly;
      const int n = clip_near(c, poly);
      if (n < 3) continue;
      // Project the clipped polygon to sample space.
      std::array<double, 4> sx, sy, iz;
      double z_min = std::numeric_limits<double>::infinity(), z_max = 0;
      for (int i = 0; i < n; ++i) {
        iz[i] = 1.0 / poly[i].z();
        sx[i] = sfx * poly[i].x() * iz[i] + scx;
        sy[i] = sfy * poly[i].y() * iz[i] + scy;
        z_min = std::min(z_min, poly[i].z());
        z_max = std::max(z_max, poly[i].z());
      }
      const uint32_t face_index = static_cast<uint32_t>(fr.faces.size());
      bool used = false;
      for (int k = 1; k + 1 < n; ++k) {  // fan
        int i0 = 0, i1 = k, i2 = k + 1;
        double area = (sx[i1] - sx[i0]) * (sy[i2] - sy[i0]) - (sy[i1] - sy[i0]) * (sx[i2] - sx[i0]);
        if (!(area != 0) || !std::isfinite(area)) continue;
        if (area < 0) std::swap(i1, i2), area = -area;
        const double minx = std::min({sx[i0], sx[i1], sx[i2]}), maxx = std::max({sx[i0], sx[i1], sx[i2]});
        const double miny = std::min({sy[i0], sy[i1], sy[i2]}), maxy = std::max({sy[i0], sy[i1], sy[i2]});
        // Samples centred at i + 0.5 inside [min, max].
        const double bx0 = std::max(0.0, std::ceil(minx - 0.5)), bx1 = std::min<double>(SW, std::floor(maxx - 0.5) + 1);
        const double by0 = std::max(0.0, std::ceil(miny - 0.5)), by1 = std::min<double>(SH, std::floor(maxy - 0.5) + 1);
        if (!(bx0 < bx1 && by0 < by1)) continue;
        RasterTri rt;
        const int v[3] = {i0, i1, i2};
        for (int e = 0; e < 3; ++e) {
          const int a = v[(e + 1) % 3], b = v[(e + 2) % 3];
          rt.e[e].set(sx[a], sy[a], sx[b], sy[b]);
          rt.inv_z[e] = iz[v[e]];
        }
        rt.area = area;
        rt.x0 = static_cast<int>(bx0), rt.x1 = static_cast<int>(bx1);
        rt.y0 = static_cast<int>(by0), rt.y1 = static_cast<int>(by1);
        rt.face = face_index;
        const auto index = static_cast<uint32_t>(fr.tris.size());
        fr.tris.push_back(rt);
        for (int ty = rt.y0 / tile_samples; ty <= (rt.y1 - 1) / tile_samples; ++ty)
          for (int tx = rt.x0 / tile_samples; tx <= (rt.x1 - 1) / tile_samples; ++tx)
            fr.tile_tris[static_cast<size_t>(ty) * fr.tiles_x + tx].push_back(index);
        used = true;
      }
      if (!used) continue;
      Face face;
      face.piece = static_cast<int32_t>(p);
      face.look = look;
      Vec3 n_world = fr.view.rotation.transpose() * n_cam;
      n_world.normalize();
      face.normal = n_world.cast<float>();
      n_local.cwiseAbs().maxCoeff(&face.axis);
      face.plane_n = n_cam;
      face.plane_d = d;
      face.z_min = z_min;
      face.z_max = z_max;
      if (mode.shading) {
        face.albedo = albedo;
        face.irradiance = lighting.light(n_world);
        face.shaded = albedo.cwiseProduct(face.irradiance);
      }
      fr.faces.push_back(face);
    }
  }

  // Dust particles: screen discs, binned into tiles in particle order.
  fr.tile_particles.assign(fr.tile_tris.size(), {});
  if (mode.dust && static_cast<size_t>(f) < track.dust.size()) {
    const auto& dust = track.dust[static_cast<size_t>(f)];
    for (size_t i = 0; i < dust.shape(0); ++i) {
      const Vec3 w(dust(i, 0), dust(i, 1), dust(i, 2));
      const double radius = dust(i, 3), opacity = std::min<double>(dust(i, 4), 1.0);
      if (!w.allFinite() || !(radius > 0) || !(opacity > 0) || !std::isfinite(radius)) continue;
      const Vec3 c = fr.view.to_camera(w);
      if (!(c.z() > kNear)) continue;
      Particle pt;
      pt.z = c.z();
      pt.u = fr.view.fx * c.x() / c.z() + fr.view.cx;
      pt.v = fr.view.fy * c.y() / c.z() + fr.view.cy;
      const double r = fr.view.fx * radius / c.z();
      // Sub-pixel particles keep a footprint that pixel centres can see, with the same integral.
      pt.r = std::max(r, 0.75);
      pt.opacity = opacity * std::min(1.0, (r * r) / (pt.r * pt.r));
      const double x0 = std::max(0.0, std::ceil(pt.u - pt.r - 0.5)), x1 = std::min<double>(W, std::floor(pt.u + pt.r - 0.5) + 1);
      const double y0 = std::max(0.0, std::ceil(pt.v - pt.r - 0.5)), y1 = std::min<double>(H, std::floor(pt.v + pt.r - 0.5) + 1);
      if (!(x0 < x1 && y0 < y1)) continue;
      pt.x0 = static_cast<int>(x0), pt.x1 = static_cast<int>(x1), pt.y0 = static_cast<int>(y0), pt.y1 = static_cast<int>(y1);
      const auto index = static_cast<uint32_t>(fr.particles.size());
      fr.particles.push_back(pt);
      for (int ty = pt.y0 / kTile; ty <= (pt.y1 - 1) / kTile; ++ty)
        for (int tx = pt.x0 / kTile; tx <= (pt.x1 - 1) / kTile; ++tx)
          fr.tile_particles[static_cast<size_t>(ty) * fr.tiles_x + tx].push_back(index);
    }
  }
}

// ---- per-tile work ----------------------------------------------------------------------------

struct Scratch {
  std::vector<double> z;
  std::vector<int32_t> tri;
  std::vector<double> transmittance;
};

// Output of one frame: the AOVs plus, per pixel, the camera z of the surface point moved to the
// next frame (NaN where there is none), for render_sequence's occlusion test.
struct FrameResult {
  AOVs aovs;
  std::vector<float> next_z;
};

struct TileContext {
  const Frame& fr;
  const RenderOptions& o;
  const Mode& mode;
  FrameResult& out;
  std::vector<std::array<int, 2>> sample_order;  // (i, j) by distance to the pixel centre
  int centre_sample = -1;                        // index into sample_order of the exact centre
  Lighting lighting;
};

void render_tile(const TileContext& ctx, int tile, Scratch& scratch) {
  const Frame& fr = ctx.fr;
  const int W = ctx.o.width, H = ctx.o.height, s = ctx.o.supersample;
  const int tx = tile % fr.tiles_x, ty = tile / fr.tiles_x;
  const int px0 = tx * kTile, py0 = ty * kTile, px1 = std::min(W, px0 + kTile), py1 = std::min(H, py0 + kTile);
  const int sx0 = px0 * s, sy0 = py0 * s, sx1 = px1 * s, sy1 = py1 * s;
  const int stride = sx1 - sx0;
  const size_t n_samples = static_cast<size_t>(stride) * (sy1 - sy0);
  scratch.z.assign(n_samples, std::numeric_limits<double>::infinity());
  scratch.tri.assign(n_samples, -1);

  // Rasterize.
  for (uint32_t index : fr.tile_tris[tile]) {
    const RasterTri& t = fr.tris[index];
    const int x0 = std::max(t.x0, sx0), x1 = std::min(t.x1, sx1), y0 = std::max(t.y0, sy0), y1 = std::min(t.y1, sy1);
    for (int y = y0; y < y1; ++y) {
      const double py = y + 0.5;
      // A conservative span of the row (2 samples of slack); every sample in it is tested exactly.
      double lo = x0, hi = x1;
      bool empty = false;
      for (const Edge& e : t.e) {
        const double slope = -e.sign * e.dy;  // d(edge)/d(px)
        const double at0 = e(0.0, py);
        if (slope == 0) {
          empty = empty || !e.inside(e(x0 + 0.5, py));
          continue;
        }
        const double cross = -at0 / slope - 0.5;  // sample index where the edge crosses the row
        if (!std::isfinite(cross)) continue;
        if (slope > 0) lo = std::max(lo, std::floor(cross) - 2);
        else hi = std::min(hi, std::ceil(cross) + 3);
      }
      if (empty || !(lo < hi)) continue;
      const int xa = static_cast<int>(lo), xb = static_cast<int>(hi);
      double* zrow = scratch.z.data() + static_cast<size_t>(y - sy0) * stride - sx0;
      int32_t* trow = scratch.tri.data() + static_cast<size_t>(y - sy0) * stride - sx0;
      for (int x = xa; x < xb; ++x) {
        const double px = x + 0.5;
        const double e0 = t.e[0](px, py);
        if (!t.e[0].inside(e0)) continue;
        const double e1 = t.e[1](px, py);
        if (!t.e[1].inside(e1)) continue;
        const double e2 = t.e[2](px, py);
        if (!t.e[2].inside(e2)) continue;
        // Perspective-correct: 1/z is affine in screen space.
        const double z = t.area / (e0 * t.inv_z[0] + e1 * t.inv_z[1] + e2 * t.inv_z[2]);
        if (z < zrow[x]) {
          zrow[x] = z;
          trow[x] = static_cast<int32_t>(index);
        }
      }
    }
  }

  // Resolve.
  AOVs& a = ctx.out.aovs;
  const View& v = fr.view;
  const double inv_s = 1.0 / s, inv_n = 1.0 / (s * s);
  const Eigen::Matrix3d cam_to_world = v.rotation.transpose();
  for (int py = py0; py < py1; ++py) {
    for (int px = px0; px < px1; ++px) {
      const size_t pix = static_cast<size_t>(py) * W + px;
      const size_t base = static_cast<size_t>(py * s - sy0) * stride + (px * s - sx0);
      int covered = 0, chosen = -1;
      Vec3 rgb_sum = Vec3::Zero();
      for (int k = 0; k < static_cast<int>(ctx.sample_order.size()); ++k) {
        const auto [i, j] = ctx.sample_order[k];
        const size_t si = base + static_cast<size_t>(j) * stride + i;
        const int32_t ti = scratch.tri[si];
        if (ti < 0) continue;
        if (chosen < 0) chosen = k;
        ++covered;
        if (ctx.mode.shading) {
          const Face& face = fr.faces[fr.tris[ti].face];
          if (face.look == Look::brick) {
            const double u = px + (i + 0.5) * inv_s, vv = py + (j + 0.5) * inv_s;
            const Vec3 xc = scratch.z[si] * Vec3((u - v.cx) / v.fx, (vv - v.cy) / v.fy, 1.0);
            const Vec3 local = fr.local_from_cam[face.piece] * xc;
            rgb_sum += brick_albedo(local, face.axis).cwiseProduct(face.irradiance);
          } else {
            rgb_sum += face.shaded;
          }
        }
      }
      const double uc = px + 0.5, vc = py + 0.5;
      const Vec3 ray_c((uc - v.cx) / v.fx, (vc - v.cy) / v.fy, 1.0);
      if (ctx.mode.shading) {
        Vec3 rgb = rgb_sum;
        const int uncovered = s * s - covered;
        if (uncovered > 0) rgb += uncovered * ctx.lighting.background((cam_to_world * ray_c).normalized(), v.position);
        rgb *= inv_n;
        for (int c = 0; c < 3; ++c) a.rgb.data()[pix * 3 + c] = static_cast<float>(rgb[c]);
      }
      if (chosen < 0) continue;  // empty: the defaults set by the caller

      const auto [ci, cj] = ctx.sample_order[chosen];
      const size_t si = base + static_cast<size_t>(cj) * stride + ci;
      int32_t tri = scratch.tri[si];
      double z = scratch.z[si], u = px + (ci + 0.5) * inv_s, vv = py + (cj + 0.5) * inv_s;
      if (chosen != ctx.centre_sample) {
        // The pixel centre is no sample: test it against the samples' triangles (nearest wins) ...
        const double cx_s = (px + 0.5) * s, cy_s = (py + 0.5) * s;
        double best = std::numeric_limits<double>::infinity();
        int32_t best_tri = -1;
        int n_seen = 0;
        std::array<int32_t, 64> seen;
        for (const auto& [i, j] : ctx.sample_order) {
          const int32_t ti = scratch.tri[base + static_cast<size_t>(j) * stride + i];
          if (ti < 0 || std::find(seen.begin(), seen.begin() + n_seen, ti) != seen.begin() + n_seen) continue;
          seen[n_seen++] = ti;
          const RasterTri& t = fr.tris[ti];
          const double e0 = t.e[0](cx_s, cy_s), e1 = t.e[1](cx_s, cy_s), e2 = t.e[2](cx_s, cy_s);
          if (!t.e[0].inside(e0) || !t.e[1].inside(e1) || !t.e[2].inside(e2)) continue;
          const double zc = t.area / (e0 * t.inv_z[0] + e1 * t.inv_z[1] + e2 * t.inv_z[2]);
          if (zc < best) best = zc, best_tri = ti;
        }
        if (best_tri >= 0) {
          tri = best_tri, z = best, u = uc, vv = vc;
        } else {
          // ... else extend the nearest sample's triangle plane to it, where that stays in the
          // triangle's depth range; else keep the sample.
          const Face& f0 = fr.faces[fr.tris[tri].face];
          const double zc = f0.plane_d / f0.plane_n.dot(ray_c);
          if (std::isfinite(zc) && zc >= f0.z_min * (1 - 1e-9) && zc <= f0.z_max * (1 + 1e-9) && zc >= kNear)
            z = zc, u = uc, vv = vc;
        }
      }
      const Face& face = fr.faces[fr.tris[tri].face];
      const Vec3 xc = z * Vec3((u - v.cx) / v.fx, (vv - v.cy) / v.fy, 1.0);

      a.depth.data()[pix] = static_cast<float>(z);
      a.piece_id.data()[pix] = face.piece;
      for (int c = 0; c < 3; ++c) a.normal.data()[pix * 3 + c] = face.normal[c];
      a.alpha.data()[pix] = static_cast<float>(covered * inv_n);

      if (fr.has_next) {
        const Vec3 xn = fr.next_from_cam[face.piece] * xc;
        if (!(xn.z() > kNear)) {
          a.occlusion.data()[pix] = 1.0f;  // behind the next camera: flow stays 0
        } else {
          const double un = fr.next.fx * xn.x() / xn.z() + fr.next.cx, vn = fr.next.fy * xn.y() / xn.z() + fr.next.cy;
          a.flow_forward.data()[pix * 2 + 0] = static_cast<float>(un - u);
          a.flow_forward.data()[pix * 2 + 1] = static_cast<float>(vn - vv);
          const double tu = uc + (un - u), tv = vc + (vn - vv);  // forward target of the pixel centre
          if (!(tu >= 0 && tu < W && tv >= 0 && tv < H)) a.occlusion.data()[pix] = 1.0f;
          ctx.out.next_z[pix] = static_cast<float>(xn.z());
        }
      }
      if (fr.has_prev) {
        const Vec3 xp = fr.prev_from_cam[face.piece] * xc;
        if (xp.z() > kNear) {
          const double up = fr.prev.fx * xp.x() / xp.z() + fr.prev.cx, vp = fr.prev.fy * xp.y() / xp.z() + fr.prev.cy;
          a.flow_backward.data()[pix * 2 + 0] = static_cast<float>(up - u);
          a.flow_backward.data()[pix * 2 + 1] = static_cast<float>(vp - vv);
        }
      }
    }
  }

  // Dust: 1 - prod(1 - a) over the particles in front of the surface, in particle order.
  if (ctx.mode.dust && !fr.tile_particles[tile].empty()) {
    const int tw = px1 - px0;
    scratch.transmittance.assign(static_cast<size_t>(tw) * (py1 - py0), 1.0);
    for (uint32_t index : fr.tile_particles[tile]) {
      const Particle& pt = fr.particles[index];
      const double inv_r2 = 1.0 / (pt.r * pt.r);
      for (int py = std::max(pt.y0, py0); py < std::min(pt.y1, py1); ++py)
        for (int px = std::max(pt.x0, px0); px < std::min(pt.x1, px1); ++px) {
          const double du = px + 0.5 - pt.u, dv = py + 0.5 - pt.v;
          const double q = (du * du + dv * dv) * inv_r2;
          if (q >= 1) continue;
          if (!(pt.z < a.depth.data()[static_cast<size_t>(py) * W + px])) continue;
          scratch.transmittance[static_cast<size_t>(py - py0) * tw + (px - px0)] *= 1.0 - pt.opacity * (1.0 - q);
        }
    }
    for (int py = py0; py < py1; ++py)
      for (int px = px0; px < px1; ++px) {
        const double t = scratch.transmittance[static_cast<size_t>(py - py0) * tw + (px - px0)];
        a.dust.data()[static_cast<size_t>(py) * W + px] = static_cast<float>(std::clamp(1.0 - t, 0.0, 1.0));
      }
  }
}

// Runs fn(item, worker) for item in [0, n) on `threads` threads; each item is run by one thread.
template <class Fn>
void parallel_for(int n, int threads, Fn&& fn) {
  const int workers = std::max(1, std::min(threads, n));
  if (workers == 1) {
    for (int i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  std::atomic<int> next{0};
  std::vector<std::exception_ptr> errors(workers);
  auto work = [&](int w) {
    try {
      for (int i = next++; i < n; i = next++) fn(i, w);
    } catch (...) {
      errors[w] = std::current_exception();
      next = n;
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (int w = 1; w < workers; ++w) pool.emplace_back(work, w);
  work(0);
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

int thread_count(const RenderOptions& o) {
  if (o.threads > 0) return o.threads;
  return static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
}

void check_inputs(const SimTrack& track, const physics::Camera& camera, const RenderOptions& o, const char* who) {
  const std::string w = who;
  check_arg(o.width >= 1 && o.width <= 16384, w + ": width must be in [1, 16384], got " + std::to_string(o.width));
  check_arg(o.height >= 1 && o.height <= 16384, w + ": height must be in [1, 16384], got " + std::to_string(o.height));
  check_arg(o.supersample >= 1 && o.supersample <= 8,
            w + ": supersample must be in [1, 8], got " + std::to_string(o.supersample));
  check_arg(o.threads >= 0, w + ": threads must be >= 0 (0: all hardware threads), got " + std::to_string(o.threads));
  check_arg(std::isfinite(o.occlusion_depth_tolerance) && o.occlusion_depth_tolerance >= 0,
            w + ": occlusion_depth_tolerance must be finite and >= 0, got " + std::to_string(o.occlusion_depth_tolerance));
  check_arg(!track.pieces.empty(), w + ": the track has no pieces");
  check_arg(track.num_frames() > 0, w + ": the track has no frames");
  check_arg(!camera.keys.empty(), w + ": camera '" + camera.name + "' has no keys");
  track.validate();
}

FrameResult render_one(const SimTrack& track, const std::vector<uint8_t>& closed, const physics::Camera& camera,
                       int64_t f, const RenderOptions& o, const Mode& mode) {
  Frame fr;
  build_frame(fr, track, closed, camera, f, o, mode);

  const size_t H = static_cast<size_t>(o.height), W = static_cast<size_t>(o.width);
  FrameResult result;
  result.aovs = AOVs::blank(o.width, o.height);
  result.next_z.assign(H * W, std::numeric_limits<float>::quiet_NaN());

  TileContext ctx{fr, o, mode, result, {}, -1, {}};
  const int s = o.supersample;
  for (int j = 0; j < s; ++j)
    for (int i = 0; i < s; ++i) ctx.sample_order.push_back({i, j});
  auto dist2 = [s](const std::array<int, 2>& q) {
    const int di = 2 * q[0] + 1 - s, dj = 2 * q[1] + 1 - s;
    return di * di + dj * dj;
  };
  std::stable_sort(ctx.sample_order.begin(), ctx.sample_order.end(),
                   [&](const auto& p, const auto& q) { return dist2(p) < dist2(q); });
  if (s % 2 == 1) ctx.centre_sample = 0;

  const int n_tiles = fr.tiles_x * fr.tiles_y;
  const int threads = std::min(thread_count(o), n_tiles);
  std::vector<Scratch> scratch(static_cast<size_t>(std::max(1, threads)));
  parallel_for(n_tiles, threads, [&](int tile, int worker) { render_tile(ctx, tile, scratch[worker]); });
  return result;
}

}  // namespace

AOVs render_frame(const SimTrack& track, const physics::Camera& camera, int64_t frame, const RenderOptions& options) {
  check_inputs(track, camera, options, "render_frame");
  check_arg(frame >= 0 && frame < track.num_frames(), "render_frame: frame " + std::to_string(frame) +
                                                          " outside [0, " + std::to_string(track.num_frames()) + ")");
  Mode mode;
  mode.dust = options.dust;
  return render_one(track, closed_pieces(track), camera, frame, options, mode).aovs;
}

std::vector<AOVs> render_sequence(const SimTrack& track, const physics::Camera& camera, int64_t first, int64_t last,
                                  const RenderOptions& options) {
  check_inputs(track, camera, options, "render_sequence");
  const int64_t F = track.num_frames();
  check_arg(first >= 0 && first <= last && last <= F, "render_sequence: frames [" + std::to_string(first) + ", " +
                                                          std::to_string(last) + ") are not a range inside [0, " +
                                                          std::to_string(F) + ")");
  Mode mode;
  mode.dust = options.dust;
  const std::vector<uint8_t> closed = closed_pieces(track);
  std::vector<FrameResult> frames;
  frames.reserve(static_cast<size_t>(last - first + 1));
  for (int64_t f = first; f < last; ++f) frames.push_back(render_one(track, closed, camera, f, options, mode));
  // The frame after the range, depth and ids only, so a range's occlusion equals a longer range's.
  if (last > first && last < F) frames.push_back(render_one(track, closed, camera, last, options, Mode{false, false, false}));

  const int W = options.width, H = options.height;
  const double tol = options.occlusion_depth_tolerance;
  for (int64_t f = first; f < last && f + 1 < F; ++f) {
    AOVs& a = frames[static_cast<size_t>(f - first)].aovs;
    const std::vector<float>& next_z = frames[static_cast<size_t>(f - first)].next_z;
    const AOVs& b = frames[static_cast<size_t>(f - first + 1)].aovs;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const size_t pix = static_cast<size_t>(y) * W + x;
        if (a.piece_id.data()[pix] < 0 || a.occlusion.data()[pix] != 0 || !std::isfinite(next_z[pix])) continue;
        const double tu = x + 0.5 + a.flow_forward.data()[pix * 2], tv = y + 0.5 + a.flow_forward.data()[pix * 2 + 1];
        const double qx = std::floor(tu), qy = std::floor(tv);  // the pixel whose centre is nearest
        bool occluded = !(qx >= 0 && qx < W && qy >= 0 && qy < H);
        if (!occluded) {
          const size_t q = static_cast<size_t>(qy) * W + static_cast<size_t>(qx);
          const double zq = b.depth.data()[q], zn = next_z[pix];
          occluded = b.piece_id.data()[q] != a.piece_id.data()[pix] || !(std::abs(zq - zn) <= tol * zn);
        }
        if (occluded) a.occlusion.data()[pix] = 1.0f;
      }
  }

  std::vector<AOVs> out;
  out.reserve(static_cast<size_t>(last - first));
  for (int64_t f = first; f < last; ++f) out.push_back(std::move(frames[static_cast<size_t>(f - first)].aovs));
  return out;
}

AOVs AOVs::blank(int width, int height) {
  check_arg(width >= 0 && height >= 0, "AOVs::blank: negative size");
  const size_t H = static_cast<size_t>(height), W = static_cast<size_t>(width);
  AOVs a;
  a.width = width;
  a.height = height;
  a.depth = xt::xtensor<float, 2>::from_shape({H, W});
  std::fill(a.depth.begin(), a.depth.end(), std::numeric_limits<float>::infinity());
  a.piece_id = xt::xtensor<int32_t, 2>::from_shape({H, W});
  std::fill(a.piece_id.begin(), a.piece_id.end(), -1);
  auto zeros = [](std::vector<size_t> shape, auto& t) {
    t = std::decay_t<decltype(t)>::from_shape(shape);
    std::fill(t.begin(), t.end(), 0.0f);
  };
  zeros({H, W, 3}, a.normal);
  zeros({H, W}, a.alpha);
  zeros({H, W, 3}, a.rgb);
  zeros({H, W}, a.dust);
  zeros({H, W, 2}, a.flow_forward);
  zeros({H, W, 2}, a.flow_backward);
  zeros({H, W}, a.occlusion);
  return a;
}

std::vector<std::string> aov_channel_names() {
  return {"Z", "id", "N.x", "N.y", "N.z", "A", "R", "G", "B", "dust",
          "forward.u", "forward.v", "backward.u", "backward.v", "occlusion"};
}

}  // namespace drb::render
