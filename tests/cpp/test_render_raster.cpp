// The conditioning renderer core: camera interpolation and views, and the CPU rasterizer's AOVs
// checked against closed forms (depth of a plane, flow of translating / rotating pieces and of a
// moving camera, occlusion), coverage with supersampling, dust, thread-count independence and
// bad input. Scenes are built by hand from boxes (8 vertices, 12 counter-clockwise triangles).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include <xtensor/xview.hpp>

#include "derrumbe/core/error.hpp"
#include "derrumbe/render/aovs.hpp"
#include "derrumbe/render/camera.hpp"

using namespace drb::render;
using drb::physics::Camera;
using drb::physics::CameraKey;
using drb::physics::Mesh;
using drb::physics::SimTrack;

namespace {

// ---- scenes ---------------------------------------------------------------------------------

// A box with half extents (hx, hy, hz) centred at the origin: 8 vertices, 12 triangles,
// counter-clockwise seen from outside.
Mesh box_mesh(double hx, double hy, double hz) {
  Mesh m;
  for (int i = 0; i < 8; ++i)
    m.vertices.emplace_back(static_cast<float>((i & 1) ? hx : -hx), static_cast<float>((i & 2) ? hy : -hy),
                            static_cast<float>((i & 4) ? hz : -hz));
  const int quads[6][4] = {{0, 2, 6, 4}, {1, 3, 7, 5}, {0, 1, 5, 4}, {2, 3, 7, 6}, {0, 1, 3, 2}, {4, 5, 7, 6}};
  for (const auto& q : quads)
    for (const auto& t : {std::array<int, 3>{q[0], q[1], q[2]}, std::array<int, 3>{q[0], q[2], q[3]}}) {
      const Eigen::Vector3f a = m.vertices[t[0]], b = m.vertices[t[1]], c = m.vertices[t[2]];
      const bool outward = (b - a).cross(c - a).dot((a + b + c) / 3.0f) > 0;
      m.triangles.push_back(outward ? std::array<uint32_t, 3>{uint32_t(t[0]), uint32_t(t[1]), uint32_t(t[2])}
                                    : std::array<uint32_t, 3>{uint32_t(t[0]), uint32_t(t[2]), uint32_t(t[1])});
    }
  return m;
}

Mesh cube_mesh(double h) { return box_mesh(h, h, h); }

using PoseFn = std::function<Eigen::Isometry3d(int frame, int piece)>;

SimTrack make_track(const std::vector<Mesh>& meshes, int frames, const PoseFn& pose) {
  SimTrack t;
  t.fps = 24;
  t.materials.push_back({});
  for (size_t p = 0; p < meshes.size(); ++p) {
    drb::physics::Piece piece;
    piece.id = static_cast<uint32_t>(p);
    piece.mesh = meshes[p];
    piece.mass = 1;
    t.pieces.push_back(piece);
  }
  t.poses = xt::xtensor<float, 3>::from_shape({size_t(frames), meshes.size(), 7});
  for (int f = 0; f < frames; ++f)
    for (size_t p = 0; p < meshes.size(); ++p) {
      const Eigen::Isometry3d iso = pose(f, static_cast<int>(p));
      const Eigen::Quaterniond q(iso.linear());
      const float v[7] = {float(q.x()), float(q.y()), float(q.z()), float(q.w()), float(iso.translation().x()),
                          float(iso.translation().y()), float(iso.translation().z())};
      for (int k = 0; k < 7; ++k) t.poses(f, p, k) = v[k];
    }
  return t;
}

Eigen::Isometry3d translation(double x, double y, double z) {
  Eigen::Isometry3d iso = Eigen::Isometry3d::Identity();
  iso.translation() = Vec3(x, y, z);
  return iso;
}

CameraKey key_at(double time, const Vec3& position, const Vec3& target, double focal = 36) {
  CameraKey k;
  k.time = time;
  k.position = position;
  k.target = target;
  k.focal_length_mm = focal;
  k.sensor_width_mm = 36;
  return k;
}

// On the z axis at z = 10 looking at the origin, 36 mm on a 36 mm sensor: fx = width.
Camera front_camera() {
  Camera c;
  c.keys.push_back(key_at(0, Vec3(0, 0, 10), Vec3(0, 0, 0)));
  return c;
}

RenderOptions small_options(int supersample = 1) {
  RenderOptions o;
  o.width = 160;
  o.height = 120;
  o.supersample = supersample;
  o.threads = 2;
  return o;
}

// The camera at `eye` looking down -Z with +Y up: camera coordinates of a world point and back.
Vec3 world_to_cam(const Vec3& eye, const Vec3& X) { return Vec3(X.x() - eye.x(), -(X.y() - eye.y()), eye.z() - X.z()); }
Vec3 cam_to_world(const Vec3& eye, const Vec3& c) { return Vec3(eye.x() + c.x(), eye.y() - c.y(), eye.z() - c.z()); }

// The world point seen at pixel (x, y)'s centre at the AOV's depth.
Vec3 unproject(const AOVs& a, int x, int y, const Vec3& eye, double fx) {
  const double z = a.depth(y, x);
  const Vec3 c((x + 0.5 - a.width / 2.0) / fx * z, (y + 0.5 - a.height / 2.0) / fx * z, z);
  return cam_to_world(eye, c);
}

Eigen::Vector2d project(const Vec3& eye, const Vec3& X, double fx, int width, int height) {
  const Vec3 c = world_to_cam(eye, X);
  return {fx * c.x() / c.z() + width / 2.0, fx * c.y() / c.z() + height / 2.0};
}

template <class T>
bool bitwise_equal(const T& a, const T& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), a.size() * sizeof(*a.data())) == 0;
}

}  // namespace

// ---- camera ---------------------------------------------------------------------------------

TEST_CASE("camera_at passes through every key, is C1 in time, clamps, and handles 1 and 2 keys") {
  Camera cam;
  const double times[] = {0.0, 1.0, 2.5, 3.0, 4.2};
  const Vec3 pos[] = {{0, 1, 10}, {3, 2, 8}, {4, 5, 2}, {1, 6, 0}, {-5, 3, -2}};
  const Vec3 tgt[] = {{0, 0, 0}, {1, 1, 0}, {0, 2, -1}, {-2, 2, 0}, {0, 0, 1}};
  // Given out of order: camera_at sorts by time.
  for (int i : {3, 0, 4, 1, 2}) {
    CameraKey k = key_at(times[i], pos[i], tgt[i], 20 + 10 * i);
    k.up = Vec3(0.1 * i, 1, 0);
    cam.keys.push_back(k);
  }
  for (int i = 0; i < 5; ++i) {
    const CameraState s = camera_at(cam, times[i]);
    CHECK((s.position - pos[i]).norm() < 1e-12);
    CHECK((s.target - tgt[i]).norm() < 1e-12);
    CHECK(s.focal_length_mm == doctest::Approx(20 + 10 * i));
  }
  // Clamped outside the keys.
  CHECK((camera_at(cam, -3).position - pos[0]).norm() == 0);
  CHECK((camera_at(cam, 99).position - pos[4]).norm() == 0);
  // Lens and up linear between keys.
  CHECK(camera_at(cam, 0.5).focal_length_mm == doctest::Approx(25));
  CHECK((camera_at(cam, 0.5).up - Vec3(0.05, 1, 0)).norm() < 1e-12);
  // C1: one-sided finite-difference velocities agree at every interior key; not a polyline.
  const double h = 1e-6;
  for (int i = 1; i < 4; ++i)
    for (auto member : {&CameraState::position, &CameraState::target}) {
      const Vec3 p = camera_at(cam, times[i]).*member;
      const Vec3 left = (p - camera_at(cam, times[i] - h).*member) / h;
      const Vec3 right = (camera_at(cam, times[i] + h).*member - p) / h;
      CAPTURE(i);
      CHECK((left - right).norm() < 1e-4 * (1 + left.norm()));
      CHECK(left.norm() > 0.1);
    }
  const Vec3 mid = camera_at(cam, 1.75).position;
  CHECK((mid - 0.5 * (pos[1] + pos[2])).norm() > 1e-3);  // curved, not linear, between the middle keys

  // One key: constant. Two keys: linear.
  Camera one;
  one.keys.push_back(key_at(1.0, Vec3(1, 2, 3), Vec3(0, 0, 0)));
  CHECK((camera_at(one, -10).position - Vec3(1, 2, 3)).norm() == 0);
  CHECK((camera_at(one, 10).position - Vec3(1, 2, 3)).norm() == 0);
  Camera two;
  two.keys.push_back(key_at(0.0, Vec3(0, 0, 10), Vec3(0, 0, 0)));
  two.keys.push_back(key_at(2.0, Vec3(4, 2, 6), Vec3(2, 0, 0)));
  for (double t : {0.3, 1.0, 1.7}) {
    CHECK((camera_at(two, t).position - Vec3(0, 0, 10) - t / 2 * Vec3(4, 2, -4)).norm() < 1e-12);
    CHECK((camera_at(two, t).target - t / 2 * Vec3(2, 0, 0)).norm() < 1e-12);
  }

  Camera empty;
  CHECK_THROWS_WITH_AS(camera_at(empty, 0), doctest::Contains("no keys"), drb::Error);
  CHECK_THROWS_WITH_AS(camera_at(two, std::nan("")), doctest::Contains("time must be finite"), drb::Error);
  Camera dup = two;
  dup.keys[1].time = 0.0;
  CHECK_THROWS_WITH_AS(camera_at(dup, 0), doctest::Contains("two keys at time 0"), drb::Error);
}

TEST_CASE("make_view: axes, intrinsics, and errors naming the bad value") {
  CameraState s;
  s.position = Vec3(0, 0, 0);
  s.target = Vec3(0, 0, -1);
  s.up = Vec3(0, 1, 0);
  s.focal_length_mm = 35;
  s.sensor_width_mm = 36;
  const View v = make_view(s, 100, 50);
  CHECK(v.fx == doctest::Approx(35.0 / 36.0 * 100));
  CHECK(v.fy == v.fx);
  CHECK(v.cx == 50);
  CHECK(v.cy == 25);
  CHECK((v.to_camera(Vec3(1, 0, 0)) - Vec3(1, 0, 0)).norm() < 1e-12);   // world +X: image right
  CHECK((v.to_camera(Vec3(0, 1, 0)) - Vec3(0, -1, 0)).norm() < 1e-12);  // world +Y: image up
  CHECK((v.to_camera(Vec3(0, 0, -3)) - Vec3(0, 0, 3)).norm() < 1e-12);  // forward
  CHECK((v.rotation * v.rotation.transpose() - Eigen::Matrix3d::Identity()).norm() < 1e-12);
  CHECK(v.rotation.determinant() == doctest::Approx(1));
  // A non-orthogonal up is re-orthonormalized; translation maps the position to the origin.
  s.position = Vec3(3, 4, 5);
  s.target = Vec3(-1, 2, 0);
  s.up = Vec3(0.2, 1, 0.3);
  const View w = make_view(s, 64, 64);
  CHECK(w.to_camera(s.position).norm() < 1e-12);
  CHECK((w.rotation * w.rotation.transpose() - Eigen::Matrix3d::Identity()).norm() < 1e-12);
  CHECK(w.to_camera(s.target).head<2>().norm() < 1e-12);
  CHECK(w.to_camera(s.position + s.up).y() < 0);  // up is up in the image (y down)

  CameraState bad = s;
  bad.target = bad.position;
  CHECK_THROWS_WITH_AS(make_view(bad, 64, 64), doctest::Contains("equals the position"), drb::Error);
  bad = s;
  bad.up = (s.target - s.position) * 2.0;
  CHECK_THROWS_WITH_AS(make_view(bad, 64, 64), doctest::Contains("parallel to the view direction"), drb::Error);
  bad.up = Vec3::Zero();
  CHECK_THROWS_WITH_AS(make_view(bad, 64, 64), doctest::Contains("up must be non-zero"), drb::Error);
  CHECK_THROWS_WITH_AS(make_view(s, 0, 64), doctest::Contains("width must be in [1, 16384], got 0"), drb::Error);
  CHECK_THROWS_WITH_AS(make_view(s, 64, -3), doctest::Contains("height must be in [1, 16384], got -3"), drb::Error);
  CHECK_THROWS_WITH_AS(make_view(s, 100000, 64), doctest::Contains("got 100000"), drb::Error);
  bad = s;
  bad.focal_length_mm = 0;
  CHECK_THROWS_WITH_AS(make_view(bad, 64, 64), doctest::Contains("focal length must be positive, got 0"), drb::Error);
  bad.focal_length_mm = -5;
  CHECK_THROWS_WITH_AS(make_view(bad, 64, 64), doctest::Contains("got -5"), drb::Error);
  bad = s;
  bad.sensor_width_mm = 0;
  CHECK_THROWS_WITH_AS(make_view(bad, 64, 64), doctest::Contains("sensor width must be positive"), drb::Error);
  bad = s;
  bad.position.x() = std::nan("");
  CHECK_THROWS_WITH_AS(make_view(bad, 64, 64), doctest::Contains("position must be finite"), drb::Error);
}

// ---- flow -----------------------------------------------------------------------------------

TEST_CASE("a cube translating parallel to the image plane: exact forward and backward flow") {
  const double dx = 0.3, dy = 0.2, h = 1.0;
  const SimTrack track =
      make_track({cube_mesh(h)}, 3, [&](int f, int) { return translation(dx * (f - 1), dy * (f - 1), 0); });
  const RenderOptions o = small_options();
  const double fx = o.width, z = 10 - h;
  const AOVs a = render_frame(track, front_camera(), 1, o);
  REQUIRE(a.width == o.width);
  REQUIRE(a.height == o.height);
  int covered = 0;
  for (int y = 0; y < o.height; ++y)
    for (int x = 0; x < o.width; ++x) {
      CAPTURE(x);
      CAPTURE(y);
      if (a.piece_id(y, x) == 0) {
        ++covered;
        CHECK(a.alpha(y, x) == 1.0f);
        CHECK(a.depth(y, x) == doctest::Approx(z).epsilon(1e-6));
        CHECK(std::abs(a.flow_forward(y, x, 0) - fx * dx / z) < 1e-3);
        CHECK(std::abs(a.flow_forward(y, x, 1) + fx * dy / z) < 1e-3);
        CHECK(std::abs(a.flow_backward(y, x, 0) + fx * dx / z) < 1e-3);
        CHECK(std::abs(a.flow_backward(y, x, 1) - fx * dy / z) < 1e-3);
        CHECK(a.normal(y, x, 2) == doctest::Approx(1));  // world +Z, towards the camera
        CHECK(a.occlusion(y, x) == 0.0f);
      } else {
        CHECK(a.piece_id(y, x) == -1);
        CHECK(std::isinf(a.depth(y, x)));
        CHECK(a.alpha(y, x) == 0.0f);
        CHECK(a.flow_forward(y, x, 0) == 0.0f);
        CHECK(a.flow_forward(y, x, 1) == 0.0f);
        CHECK(a.flow_backward(y, x, 0) == 0.0f);
        CHECK(a.flow_backward(y, x, 1) == 0.0f);
        CHECK(a.normal(y, x, 2) == 0.0f);
      }
    }
  // The front face spans fx * 2h / z = 35.6 pixels per side.
  CHECK(covered == doctest::Approx(std::pow(fx * 2 * h / z, 2)).epsilon(0.05));

  // No backward flow at the first frame, no forward flow at the last.
  const AOVs first = render_frame(track, front_camera(), 0, o), last = render_frame(track, front_camera(), 2, o);
  CHECK(xt::amax(xt::abs(first.flow_backward))() == 0.0f);
  CHECK(xt::amax(xt::abs(first.flow_forward))() > 1.0f);
  CHECK(xt::amax(xt::abs(last.flow_forward))() == 0.0f);
  CHECK(xt::amax(xt::abs(last.occlusion))() == 0.0f);
}

TEST_CASE("a cube rotating about an axis through its centre: flow equals the rotated, projected point") {
  const Vec3 centre(0.5, -0.3, 0.0);
  const Vec3 axis = Vec3(1, 2, 0.5).normalized();
  const double omega = 0.1;
  const SimTrack track = make_track({cube_mesh(1.2)}, 3, [&](int f, int) {
    Eigen::Isometry3d iso = Eigen::Isometry3d::Identity();
    iso.linear() = Eigen::AngleAxisd(0.4 + omega * f, axis).toRotationMatrix();
    iso.translation() = centre;
    return iso;
  });
  // Supersampled, depth and flow are still those of the pixel centre.
  for (int ss : {1, 2}) {
  CAPTURE(ss);
  const RenderOptions o = small_options(ss);
  const double fx = o.width;
  const Vec3 eye(0, 0, 10);
  const AOVs a = render_frame(track, front_camera(), 1, o);
  // The pose is stored in float: rotate by the stored poses' relative rotation.
  const Eigen::Isometry3d p0 = track.pose(0, 0), p1 = track.pose(1, 0), p2 = track.pose(2, 0);
  int checked = 0;
  for (int y = 0; y < o.height; ++y)
    for (int x = 0; x < o.width; ++x) {
      if (a.piece_id(y, x) != 0 || a.alpha(y, x) < 1) continue;
      const Vec3 X = unproject(a, x, y, eye, fx);
      const Vec3 Xn = p2 * (p1.inverse() * X), Xp = p0 * (p1.inverse() * X);
      // Closed form independent of the stored poses, to the float rounding of the poses.
      const Vec3 Xn_closed = centre + Eigen::AngleAxisd(omega, axis) * (X - centre);
      CHECK((Xn - Xn_closed).norm() < 1e-5);
      const Eigen::Vector2d pc(x + 0.5, y + 0.5);
      const Eigen::Vector2d fwd = project(eye, Xn, fx, o.width, o.height) - pc;
      const Eigen::Vector2d bwd = project(eye, Xp, fx, o.width, o.height) - pc;
      CAPTURE(x);
      CAPTURE(y);
      CHECK(std::abs(a.flow_forward(y, x, 0) - fwd.x()) < 1e-3);
      CHECK(std::abs(a.flow_forward(y, x, 1) - fwd.y()) < 1e-3);
      CHECK(std::abs(a.flow_backward(y, x, 0) - bwd.x()) < 1e-3);
      CHECK(std::abs(a.flow_backward(y, x, 1) - bwd.y()) < 1e-3);
      // The normal is unit, faces the camera, and is one of the cube's rotated face normals.
      const Vec3 n(a.normal(y, x, 0), a.normal(y, x, 1), a.normal(y, x, 2));
      CHECK(n.norm() == doctest::Approx(1).epsilon(1e-5));
      CHECK(n.dot(eye - X) > 0);
      CHECK((p1.linear().transpose() * n).cwiseAbs().maxCoeff() == doctest::Approx(1).epsilon(1e-5));
      ++checked;
    }
  CHECK(checked > 500);
  // The rotation shows at least three faces: flow is not uniform.
  CHECK(xt::amax(a.flow_forward)() - xt::amin(a.flow_forward)() > 2.0f);
  }
}

TEST_CASE("a moving camera (two keys) over a static piece: flow from the camera motion") {
  const SimTrack track = make_track({cube_mesh(1.0)}, 3, [&](int, int) {
    Eigen::Isometry3d iso = Eigen::Isometry3d::Identity();
    iso.linear() = Eigen::AngleAxisd(0.5, Vec3(0.3, 1, 0.2).normalized()).toRotationMatrix();
    return iso;
  });
  // Keys at frames 0 and 2 (fps 24): a pure translation (dolly in, truck right, pedestal up).
  const Vec3 e0(0, 0, 10), e2(0.8, 0.4, 9.0);
  Camera cam;
  cam.keys.push_back(key_at(0.0, e0, e0 - Vec3(0, 0, 10)));
  cam.keys.push_back(key_at(2.0 / 24, e2, e2 - Vec3(0, 0, 10)));
  const RenderOptions o = small_options();
  const double fx = o.width;
  const AOVs a = render_frame(track, cam, 1, o);
  const Vec3 e1 = 0.5 * (e0 + e2);
  int checked = 0;
  for (int y = 0; y < o.height; ++y)
    for (int x = 0; x < o.width; ++x) {
      if (a.piece_id(y, x) != 0) continue;
      const Vec3 X = unproject(a, x, y, e1, fx);
      const Eigen::Vector2d pc(x + 0.5, y + 0.5);
      const Eigen::Vector2d fwd = project(e2, X, fx, o.width, o.height) - pc;
      const Eigen::Vector2d bwd = project(e0, X, fx, o.width, o.height) - pc;
      CAPTURE(x);
      CAPTURE(y);
      CHECK(std::abs(a.flow_forward(y, x, 0) - fwd.x()) < 1e-3);
      CHECK(std::abs(a.flow_forward(y, x, 1) - fwd.y()) < 1e-3);
      CHECK(std::abs(a.flow_backward(y, x, 0) - bwd.x()) < 1e-3);
      CHECK(std::abs(a.flow_backward(y, x, 1) - bwd.y()) < 1e-3);
      ++checked;
    }
  CHECK(checked > 500);
}

// ---- depth, ids, coverage -------------------------------------------------------------------

TEST_CASE("a plane facing the camera: depth, id, alpha; supersampling gives fractional edges") {
  // Piece 0: a small cube up left; piece 1: a 6 x 4 m flat box whose front face is 9.95 m away.
  const SimTrack track = make_track({cube_mesh(0.3), box_mesh(3, 2, 0.05)}, 1, [](int, int p) {
    return p == 0 ? translation(-4.2, 2.6, 0) : translation(0, 0, 0);
  });
  const double z = 9.95;
  const double u0 = 80 - 160 * 3 / z, u1 = 80 + 160 * 3 / z, v0 = 60 - 160 * 2 / z, v1 = 60 + 160 * 2 / z;
  auto inside = [&](double u, double v, double m) { return u > u0 + m && u < u1 - m && v > v0 + m && v < v1 - m; };
  for (int ss : {1, 4}) {
    CAPTURE(ss);
    const RenderOptions o = small_options(ss);
    const AOVs a = render_frame(track, front_camera(), 0, o);
    int piece0 = 0, fractional = 0;
    double alpha_sum = 0;
    for (int y = 0; y < o.height; ++y)
      for (int x = 0; x < o.width; ++x) {
        const double u = x + 0.5, v = y + 0.5;
        if (a.piece_id(y, x) == 0) {
          ++piece0;
          continue;
        }
        alpha_sum += a.alpha(y, x);
        if (a.alpha(y, x) > 0 && a.alpha(y, x) < 1) ++fractional;
        if (inside(u, v, 0.5)) {
          CHECK(a.piece_id(y, x) == 1);
          CHECK(a.alpha(y, x) == 1.0f);
        } else if (!inside(u, v, -0.5)) {
          CHECK(a.piece_id(y, x) == -1);
          CHECK(a.alpha(y, x) == 0.0f);
        }
        if (ss == 1) CHECK((a.piece_id(y, x) == 1) == inside(u, v, 0));
        if (a.piece_id(y, x) == 1) CHECK(a.depth(y, x) == doctest::Approx(z).epsilon(1e-4));
      }
    CHECK(piece0 > 10);
    // Coverage integrates to the projected area (to a fraction of the perimeter).
    CHECK(std::abs(alpha_sum - (u1 - u0) * (v1 - v0)) < (ss == 1 ? 0.5 : 0.1) * 2 * ((u1 - u0) + (v1 - v0)));
    if (ss == 1) CHECK(fractional == 0);
    else CHECK(fractional > 2 * ((u1 - u0) + (v1 - v0)) * 0.9);
  }
}

TEST_CASE("shared edges are watertight: a tilted cube's silhouette interior is fully covered") {
  const SimTrack track = make_track({cube_mesh(1.5)}, 1, [](int, int) {
    Eigen::Isometry3d iso = Eigen::Isometry3d::Identity();
    iso.linear() = Eigen::AngleAxisd(0.7, Vec3(1, 1, 0).normalized()).toRotationMatrix();
    return iso;
  });
  const RenderOptions o = small_options(3);
  const AOVs a = render_frame(track, front_camera(), 0, o);
  // Every pixel whose 3 x 3 neighbourhood is covered has alpha exactly 1 (no cracks on the diagonals).
  int interior = 0;
  for (int y = 1; y + 1 < o.height; ++y)
    for (int x = 1; x + 1 < o.width; ++x) {
      bool all = true;
      for (int j = -1; j <= 1; ++j)
        for (int i = -1; i <= 1; ++i) all = all && a.alpha(y + j, x + i) > 0;
      if (!all) continue;
      ++interior;
      CHECK(a.alpha(y, x) == 1.0f);
    }
  CHECK(interior > 500);
}

TEST_CASE("top-left fill rule: pixel centres exactly on edges are covered once, no cracks") {
  // A square whose front face (z = 0, 10 m away: 16 px per m) has its outer edges on the pixel
  // centres of columns 59 and 100 and rows 39 and 80, and a diagonal through pixel centres.
  const double h = 1.25 + 1.0 / 32;
  const SimTrack track = make_track({box_mesh(h, h, 0.0625)}, 1, [](int, int) { return translation(0, 0, -0.0625); });
  const AOVs a = render_frame(track, front_camera(), 0, small_options());
  for (int y = 0; y < a.height; ++y)
    for (int x = 0; x < a.width; ++x) {
      CAPTURE(x);
      CAPTURE(y);
      const bool inside = x >= 59 && x <= 99 && y >= 39 && y <= 79;  // left and top edges in, right and bottom out
      CHECK(a.alpha(y, x) == (inside ? 1.0f : 0.0f));
      if (inside) CHECK(a.depth(y, x) == 10.0f);
    }
}

TEST_CASE("back faces: culled only on closed, outward pieces; inside-out, split or open meshes render the same") {
  const Mesh cube = cube_mesh(1.0);
  Mesh inside_out = cube;
  for (auto& t : inside_out.triangles) std::swap(t[1], t[2]);
  Mesh split;  // 36 vertices, one per triangle corner: closed once vertices are matched by position
  for (const auto& t : cube.triangles) {
    const auto n = static_cast<uint32_t>(split.vertices.size());
    for (uint32_t v : t) split.vertices.push_back(cube.vertices[v]);
    split.triangles.push_back({n, n + 1, n + 2});
  }
  const PoseFn pose = [](int f, int) {
    Eigen::Isometry3d iso = Eigen::Isometry3d::Identity();
    iso.linear() = Eigen::AngleAxisd(0.6 + 0.1 * f, Vec3(1, 1, 0.3).normalized()).toRotationMatrix();
    return iso;
  };
  const RenderOptions o = small_options(2);
  const AOVs ref = render_frame(make_track({cube}, 2, pose), front_camera(), 0, o);
  for (const Mesh& m : {inside_out, split}) {
    const AOVs a = render_frame(make_track({m}, 2, pose), front_camera(), 0, o);
    CHECK(bitwise_equal(a.piece_id, ref.piece_id));
    CHECK(bitwise_equal(a.alpha, ref.alpha));
    const auto finite = xt::isfinite(ref.depth);
    CHECK(xt::amax(xt::where(finite, xt::abs(a.depth - ref.depth) / ref.depth, 0.0f))() < 1e-6);
    CHECK(xt::amax(xt::abs(a.normal - ref.normal))() < 1e-6);
    CHECK(xt::amax(xt::abs(a.flow_forward - ref.flow_forward))() < 1e-4);
  }
  // An open quad (a single face) is seen from both sides, its normal towards the camera.
  Mesh quad = cube;
  quad.triangles.resize(2);  // the x = -h face
  const SimTrack left = make_track({quad}, 1, [](int, int) {
    Eigen::Isometry3d iso = Eigen::Isometry3d::Identity();
    iso.linear() = Eigen::AngleAxisd(std::numbers::pi / 2 - 0.3, Vec3::UnitY()).toRotationMatrix();
    return iso;
  });
  const SimTrack right = make_track({quad}, 1, [](int, int) {
    Eigen::Isometry3d iso = Eigen::Isometry3d::Identity();
    iso.linear() = Eigen::AngleAxisd(-std::numbers::pi / 2 + 0.3, Vec3::UnitY()).toRotationMatrix();
    return iso;
  });
  for (const SimTrack* t : {&left, &right}) {
    const AOVs a = render_frame(*t, front_camera(), 0, small_options());
    CHECK(xt::sum(a.alpha)() > 500);
    CHECK(a.normal(60, 80, 2) > 0.5f);
  }
}

// ---- occlusion ------------------------------------------------------------------------------

TEST_CASE("occlusion: a piece moving behind another is flagged, the visible part is not") {
  // Piece 0: a static 3 x 6 m panel at z = 2 (front face 7.95 m from the camera).
  // Piece 1: a cube (h = 0.8) at z = -2 moving +1 m in x per frame, from the left into the panel's shadow.
  const SimTrack track = make_track({box_mesh(1.5, 3, 0.05), cube_mesh(0.8)}, 2, [](int f, int p) {
    return p == 0 ? translation(0, 0, 2) : translation(-3.2 + f, 0, -2);
  });
  const RenderOptions o = small_options();
  const double fx = o.width;
  const std::vector<AOVs> seq = render_sequence(track, front_camera(), 0, 2, o);
  REQUIRE(seq.size() == 2);
  const AOVs& a = seq[0];
  const double panel_u0 = 80 - fx * 1.5 / 7.95;  // panel's left edge
  const double zc = 12 - 0.8;                    // cube's front face depth
  const double cube1_u0 = 80 + fx * (-2.2 - 0.8) / zc, cube1_v0 = 60 - fx * 0.8 / zc, cube1_v1 = 60 + fx * 0.8 / zc;
  int flagged = 0, clear = 0;
  for (int y = 0; y < o.height; ++y)
    for (int x = 0; x < o.width; ++x) {
      CAPTURE(x);
      CAPTURE(y);
      if (a.piece_id(y, x) == 0) {
        CHECK(a.occlusion(y, x) == 0.0f);  // the static panel stays visible
        continue;
      }
      if (a.piece_id(y, x) != 1) continue;
      const double tu = x + 0.5 + a.flow_forward(y, x, 0), tv = y + 0.5 + a.flow_forward(y, x, 1);
      if (tu > panel_u0 + 1.5) {
        CHECK(a.occlusion(y, x) == 1.0f);
        ++flagged;
      } else if (tu < panel_u0 - 1.5 && tu > cube1_u0 + 1.5 && tv > cube1_v0 + 1.5 && tv < cube1_v1 - 1.5) {
        CHECK(a.occlusion(y, x) == 0.0f);
        ++clear;
      }
    }
  CHECK(flagged > 50);
  CHECK(clear > 50);
  // The last frame has no forward motion: occlusion 0.
  CHECK(xt::amax(seq[1].occlusion)() == 0.0f);
  // render_frame alone cannot see the panel: nothing flagged (the cube stays in the frame).
  CHECK(xt::amax(render_frame(track, front_camera(), 0, o).occlusion)() == 0.0f);
  // A sub-range's occlusion equals the full range's (the next frame is rendered for it).
  const std::vector<AOVs> head = render_sequence(track, front_camera(), 0, 1, o);
  REQUIRE(head.size() == 1);
  CHECK(bitwise_equal(head[0].occlusion, a.occlusion));
  CHECK(render_sequence(track, front_camera(), 1, 1, o).empty());
}

TEST_CASE("occlusion: a piece leaving the frame is flagged, by render_frame and render_sequence") {
  const SimTrack track = make_track({cube_mesh(1.0)}, 2, [](int f, int) { return translation(3.5 + f, 0, 0); });
  const RenderOptions o = small_options();
  for (int mode = 0; mode < 2; ++mode) {
    CAPTURE(mode);
    const AOVs a = mode == 0 ? render_frame(track, front_camera(), 0, o)
                             : render_sequence(track, front_camera(), 0, 2, o)[0];
    int out = 0, in = 0;
    for (int y = 0; y < o.height; ++y)
      for (int x = 0; x < o.width; ++x) {
        if (a.piece_id(y, x) != 0) continue;
        const double tu = x + 0.5 + a.flow_forward(y, x, 0), tv = y + 0.5 + a.flow_forward(y, x, 1);
        CAPTURE(x);
        CAPTURE(y);
        if (tu >= o.width + 1e-3) {
          CHECK(a.occlusion(y, x) == 1.0f);
          ++out;
        } else if (tu < o.width - 1e-3 && mode == 0) {
          CHECK(a.occlusion(y, x) == 0.0f);
          ++in;
        } else if (tu < o.width - 2 && tv > 60 - 160 / 9.0 + 2 && tv < 60 + 160 / 9.0 - 2 && x + 0.5 > 80 + 160 * 2.5 / 9) {
          CHECK(a.occlusion(y, x) == 0.0f);  // front face, target on the moved front face
          ++in;
        }
      }
    CHECK(out > 100);
    CHECK(in > 100);
  }
}

TEST_CASE("behind the next camera: flow 0, occlusion 1") {
  // The camera flies through the cube: at frame 1 the cube is behind it.
  Camera cam;
  cam.keys.push_back(key_at(0.0, Vec3(0, 0, 10), Vec3(0, 0, 0)));
  cam.keys.push_back(key_at(1.0 / 24, Vec3(0, 0, -5), Vec3(0, 0, -15)));
  const SimTrack track = make_track({cube_mesh(1.0)}, 2, [](int, int) { return translation(0, 0, 0); });
  const AOVs a = render_frame(track, cam, 0, small_options());
  int covered = 0;
  for (int y = 0; y < a.height; ++y)
    for (int x = 0; x < a.width; ++x)
      if (a.piece_id(y, x) == 0) {
        ++covered;
        CHECK(a.occlusion(y, x) == 1.0f);
        CHECK(a.flow_forward(y, x, 0) == 0.0f);
        CHECK(a.flow_forward(y, x, 1) == 0.0f);
      }
  CHECK(covered > 100);
}

TEST_CASE("near-plane clipping splits triangles instead of dropping them") {
  // A floor-like slab passing under and behind the camera: it must still cover the lower image.
  const SimTrack track = make_track({box_mesh(20, 0.05, 20)}, 1, [](int, int) { return translation(0, -1, 10); });
  const AOVs a = render_frame(track, front_camera(), 0, small_options());
  // The bottom row looks down at the slab's top (y = -0.95) just in front of the camera.
  for (int x = 0; x < a.width; ++x) {
    CHECK(a.piece_id(a.height - 1, x) == 0);
    CHECK(a.alpha(a.height - 1, x) == 1.0f);
  }
  // The slab's top is 0.95 m below the camera: depth = 0.95 fx / (v - cy).
  const double v = a.height - 0.5;
  CHECK(a.depth(a.height - 1, a.width / 2) == doctest::Approx(0.95 * 160 / (v - 60)).epsilon(1e-4));
  CHECK(a.piece_id(0, 0) == -1);  // sky above
}

// ---- dust, shading ---------------------------------------------------------------------------

TEST_CASE("dust: depth-tested discs, opacity in [0, 1]; proxy shading is finite and has a sky") {
  SimTrack track = make_track({box_mesh(3, 2, 0.05)}, 1, [](int, int) { return translation(0, 0, 0); });
  // In front of the panel (left), behind it (right), and off the panel against the sky (up).
  track.dust.push_back(xt::xtensor<float, 2>{{-1.5f, 0, 2, 0.3f, 0.8f}, {1.5f, 0, -2, 0.3f, 0.8f},
                                             {0, 3.5f, 0, 0.2f, 0.5f}, {0, 3.5f, 0, 0.2f, 0.5f}});
  RenderOptions o = small_options();
  const AOVs a = render_frame(track, front_camera(), 0, o);
  auto at = [&](double wx, double wy, double wz) {
    const Eigen::Vector2d p = project(Vec3(0, 0, 10), Vec3(wx, wy, wz), o.width, o.width, o.height);
    return a.dust(static_cast<int>(p.y()), static_cast<int>(p.x()));
  };
  CHECK(at(-1.5, 0, 2) > 0.7f);
  CHECK(at(-1.5, 0, 2) <= 0.8f);
  CHECK(at(1.5, 0, -2) == 0.0f);                              // hidden by the panel
  CHECK(at(0, 3.5, 0) == doctest::Approx(1 - 0.5 * 0.5).epsilon(0.02));  // two overlapping particles
  CHECK(xt::amin(a.dust)() >= 0.0f);
  CHECK(xt::amax(a.dust)() <= 1.0f);
  o.dust = false;
  CHECK(xt::amax(render_frame(track, front_camera(), 0, o).dust)() == 0.0f);

  CHECK(xt::all(xt::isfinite(a.rgb)));
  CHECK(xt::amin(a.rgb)() >= 0.0f);
  CHECK(xt::amax(a.rgb)() < 2.0f);
  CHECK(a.rgb(0, 0, 2) > a.rgb(0, 0, 0));  // sky: blue above the horizon
  const float top = a.rgb(0, 0, 0), bottom = a.rgb(a.height - 1, 0, 0);
  CHECK(top != bottom);  // ground below the horizon
  // Looks differ: the same panel in brick is redder than in concrete.
  track.materials[0].look = "brick";
  const AOVs b = render_frame(track, front_camera(), 0, o);
  CHECK(b.rgb(60, 80, 0) / b.rgb(60, 80, 2) > a.rgb(60, 80, 0) / a.rgb(60, 80, 2) + 0.3f);
  // A flat concrete face is uniform; brick shows its courses.
  const auto a_panel = xt::view(a.rgb, xt::range(40, 80), xt::range(50, 110), 0);
  const auto b_panel = xt::view(b.rgb, xt::range(40, 80), xt::range(50, 110), 0);
  CHECK(xt::amax(a_panel)() - xt::amin(a_panel)() < 1e-6f);
  CHECK(xt::amax(b_panel)() - xt::amin(b_panel)() > 0.02f);
}

TEST_CASE("aov_channel_names") {
  const std::vector<std::string> names = aov_channel_names();
  REQUIRE(names.size() == 15);
  CHECK(names.front() == "Z");
  CHECK(names[5] == "A");
  CHECK(names.back() == "occlusion");
}

// ---- determinism ----------------------------------------------------------------------------

TEST_CASE("thread-count independence: 1, 2 and 3 threads give bitwise equal AOVs") {
  SimTrack track = make_track({cube_mesh(1.2), box_mesh(4, 3, 0.1)}, 3, [](int f, int p) {
    Eigen::Isometry3d iso = Eigen::Isometry3d::Identity();
    if (p == 0) {
      iso.linear() = Eigen::AngleAxisd(0.3 + 0.2 * f, Vec3(1, 2, 0.5).normalized()).toRotationMatrix();
      iso.translation() = Vec3(0.4 * f, 0.2, 2);
    } else {
      iso.translation() = Vec3(0, 0, -1);
    }
    return iso;
  });
  track.materials.push_back({});
  track.materials[1].look = "brick";
  track.pieces[1].material = 1;
  for (int f = 0; f < 3; ++f) {
    xt::xtensor<float, 2> d = xt::xtensor<float, 2>::from_shape({200, 5});
    for (size_t i = 0; i < 200; ++i) {
      d(i, 0) = std::sin(i * 0.7f) * 4;
      d(i, 1) = std::cos(i * 1.3f) * 3;
      d(i, 2) = std::sin(i * 0.31f) * 3;
      d(i, 3) = 0.05f + 0.2f * (i % 7) / 7.0f;
      d(i, 4) = 0.3f;
    }
    track.dust.push_back(d);
  }
  RenderOptions o;
  o.width = 200;
  o.height = 150;
  o.supersample = 3;
  std::vector<std::vector<AOVs>> runs;
  for (int t : {1, 2, 3}) {
    o.threads = t;
    runs.push_back(render_sequence(track, front_camera(), 0, 3, o));
  }
  for (size_t r = 1; r < runs.size(); ++r)
    for (int f = 0; f < 3; ++f) {
      const AOVs &x = runs[0][f], &y = runs[r][f];
      CAPTURE(r);
      CAPTURE(f);
      CHECK(bitwise_equal(x.depth, y.depth));
      CHECK(bitwise_equal(x.piece_id, y.piece_id));
      CHECK(bitwise_equal(x.normal, y.normal));
      CHECK(bitwise_equal(x.alpha, y.alpha));
      CHECK(bitwise_equal(x.rgb, y.rgb));
      CHECK(bitwise_equal(x.dust, y.dust));
      CHECK(bitwise_equal(x.flow_forward, y.flow_forward));
      CHECK(bitwise_equal(x.flow_backward, y.flow_backward));
      CHECK(bitwise_equal(x.occlusion, y.occlusion));
    }
  CHECK(xt::amax(runs[0][0].dust)() > 0.1f);
  CHECK(xt::amax(runs[0][0].occlusion)() == 1.0f);
}

// ---- bad input ------------------------------------------------------------------------------

TEST_CASE("bad input: each a drb::Error with a clear message") {
  const SimTrack good = make_track({cube_mesh(1)}, 3, [](int, int) { return translation(0, 0, 0); });
  const Camera cam = front_camera();
  RenderOptions o = small_options();

  SimTrack no_pieces;
  no_pieces.poses = xt::xtensor<float, 3>::from_shape({3, 0, 7});
  CHECK_THROWS_WITH_AS(render_frame(no_pieces, cam, 0, o), doctest::Contains("has no pieces"), drb::Error);
  SimTrack no_frames = good;
  no_frames.poses = xt::xtensor<float, 3>::from_shape({0, 1, 7});
  CHECK_THROWS_WITH_AS(render_frame(no_frames, cam, 0, o), doctest::Contains("has no frames"), drb::Error);
  CHECK_THROWS_WITH_AS(render_sequence(no_frames, cam, 0, 0, o), doctest::Contains("has no frames"), drb::Error);

  o.width = 0;
  CHECK_THROWS_WITH_AS(render_frame(good, cam, 0, o), doctest::Contains("width must be in [1, 16384], got 0"),
                       drb::Error);
  o.width = 100000;
  CHECK_THROWS_WITH_AS(render_frame(good, cam, 0, o), doctest::Contains("got 100000"), drb::Error);
  o = small_options();
  o.height = 0;
  CHECK_THROWS_WITH_AS(render_sequence(good, cam, 0, 1, o), doctest::Contains("height must be in [1, 16384], got 0"),
                       drb::Error);
  o = small_options();
  o.supersample = 9;
  CHECK_THROWS_WITH_AS(render_frame(good, cam, 0, o), doctest::Contains("supersample must be in [1, 8], got 9"),
                       drb::Error);
  o.supersample = 0;
  CHECK_THROWS_WITH_AS(render_frame(good, cam, 0, o), doctest::Contains("got 0"), drb::Error);
  o = small_options();
  o.threads = -1;
  CHECK_THROWS_WITH_AS(render_frame(good, cam, 0, o), doctest::Contains("threads must be >= 0"), drb::Error);
  o = small_options();

  Camera degenerate = cam;
  degenerate.keys[0].target = degenerate.keys[0].position;
  CHECK_THROWS_WITH_AS(render_frame(good, degenerate, 0, o), doctest::Contains("equals the position"), drb::Error);
  degenerate = cam;
  degenerate.keys[0].up = Vec3(0, 0, 1);
  CHECK_THROWS_WITH_AS(render_frame(good, degenerate, 0, o), doctest::Contains("parallel"), drb::Error);
  degenerate.keys.clear();
  CHECK_THROWS_WITH_AS(render_frame(good, degenerate, 0, o), doctest::Contains("has no keys"), drb::Error);

  CHECK_THROWS_WITH_AS(render_frame(good, cam, 3, o), doctest::Contains("frame 3 outside [0, 3)"), drb::Error);
  CHECK_THROWS_WITH_AS(render_frame(good, cam, -1, o), doctest::Contains("frame -1 outside [0, 3)"), drb::Error);
  CHECK_THROWS_WITH_AS(render_sequence(good, cam, 1, 4, o), doctest::Contains("frames [1, 4)"), drb::Error);
  CHECK_THROWS_WITH_AS(render_sequence(good, cam, 2, 1, o), doctest::Contains("frames [2, 1)"), drb::Error);

  SimTrack nan_pose = good;
  nan_pose.poses(1, 0, 5) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(render_frame(nan_pose, cam, 0, o), doctest::Contains("pose values must be finite"),
                       drb::Error);
  CHECK_THROWS_WITH_AS(render_sequence(nan_pose, cam, 0, 3, o), doctest::Contains("pose values must be finite"),
                       drb::Error);

  SimTrack bad_dust = good;
  bad_dust.dust.assign(3, xt::xtensor<float, 2>::from_shape({2, 4}));
  CHECK_THROWS_WITH_AS(render_frame(bad_dust, cam, 0, o), doctest::Contains("dust arrays must be [N, 5]"), drb::Error);
}
